import Dispatch

/// The blocks of a `KeyValueBlockTable` quantized for `AttentionPrecision.int8`'s integer products, each
/// once per `attend` call (and not once per query block that visits it), spread over threads.
final class QuantizedBlockTable: @unchecked Sendable {
    /// Per (kv head, key block), as the table's `block(kvHead:block:)`: nil where the table has none.
    private var blocks: [QuantizedKeyValueBlock?]
    let keyBlocks: Int

    init(_ table: KeyValueBlockTable, headDim: Int, threads: Int) {
        keyBlocks = table.keyBlocks
        let present = (0..<(table.kvHeads * table.keyBlocks)).filter {
            table.block(kvHead: $0 / table.keyBlocks, block: $0 % table.keyBlocks) != nil
        }
        let made = present.map { _ in QuantizedKeyValueBlock(blockK: table.blockK, headDim: headDim) }
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

    /// The quantized block `(kvHead, block)`, or nil when the table did not hold it.
    func block(kvHead: Int, block: Int) -> QuantizedKeyValueBlock? { blocks[kvHead * keyBlocks + block] }
}
