import CSpargeKernels

/// One key/value block in `AttentionPrecision.int8`'s integers, laid out as the int8 micro-kernels take it
/// (CSpargeKernels' tile_kernels_int8.h): keys smoothed by the block's mean and quantized with one scale,
/// packed as int16 pairs along D; values quantized per dimension, packed as pairs of rows.
///
/// A driver fills one per key block and every tile that visits the block reads it (the quantization is
/// done once per block, not once per visit).
public final class QuantizedKeyValueBlock: PackedKeyValueBlock, @unchecked Sendable {
    /// Rows it can hold, and the head dimension.
    public let blockK: Int
    public let headDim: Int
    /// Rows of the block now held (`fill`). Read at every visit, written only by `fill`, before any tile
    /// reads the block: no run-time exclusivity check.
    @exclusivity(unchecked) public private(set) var rows = 0
    /// `[rows][⌈D/2⌉]` pairs of int8 values.
    let keys: UnsafeMutablePointer<Int32>
    /// `[⌈rows/2⌉][D]` pairs of rows, |v| ≤ 2047.
    let values: UnsafeMutablePointer<Int32>
    /// The keys' column mean (`2·⌈D/2⌉` floats, 0-padded), then the values' scales (D floats).
    let keyMean: UnsafeMutablePointer<Float>
    let valueScale: UnsafeMutablePointer<Float>
    /// The keys' one scale.
    public private(set) var keyScale: Float = 0

    var pairs: Int { (headDim + 1) / 2 }

    public var keyOperands: UnsafeRawPointer { UnsafeRawPointer(keys) }
    public var valueOperands: UnsafeRawPointer { UnsafeRawPointer(values) }
    /// int16 values: 2 bytes each.
    public var operandBytes: Int { rows * headDim * 2 }

    /// Storage for blocks of up to `blockK` rows of `headDim`, the keys on a cache line (and the values too
    /// where the keys fill whole lines): the kernels load rows of up to 64 bytes.
    public init(blockK: Int, headDim: Int) {
        precondition(blockK > 0 && headDim > 0, "QuantizedKeyValueBlock: empty shape")
        (self.blockK, self.headDim) = (blockK, headDim)
        let pairs = (headDim + 1) / 2, words = blockK * pairs + (blockK + 1) / 2 * headDim
        keys = UnsafeMutableRawPointer.allocate(byteCount: 4 * words, alignment: 64).bindMemory(to: Int32.self, capacity: words)
        values = keys + blockK * pairs
        keyMean = .allocate(capacity: 2 * pairs + headDim)
        valueScale = keyMean + 2 * pairs
    }

    deinit {
        UnsafeMutableRawPointer(keys).deallocate()
        keyMean.deallocate()
    }

    /// Quantizes `rows` (≤ blockK) rows of keys and values (`rows × D`, row-major fp32).
    public func fill(keys k: UnsafePointer<Float>, values v: UnsafePointer<Float>, rows: Int) {
        precondition(rows > 0 && rows <= blockK, "QuantizedKeyValueBlock: \(rows) rows in a block of \(blockK)")
        self.rows = rows
        var scale: Float = 0
        sparge_quantize_block(k, v, rows, headDim, keys, keyMean, &scale, values, valueScale)
        keyScale = scale
    }

    /// Writes the values the integers stand for (`rows × D` each): what the scalar twin computes with.
    func dequantize(keys k: UnsafeMutablePointer<Float>, values v: UnsafeMutablePointer<Float>) {
        let d = headDim, pairs = pairs
        for r in 0..<rows {
            for i in 0..<d {
                let word = keys[r * pairs + i / 2]
                k[r * d + i] = keyMean[i] + keyScale * Float(Int16(truncatingIfNeeded: word >> (16 * (i % 2))))
                let pair = values[r / 2 * d + i]
                v[r * d + i] = valueScale[i] * Float(Int16(truncatingIfNeeded: pair >> (16 * (r % 2))))
            }
        }
    }
}
