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
                                   seqLen: layout.seqLen, format: local.rowFormat)
    }

    /// Empties the table for blocks in `format` (the local rows' at the first step, the payload's after it),
    /// in place where the format stays.
    private func emptyTable(format: StorageFormat) {
        if table.format == format {
            table.removeAll()
        } else {
            table = KeyValueBlockTable(kvHeads: table.kvHeads, keyBlocks: table.keyBlocks, blockK: table.blockK,
                                       seqLen: table.seqLen, format: format)
        }
    }

    func holdLocal(ownerBlocks: [Range<Int>]) throws {
        emptyTable(format: local.rowFormat)
        local.withPointers { kp, vp in
            var localRow = 0
            let size = local.rowFormat.byteSize
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
        emptyTable(format: local.format)
        for e in entries {
            let keys = UnsafeRawPointer(current.base + e.offset)
            table.set(kvHead: e.kvHead, block: e.block, keys: keys, values: keys + payloadFormat.keyBytes(rows: e.rows))
        }
    }

    /// The blocks of `entries` in the payload's layout, on the pass's threads; fp32 local rows that stand for
    /// the ring's format are converted as they are copied (the bits a converted copy of the tensors holds).
    func pack(_ entries: [PayloadEntry], byteCount: Int) throws -> UnsafeRawBufferPointer {
        if send.capacity < byteCount { send = RingBuffer(capacity: byteCount) }
        let (table, format, payload, base, dim) = (table, local.format, payloadFormat, send.base, headDim)
        HostParallelism.forEach(entries.count) { i in
            let e = entries[i], source = table.block(kvHead: e.kvHead, block: e.block)!
            let (keyBytes, valueBytes) = (payload.keyBytes(rows: e.rows), payload.valueBytes(rows: e.rows))
            if table.format == format {
                (base + e.offset).copyMemory(from: source.keys, byteCount: keyBytes)
                (base + e.offset + keyBytes).copyMemory(from: source.values, byteCount: valueBytes)
            } else {
                // Only bf16 borrows fp32 rows (`LocalBlocks`), and every float has a bf16.
                let count = e.rows * dim
                let fits = format.convert(source.keys.assumingMemoryBound(to: Float.self), count: count,
                                          to: base + e.offset)
                    && format.convert(source.values.assumingMemoryBound(to: Float.self), count: count,
                                      to: base + e.offset + keyBytes)
                precondition(fits, "HostRingStore: a \(format) block could not hold its rows")
            }
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
