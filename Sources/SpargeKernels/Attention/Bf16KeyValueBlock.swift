import CSpargeKernels

/// One key/value block in bf16, laid out as the bf16 tile kernels take it (CSpargeKernels.h,
/// `sparge_bf16_*_fn`): K row-major and V transposed, both padded with zeros to a multiple of 32 keys.
///
/// A driver fills one per key block and every tile that visits the block reads it (the conversion is done
/// once per block and `attend` call, not once per visit).
public final class Bf16KeyValueBlock: PackedKeyValueBlock, @unchecked Sendable {
    /// Rows it can hold, and the head dimension.
    public let blockK: Int
    public let headDim: Int
    /// Rows of the block now held (`fill`). Read at every visit, written only by `fill`, before any tile
    /// reads the block: no run-time exclusivity check.
    @exclusivity(unchecked) public private(set) var rows = 0
    /// `[Kp][D]` bf16, Kp = `rows` rounded up to 32.
    let keys: UnsafeMutablePointer<UInt16>
    /// `[D][Kp]` bf16.
    let valuesT: UnsafeMutablePointer<UInt16>
    /// Where `keys` and `valuesT` lie.
    private let storage: PackedBlockStorage

    /// Bytes of a block's storage for up to `blockK` rows of `headDim`: K and Vᵀ padded to 32 keys, a multiple
    /// of 64.
    public static func storageBytes(blockK: Int, headDim: Int) -> Int {
        (4 * sparge_bf16_padded_keys(blockK) * headDim + 63) / 64 * 64
    }

    /// A block of up to `blockK` rows of `headDim` in `storage` (`storageBytes`, on a cache line: the tiles load
    /// rows of 64 bytes, and D a multiple of 32 keeps every row of K and Vᵀ on its own lines).
    public init(blockK: Int, headDim: Int, storage: PackedBlockStorage) {
        precondition(blockK > 0 && headDim > 0, "Bf16KeyValueBlock: empty shape")
        (self.blockK, self.headDim, self.storage) = (blockK, headDim, storage)
        let padded = sparge_bf16_padded_keys(blockK) * headDim
        keys = storage.base.bindMemory(to: UInt16.self, capacity: 2 * padded)
        valuesT = keys + padded
    }

    deinit { storage.release() }

    /// Rounds `rows` (≤ blockK) rows of keys and values (`rows × D`, row-major fp32) to bf16 and lays them out.
    public func fill(keys k: UnsafePointer<Float>, values v: UnsafePointer<Float>, rows: Int) {
        precondition(rows > 0 && rows <= blockK, "Bf16KeyValueBlock: \(rows) rows in a block of \(blockK)")
        self.rows = rows
        sparge_pack_bf16_block(k, v, rows, headDim, keys, valuesT)
    }

    /// Lays out `rows` (≤ blockK) rows already stored in bf16 (the same bits as `fill` on their widened
    /// values, without the widening); false for any other format.
    public func fill(stored k: UnsafeRawPointer, values v: UnsafeRawPointer, rows: Int, format: StorageFormat) -> Bool {
        guard format == .bf16 else { return false }
        precondition(rows > 0 && rows <= blockK, "Bf16KeyValueBlock: \(rows) rows in a block of \(blockK)")
        self.rows = rows
        sparge_pack_bf16_block_stored(k.assumingMemoryBound(to: UInt16.self), v.assumingMemoryBound(to: UInt16.self),
                                      rows, headDim, keys, valuesT)
        return true
    }

    public var keyOperands: UnsafeRawPointer { UnsafeRawPointer(keys) }
    public var valueOperands: UnsafeRawPointer { UnsafeRawPointer(valuesT) }
    public var operandBytes: Int { rows * headDim * 2 }
}
