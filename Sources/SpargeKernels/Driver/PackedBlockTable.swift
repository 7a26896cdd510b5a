import Dispatch

/// A key/value block converted once per `attend` call into the operands of a tile's products (int8's
/// integers, the bf16 tiles' layout), which every tile that visits the block then reads.
public protocol PackedKeyValueBlock: AnyObject, Sendable {
    /// Storage for blocks of up to `blockK` rows of `headDim`.
    init(blockK: Int, headDim: Int)
    /// Converts `rows` (≤ blockK) rows of keys and values (`rows × D`, row-major fp32).
    func fill(keys: UnsafePointer<Float>, values: UnsafePointer<Float>, rows: Int)
    /// Rows held.
    var rows: Int { get }
    /// Where its converted keys and values start, and the bytes of each (what a visit reads first).
    var keyOperands: UnsafeRawPointer { get }
    var valueOperands: UnsafeRawPointer { get }
    var operandBytes: Int { get }
}

/// The blocks of a `KeyValueBlockTable` converted to `Block`s, each once per `attend` call (and not once per
/// query block that visits it), spread over threads.
final class PackedBlockTable<Block: PackedKeyValueBlock>: @unchecked Sendable {
    /// Per (kv head, key block), as the table's `block(kvHead:block:)`: nil where the table has none.
    private var blocks: [Block?]
    let keyBlocks: Int

    init(_ table: KeyValueBlockTable, headDim: Int, threads: Int) {
        keyBlocks = table.keyBlocks
        let present = (0..<(table.kvHeads * table.keyBlocks)).filter {
            table.block(kvHead: $0 / table.keyBlocks, block: $0 % table.keyBlocks) != nil
        }
        let made = present.map { _ in Block(blockK: table.blockK, headDim: headDim) }
        let next = WorkCounter()
        DispatchQueue.concurrentPerform(iterations: max(1, min(threads, present.count))) { _ in
            // Blocks stored in 16 bits are widened to fp32 first (exact).
            let widened = table.format == .f32 ? nil : UnsafeMutablePointer<Float>.allocate(capacity: 2 * table.blockK * headDim)
            defer { widened?.deallocate() }
            while true {
                let i = next.claim()
                if i >= present.count { break }
                let (g, j) = (present[i] / table.keyBlocks, present[i] % table.keyBlocks)
                let stored = table.block(kvHead: g, block: j)!, rows = table.rows(of: j)
                if let widened {
                    table.format.widen(stored.keys, count: rows * headDim, to: widened)
                    table.format.widen(stored.values, count: rows * headDim, to: widened + rows * headDim)
                    made[i].fill(keys: widened, values: widened + rows * headDim, rows: rows)
                } else {
                    made[i].fill(keys: stored.keys.assumingMemoryBound(to: Float.self),
                                 values: stored.values.assumingMemoryBound(to: Float.self), rows: rows)
                }
            }
        }
        blocks = Array(repeating: nil, count: table.kvHeads * table.keyBlocks)
        for (i, index) in present.enumerated() { blocks[index] = made[i] }
    }

    /// The converted block `(kvHead, block)`, or nil when the table did not hold it.
    func block(kvHead: Int, block: Int) -> Block? { blocks[kvHead * keyBlocks + block] }
}

/// What a driver needs of a `PackedBlockTable` whatever its block type.
protocol PackedBlocks: AnyObject, Sendable {
    func packedBlock(kvHead: Int, block: Int) -> (any PackedKeyValueBlock)?
}

extension PackedBlockTable: PackedBlocks {
    func packedBlock(kvHead: Int, block: Int) -> (any PackedKeyValueBlock)? { self.block(kvHead: kvHead, block: block) }
}
