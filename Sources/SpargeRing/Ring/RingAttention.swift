import Dispatch
import SpargeKernels

/// What one rank's ring did: traffic, and where its time went.
public struct RingStatistics: Sendable, Equatable {
    /// Point-to-point bytes and messages this rank sent and received.
    public var bytesSent = 0, bytesReceived = 0, messagesSent = 0, messagesReceived = 0
    /// Bytes this rank would have sent in a dense ring (every block, every step).
    public var denseRingBytes = 0
    /// Seconds computing (in `attend`), and blocked waiting for messages after computing.
    public var computeSeconds = 0.0, waitSeconds = 0.0
    /// Seconds from posting each step's messages to seeing them complete, summed over steps.
    public var communicationSeconds = 0.0

    public init() {}

    /// The share of communication time that computing hid: `1 − wait / communication` (1 with no traffic).
    public var hiddenShare: Double {
        communicationSeconds > 0 ? max(0, min(1, 1 - waitSeconds / communicationSeconds)) : 1
    }
}

/// The ring of DESIGN.md §2.5 on one rank: step `s` computes with the payload of rank `r − s` while that
/// payload's still-needed blocks travel on to `r + 1` and the next payload arrives from `r − 1`.
///
/// The ring moves blocks and never touches their contents: tiles are the driver's business
/// (a `StepwiseAttention`: CPU tiles or a GPU); sizes are the schedule's.
struct RingAttention {
    let schedule: RingSchedule
    let comm: Communicator
    let threads: Int

    /// Runs all steps, feeding `attention`; `progress` gets the share of the ring done, on this thread.
    ///
    /// - Parameter local: this rank's K and V rows in the schedule's storage format (see `LocalBlocks`).
    func run(local: LocalBlocks, attention: any StepwiseAttention,
             progress: ((Double) -> Void)?) throws -> RingStatistics {
        let layout = schedule.layout
        let p = layout.ranks, r = comm.rank, d = schedule.headDim
        let outgoing = (0..<p).map { s in s < p - 1 ? schedule.forwarded(origin: schedule.origin(of: r, step: s), afterStep: s) : [] }
        let incoming = (0..<p).map { s in s < p - 1 ? schedule.forwarded(origin: schedule.origin(of: r, step: s + 1), afterStep: s) : [] }
        let send = RingBuffer(capacity: outgoing.map(schedule.byteCount).max() ?? 0)
        var current = RingBuffer(capacity: incoming.map(schedule.byteCount).max() ?? 0)
        var next = RingBuffer(capacity: current.capacity)
        var stats = RingStatistics()
        let sent0 = (comm.bytesSent, comm.bytesReceived, comm.messagesSent, comm.messagesReceived)
        stats.denseRingBytes = (p - 1) * schedule.denseByteCount(origin: r)

        var table = KeyValueBlockTable(kvHeads: schedule.needs.kvHeads, keyBlocks: layout.keyBlockCount,
                                       blockK: layout.blockK, seqLen: layout.seqLen, format: schedule.format)
        try local.withPointers { kp, vp in
                for s in 0..<p {
                    progress?(Double(s) / Double(p))
                    table.removeAll()
                    if s == 0 {
                        var localRow = 0
                        let size = schedule.format.byteSize
                        for range in layout.tokenRanges[r] {
                            table.setBlocks(tokens: range, keys: kp + localRow * d * size,
                                            values: vp + localRow * d * size, headStride: local.rows * d, dim: d)
                            localRow += range.count
                        }
                    } else {
                        for e in incoming[s - 1] {
                            let keys = UnsafeRawPointer(current.base + e.offset)
                            table.set(kvHead: e.kvHead, block: e.block, keys: keys,
                                      values: keys + schedule.blockBytes(rows: e.rows))
                        }
                    }

                    // Post this step's exchange: forward what later ranks still need, receive the next payload.
                    var requests: [Request] = []
                    if !outgoing[s].isEmpty {
                        pack(outgoing[s], from: table, into: send)
                        let count = schedule.byteCount(outgoing[s])
                        requests.append(try comm.isend(UnsafeRawBufferPointer(send.bytes(count: count)),
                                                       to: schedule.next(of: r), tag: s))
                    }
                    if !incoming[s].isEmpty {
                        requests.append(try comm.irecv(into: next.bytes(count: schedule.byteCount(incoming[s])),
                                                       from: schedule.previous(of: r), tag: s))
                    }

                    // Compute, progressing the messages from this thread between work items.
                    let posted = DispatchTime.now().uptimeNanoseconds
                    var completed = [UInt64?](repeating: nil, count: requests.count)
                    let poll = { (done: Double) in
                        for i in requests.indices where completed[i] == nil {
                            if comm.test(&requests[i]) { completed[i] = DispatchTime.now().uptimeNanoseconds }
                        }
                        progress?((Double(s) + done) / Double(p))
                    }
                    try attention.attend(table, threads: threads, poll: requests.isEmpty && progress == nil ? nil : poll)
                    let computed = DispatchTime.now().uptimeNanoseconds
                    comm.waitAll(&requests)
                    let waited = DispatchTime.now().uptimeNanoseconds
                    stats.computeSeconds += Double(computed - posted) * 1e-9
                    stats.waitSeconds += Double(waited - computed) * 1e-9
                    if !requests.isEmpty {
                        let done = completed.map { $0 ?? waited }.max()!
                        stats.communicationSeconds += Double(done - posted) * 1e-9
                    }
                    swap(&current, &next)
                }
        }
        stats.bytesSent = comm.bytesSent - sent0.0
        stats.bytesReceived = comm.bytesReceived - sent0.1
        stats.messagesSent = comm.messagesSent - sent0.2
        stats.messagesReceived = comm.messagesReceived - sent0.3
        return stats
    }

    /// Copies the keys, then the values, of every entry from where `table` has them into `buffer`.
    private func pack(_ entries: [RingSchedule.Entry], from table: KeyValueBlockTable, into buffer: RingBuffer) {
        for e in entries {
            let source = table.block(kvHead: e.kvHead, block: e.block)!
            let bytes = schedule.blockBytes(rows: e.rows)
            (buffer.base + e.offset).copyMemory(from: source.keys, byteCount: bytes)
            (buffer.base + e.offset + bytes).copyMemory(from: source.values, byteCount: bytes)
        }
    }
}
