import Dispatch

/// A key/value block converted once per `attend` call into the operands of a tile's products (int8's
/// integers, the bf16 tiles' layout), which every tile that visits the block then reads.
public protocol PackedKeyValueBlock: AnyObject, Sendable {
    /// Storage for blocks of up to `blockK` rows of `headDim`.
    init(blockK: Int, headDim: Int)
    /// Converts `rows` (≤ blockK) rows of keys and values (`rows × D`, row-major fp32).
    func fill(keys: UnsafePointer<Float>, values: UnsafePointer<Float>, rows: Int)
    /// Converts `rows` rows stored in `format` straight from that format when the block knows how (the same
    /// result as `fill` on the widened rows), and says whether it did.
    func fill(stored keys: UnsafeRawPointer, values: UnsafeRawPointer, rows: Int, format: StorageFormat) -> Bool
    /// Rows held.
    var rows: Int { get }
    /// Where its converted keys and values start, and the bytes of each (what a visit reads first).
    var keyOperands: UnsafeRawPointer { get }
    var valueOperands: UnsafeRawPointer { get }
    var operandBytes: Int { get }
}

extension PackedKeyValueBlock {
    /// By default blocks convert from fp32 only.
    public func fill(stored keys: UnsafeRawPointer, values: UnsafeRawPointer, rows: Int,
                     format: StorageFormat) -> Bool {
        false
    }
}

/// The blocks of a `KeyValueBlockTable` converted to one kind of `PackedKeyValueBlock`, each once per
/// `attend` call (and not once per query block that visits it), spread over threads.
///
/// The driver looks up each block a query block visits twice (for the visit, and ahead of it), on every worker
/// thread at once, so a lookup touches no shared state: the table is not generic (a generic table's lookup from non-generic code
/// instantiated its metadata every time, ~6% of the driver's time around the kernels, `perf record`), and it
/// hands out blocks uncounted (`Unmanaged`; it owns them while it lives), since every worker of a kv head
/// counting references to the same blocks would write their cache lines from every core.
final class PackedBlockTable: @unchecked Sendable {
    /// The blocks, owned.
    private let owned: [any PackedKeyValueBlock]
    /// Per (kv head, key block), as the table's `block(kvHead:block:)`: the block uncounted, or nil where the
    /// table has none.
    private let blocks: [Unmanaged<AnyObject>?]
    let keyBlocks: Int

    /// The blocks of `table` converted to `Block`s on `threads` threads.
    init<Block: PackedKeyValueBlock>(_ table: KeyValueBlockTable, as _: Block.Type, headDim: Int, threads: Int) {
        keyBlocks = table.keyBlocks
        let present = (0..<(table.kvHeads * table.keyBlocks)).filter {
            table.block(kvHead: $0 / table.keyBlocks, block: $0 % table.keyBlocks) != nil
        }
        let made = present.map { _ in Block(blockK: table.blockK, headDim: headDim) }
        let next = WorkCounter()
        DispatchQueue.concurrentPerform(iterations: max(1, min(threads, present.count))) { _ in
            // Blocks stored in 16 bits are packed from their words where the block can, else widened to fp32
            // first (exact), in a buffer made at the first block that needs it.
            var buffer: UnsafeMutablePointer<Float>?
            defer { buffer?.deallocate() }
            while true {
                let i = next.claim()
                if i >= present.count { break }
                let (g, j) = (present[i] / table.keyBlocks, present[i] % table.keyBlocks)
                let stored = table.block(kvHead: g, block: j)!, rows = table.rows(of: j)
                if table.format == .f32 {
                    made[i].fill(keys: stored.keys.assumingMemoryBound(to: Float.self),
                                 values: stored.values.assumingMemoryBound(to: Float.self), rows: rows)
                    continue
                }
                if made[i].fill(stored: stored.keys, values: stored.values, rows: rows, format: table.format) {
                    continue
                }
                if buffer == nil { buffer = .allocate(capacity: 2 * table.blockK * headDim) }
                let widened = buffer!
                table.format.widen(stored.keys, count: rows * headDim, to: widened)
                table.format.widen(stored.values, count: rows * headDim, to: widened + rows * headDim)
                made[i].fill(keys: widened, values: widened + rows * headDim, rows: rows)
            }
        }
        var blocks = [Unmanaged<AnyObject>?](repeating: nil, count: table.kvHeads * table.keyBlocks)
        for (i, index) in present.enumerated() { blocks[index] = Unmanaged.passUnretained(made[i] as AnyObject) }
        (owned, self.blocks) = (made, blocks)
    }

    /// The converted block `(kvHead, block)`, uncounted (valid while the table lives), or nil when the table did
    /// not hold it.
    func block(kvHead: Int, block: Int) -> Unmanaged<AnyObject>? { blocks[kvHead * keyBlocks + block] }
}
