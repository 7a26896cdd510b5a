/// Where the key/value blocks available right now lie in memory, per (kv head, key block), and the
/// storage format they are in.
///
/// The single-process driver fills it once with every block of the K/V tensors; a ring step fills it with
/// the blocks of the payload it holds. The pointers must stay valid while a driver reads the table.
public struct KeyValueBlockTable {
    /// Key/value heads.
    public let kvHeads: Int
    /// Key blocks in the sequence.
    public let keyBlocks: Int
    /// Rows per key block.
    public let blockK: Int
    /// Tokens in the sequence (the last block may be partial).
    public let seqLen: Int
    /// The element type of every block in the table.
    public let format: StorageFormat
    @usableFromInline var keys: [UnsafeRawPointer?]
    @usableFromInline var values: [UnsafeRawPointer?]

    /// An empty table of blocks stored as `format`.
    public init(kvHeads: Int, keyBlocks: Int, blockK: Int, seqLen: Int, format: StorageFormat = .f32) {
        self.kvHeads = kvHeads
        self.keyBlocks = keyBlocks
        self.blockK = blockK
        self.seqLen = seqLen
        self.format = format
        keys = Array(repeating: nil, count: kvHeads * keyBlocks)
        values = keys
    }

    /// Makes block `block` of `kvHead` available: `rows(of: block) × D` keys and values, row-major, in the
    /// table's format.
    public mutating func set(kvHead: Int, block: Int, keys k: UnsafeRawPointer, values v: UnsafeRawPointer) {
        keys[kvHead * keyBlocks + block] = k
        values[kvHead * keyBlocks + block] = v
    }

    /// Removes every block.
    public mutating func removeAll() {
        for i in keys.indices { keys[i] = nil; values[i] = nil }
    }

    /// Whether every block of every kv head is available (one process's whole K/V).
    public var holdsEveryBlock: Bool { !keys.contains(nil) }

    /// Rows of key block `block`: `blockK`, or fewer for the last block.
    @inlinable public func rows(of block: Int) -> Int { min(blockK, seqLen - block * blockK) }

    /// The keys and values of `(kvHead, block)`, or nil when the block is not available.
    @inlinable public func block(kvHead: Int, block: Int) -> (keys: UnsafeRawPointer, values: UnsafeRawPointer)? {
        guard let k = keys[kvHead * keyBlocks + block] else { return nil }
        return (k, values[kvHead * keyBlocks + block]!)
    }

    /// Every block of whole K/V tensors `[kvHeads, seqLen, D]` at `k`, `v` (in the table's format).
    public mutating func setAll(k: UnsafeRawPointer, v: UnsafeRawPointer, dim: Int) {
        setBlocks(tokens: 0..<seqLen, keys: k, values: v, headStride: seqLen * dim, dim: dim)
    }

    /// The blocks of global tokens `tokens` (block-aligned; the end may be the sequence's), held as rows of
    /// `[kvHeads, …, D]` tensors whose row for token `tokens.lowerBound` of kv head 0 is at `keys`, `values`,
    /// and whose heads lie `headStride` elements apart.
    public mutating func setBlocks(tokens: Range<Int>, keys k: UnsafeRawPointer, values v: UnsafeRawPointer,
                                   headStride: Int, dim: Int) {
        precondition(tokens.lowerBound % blockK == 0, "setBlocks: tokens \(tokens) do not start a key block")
        let size = format.byteSize
        for g in 0..<kvHeads {
            for j in (tokens.lowerBound / blockK)..<((tokens.upperBound + blockK - 1) / blockK) {
                let offset = (g * headStride + (j * blockK - tokens.lowerBound) * dim) * size
                set(kvHead: g, block: j, keys: k + offset, values: v + offset)
            }
        }
    }
}
