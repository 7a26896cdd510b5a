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

    /// Where the integers and floats lie.
    private let storage: PackedBlockStorage

    /// The integers' words, then the floats (the keys' mean and the values' scales).
    private static func sizes(blockK: Int, headDim: Int) -> (words: Int, floats: Int) {
        let pairs = (headDim + 1) / 2
        return (blockK * pairs + (blockK + 1) / 2 * headDim, 2 * pairs + headDim)
    }

    /// Bytes of a block's storage for up to `blockK` rows of `headDim`: its integers and its floats, a
    /// multiple of 64.
    public static func storageBytes(blockK: Int, headDim: Int) -> Int {
        let (words, floats) = sizes(blockK: blockK, headDim: headDim)
        return (4 * (words + floats) + 63) / 64 * 64
    }

    /// A block of up to `blockK` rows of `headDim` in `storage` (`storageBytes`, the keys on a cache line, and
    /// the values too where the keys fill whole lines: the kernels load rows of up to 64 bytes).
    public init(blockK: Int, headDim: Int, storage: PackedBlockStorage) {
        precondition(blockK > 0 && headDim > 0, "QuantizedKeyValueBlock: empty shape")
        (self.blockK, self.headDim, self.storage) = (blockK, headDim, storage)
        let (words, floats) = Self.sizes(blockK: blockK, headDim: headDim), pairs = (headDim + 1) / 2
        keys = storage.base.bindMemory(to: Int32.self, capacity: words)
        values = keys + blockK * pairs
        keyMean = (storage.base + 4 * words).bindMemory(to: Float.self, capacity: floats)
        valueScale = keyMean + 2 * pairs
    }

    deinit { storage.release() }

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
