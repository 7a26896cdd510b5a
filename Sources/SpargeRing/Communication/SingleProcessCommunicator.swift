import CMPIShim
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Rank 0 of 1, without MPI: for plain library use and tests. It never calls MPI (only borrows its error
/// codes), so it works whether or not the process runs under `mpirun`.
///
/// Collectives return their input. Point-to-point works through an in-memory mailbox, with MPI's matching
/// rules for one rank talking to itself: a send is copied at once (so it completes at once), a receive
/// matches the oldest unmatched send with its tag, and sends with one tag are received in the order they
/// were posted. A ring over one rank never sends, but a caller that does gets the right bytes.
///
/// Waiting on a receive that no posted send matches can never complete (there is nobody else to send):
/// that is reported as a fatal error rather than hanging. A message longer than the receive buffer is
/// MPI's truncation error, thrown (as `MPIError`) by whichever of `isend`/`irecv` completes the match;
/// the message then stays where it was, unsent or unreceived, and nothing is counted.
public final class SingleProcessCommunicator: Communicator {
    public var rank: Int { 0 }
    public var size: Int { 1 }

    public private(set) var bytesSent = 0
    public private(set) var bytesReceived = 0
    public private(set) var messagesSent = 0
    public private(set) var messagesReceived = 0

    /// A posted receive that no send has matched yet.
    private struct PendingReceive {
        var ticket: Int
        var tag: Int
        var buffer: UnsafeMutableRawBufferPointer
    }

    /// Sent messages not yet received, oldest first.
    private var mailbox: [(tag: Int, bytes: [UInt8])] = []
    /// Receives posted before their send, oldest first.
    private var pendingReceives: [PendingReceive] = []
    /// Completed receives not yet collected by `test`/`wait`: ticket → bytes delivered.
    private var delivered: [Int: Int] = [:]
    private var nextTicket = 1

    public init() {}

    public func barrier() {}
    public func allreduceSum(_ values: inout [Double]) {}
    public func allreduceMax(_ values: inout [Double]) {}
    public func allreduceMin(_ values: inout [Double]) {}
    public func allreduceMax(_ value: Int) -> Int { value }
    public func allreduceMin(_ value: Int) -> Int { value }
    public func allreduceBitwiseOr(_ values: inout [UInt8]) {}

    public func allgatherv(_ mine: UnsafeRawBufferPointer, counts: [Int], into all: UnsafeMutableRawBufferPointer) {
        precondition(counts == [mine.count] && all.count == mine.count,
                     "allgatherv on one rank needs counts == [\(mine.count)] and as many bytes, got \(counts), \(all.count)")
        if !mine.isEmpty { all.baseAddress!.copyMemory(from: mine.baseAddress!, byteCount: mine.count) }
    }

    public func isend(_ buffer: UnsafeRawBufferPointer, to destination: Int, tag: Int) throws -> Request {
        try validate(peer: destination, tag: tag, function: "MPI_Isend")
        if let index = pendingReceives.firstIndex(where: { $0.tag == tag }) {
            delivered[pendingReceives[index].ticket] = try copy(buffer, into: pendingReceives[index].buffer)
            pendingReceives.remove(at: index)
        } else {
            mailbox.append((tag, Array(buffer)))
        }
        bytesSent += buffer.count
        messagesSent += 1
        var request = Request(direction: .send, peer: destination, tag: tag, byteCount: buffer.count)
        request.isComplete = true
        return request
    }

    public func irecv(into buffer: UnsafeMutableRawBufferPointer, from source: Int, tag: Int) throws -> Request {
        try validate(peer: source, tag: tag, function: "MPI_Irecv")
        let ticket = nextTicket
        nextTicket += 1
        if let index = mailbox.firstIndex(where: { $0.tag == tag }) {
            delivered[ticket] = try mailbox[index].bytes.withUnsafeBytes { try copy($0, into: buffer) }
            mailbox.remove(at: index)
        } else {
            pendingReceives.append(PendingReceive(ticket: ticket, tag: tag, buffer: buffer))
        }
        return Request(direction: .receive, peer: source, tag: tag, byteCount: buffer.count, ticket: ticket)
    }

    public func test(_ request: inout Request) -> Bool {
        if request.isComplete { return true }
        guard let bytes = delivered.removeValue(forKey: request.ticket) else { return false }
        request.isComplete = true
        request.byteCount = bytes
        bytesReceived += bytes
        messagesReceived += 1
        return true
    }

    public func wait(_ request: inout Request) {
        if !test(&request) {
            failAll("wait on a receive (tag \(request.tag)) that no send on this single rank matches", on: self)
        }
    }

    public func abort(code: Int32) -> Never {
        exit(code)
    }

    private func validate(peer: Int, tag: Int, function: String) throws {
        guard peer == 0 else {
            throw MPIError(code: cmpiErrRank(), function: function, message: "rank \(peer) is outside 0..<1")
        }
        guard (0...32767).contains(tag) else {
            throw MPIError(code: cmpiErrTag(), function: function, message: "tag \(tag) is outside 0...32767")
        }
    }

    /// Copies a message into a receive buffer; a message longer than the buffer is MPI's truncation error.
    private func copy(_ message: UnsafeRawBufferPointer, into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard message.count <= buffer.count else {
            throw MPIError(
                code: cmpiErrTruncate(), function: "MPI_Irecv",
                message: "message of \(message.count) bytes truncated: the receive buffer holds \(buffer.count)")
        }
        if let source = message.baseAddress, let destination = buffer.baseAddress, message.count > 0 {
            destination.copyMemory(from: source, byteCount: message.count)
        }
        return message.count
    }
}
