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
/// The ring decides what travels and when, and never touches the blocks: where they live and who computes
/// with them is a `RingBlockStore`'s business (host arrays and CPU tiles, or a GPU's memory and kernels);
/// sizes are the schedule's.
struct RingAttention {
    let schedule: RingSchedule
    let comm: Communicator
    let threads: Int

    /// Runs all steps on `store`; `progress` gets the share of the ring done, on this thread.
    func run(store: any RingBlockStore, progress: ((Double) -> Void)?) throws -> RingStatistics {
        guard store.payloadFormat == schedule.payload else {
            throw SpargeError.invalidArgument("ring: the store lays out blocks as \(store.payloadFormat); the schedule "
                + "sizes them as \(schedule.payload)")
        }
        let p = schedule.layout.ranks, r = comm.rank
        let outgoing = (0..<p).map { s in s < p - 1 ? schedule.forwarded(origin: schedule.origin(of: r, step: s), afterStep: s) : [] }
        let incoming = (0..<p).map { s in s < p - 1 ? schedule.forwarded(origin: schedule.origin(of: r, step: s + 1), afterStep: s) : [] }
        var stats = RingStatistics()
        let sent0 = (comm.bytesSent, comm.bytesReceived, comm.messagesSent, comm.messagesReceived)
        stats.denseRingBytes = (p - 1) * schedule.denseByteCount(origin: r)

        for s in 0..<p {
            progress?(Double(s) / Double(p))
            let ownerBlocks = schedule.layout.keyBlockRanges(rank: schedule.origin(of: r, step: s))
            if s == 0 {
                try store.holdLocal(ownerBlocks: ownerBlocks)
            } else {
                try store.holdReceived(incoming[s - 1], ownerBlocks: ownerBlocks)
            }

            // Post this step's exchange: forward what later ranks still need, receive the next payload.
            var requests: [Request] = []
            if !outgoing[s].isEmpty {
                let bytes = try store.pack(outgoing[s], byteCount: schedule.byteCount(outgoing[s]))
                requests.append(try comm.isend(bytes, to: schedule.next(of: r), tag: s))
            }
            if !incoming[s].isEmpty {
                let buffer = try store.receiveBuffer(byteCount: schedule.byteCount(incoming[s]))
                requests.append(try comm.irecv(into: buffer, from: schedule.previous(of: r), tag: s))
            }

            // Compute, progressing the messages from this thread between work items; the store hears of the
            // payload's arrival as soon as it is seen.
            let posted = DispatchTime.now().uptimeNanoseconds
            var completed = [UInt64?](repeating: nil, count: requests.count)
            var told = false, arrivalError: Error?
            let tellArrival = {
                guard !told else { return }
                told = true
                do { try store.payloadArrived() } catch { arrivalError = error }
            }
            let poll = { (done: Double) in
                for i in requests.indices where completed[i] == nil {
                    if comm.test(&requests[i]) {
                        completed[i] = DispatchTime.now().uptimeNanoseconds
                        if requests[i].direction == .receive { tellArrival() }
                    }
                }
                progress?((Double(s) + done) / Double(p))
            }
            try store.attend(threads: threads, poll: requests.isEmpty && progress == nil ? nil : poll)
            let computed = DispatchTime.now().uptimeNanoseconds
            comm.waitAll(&requests)
            if !incoming[s].isEmpty { tellArrival() }
            if let arrivalError { throw arrivalError }
            let waited = DispatchTime.now().uptimeNanoseconds
            stats.computeSeconds += Double(computed - posted) * 1e-9
            stats.waitSeconds += Double(waited - computed) * 1e-9
            if !requests.isEmpty {
                let done = completed.map { $0 ?? waited }.max()!
                stats.communicationSeconds += Double(done - posted) * 1e-9
            }
        }
        stats.bytesSent = comm.bytesSent - sent0.0
        stats.bytesReceived = comm.bytesReceived - sent0.1
        stats.messagesSent = comm.messagesSent - sent0.2
        stats.messagesReceived = comm.messagesReceived - sent0.3
        return stats
    }
}
