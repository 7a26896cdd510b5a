import SpargeKernels

/// The ring's blocks in host memory: this rank's own K/V (`LocalBlocks`) and payload buffers, handed to a
/// `StepwiseAttention` (CPU tiles, or a GPU fed from the host) as a `KeyValueBlockTable` per step.
final class HostRingStore: RingBlockStore {
    private let local: LocalBlocks
    /// This rank's global token ranges, in the order of its rows.
    private let tokenRanges: [Range<Int>]
    private let attention: any StepwiseAttention
    private var table: KeyValueBlockTable
    private let headDim: Int
    let payloadFormat: PayloadFormat
    private var send = RingBuffer(capacity: 0)
    private var current = RingBuffer(capacity: 0)
    private var next = RingBuffer(capacity: 0)

    init(local: LocalBlocks, tokenRanges: [Range<Int>], attention: any StepwiseAttention, kvHeads: Int,
         layout: ShardLayout, headDim: Int) {
        self.local = local
        self.tokenRanges = tokenRanges
        self.attention = attention
        self.headDim = headDim
        payloadFormat = .storage(local.format, headDim: headDim)
        table = KeyValueBlockTable(kvHeads: kvHeads, keyBlocks: layout.keyBlockCount, blockK: layout.blockK,
                                   seqLen: layout.seqLen, format: local.format)
    }

    func holdLocal(ownerBlocks: [Range<Int>]) throws {
        table.removeAll()
        local.withPointers { kp, vp in
            var localRow = 0
            let size = local.format.byteSize
            for range in tokenRanges {
                // The pointers stay valid after the call: `local` keeps its tensors for the store's life.
                table.setBlocks(tokens: range, keys: kp + localRow * headDim * size,
                                values: vp + localRow * headDim * size, headStride: local.rows * headDim, dim: headDim)
                localRow += range.count
            }
        }
    }

    func holdReceived(_ entries: [PayloadEntry], ownerBlocks: [Range<Int>]) throws {
        swap(&current, &next)
        table.removeAll()
        for e in entries {
            let keys = UnsafeRawPointer(current.base + e.offset)
            table.set(kvHead: e.kvHead, block: e.block, keys: keys, values: keys + payloadFormat.keyBytes(rows: e.rows))
        }
    }

    func pack(_ entries: [PayloadEntry], byteCount: Int) throws -> UnsafeRawBufferPointer {
        if send.capacity < byteCount { send = RingBuffer(capacity: byteCount) }
        for e in entries {
            let source = table.block(kvHead: e.kvHead, block: e.block)!
            let (keyBytes, valueBytes) = (payloadFormat.keyBytes(rows: e.rows), payloadFormat.valueBytes(rows: e.rows))
            (send.base + e.offset).copyMemory(from: source.keys, byteCount: keyBytes)
            (send.base + e.offset + keyBytes).copyMemory(from: source.values, byteCount: valueBytes)
        }
        return UnsafeRawBufferPointer(send.bytes(count: byteCount))
    }

    func receiveBuffer(byteCount: Int) throws -> UnsafeMutableRawBufferPointer {
        if next.capacity < byteCount { next = RingBuffer(capacity: byteCount) }
        return next.bytes(count: byteCount)
    }

    func attend(threads: Int, poll: ((Double) -> Void)?) throws {
        try attention.attend(table, threads: threads, poll: poll)
    }
}
