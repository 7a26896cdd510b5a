import CMPI

/// The ranks of one run and the few ways they talk (DESIGN.md §2).
///
/// Two implementations: `MPICommunicator` (the MPI world, under `mpirun`) and `SingleProcessCommunicator`
/// (rank 0 of 1, no MPI). Every call is made from one thread, the one that created the communicator: the
/// MPI world is initialized with `MPI_THREAD_FUNNELED`, and worker threads only compute.
///
/// Collectives must be called by every rank in the same order with matching sizes. Point-to-point traffic
/// is counted (`bytesSent`, `messagesSent`, `bytesReceived`, `messagesReceived`) so that a caller can
/// report, and tests can assert, exactly what moved; collectives are not counted.
///
/// Errors: `isend` and `irecv` throw for arguments the transport rejects. A failure inside a collective or
/// while completing a request leaves the ranks out of step and nobody could recover from it, so those calls
/// end every rank through `failAll(_:on:)` instead of throwing.
public protocol Communicator: AnyObject {
    /// This process's rank, `0..<size`.
    var rank: Int { get }
    /// The number of ranks.
    var size: Int { get }

    /// Returns once every rank has called it.
    func barrier()

    /// Whether `isend` and `irecv` take CUDA device memory (a CUDA-aware MPI); false by default.
    var movesDeviceMemory: Bool { get }

    /// Replaces every element with its sum over all ranks.
    ///
    /// The order of the additions is up to the transport: results are exact only when every partial sum is
    /// representable (integers below 2⁵³, for instance); otherwise they may differ in the last bits between
    /// rank counts but are identical on all ranks of one run.
    func allreduceSum(_ values: inout [Double])

    /// Replaces every element with its maximum over all ranks. NaN handling is the transport's.
    func allreduceMax(_ values: inout [Double])

    /// Replaces every element with its minimum over all ranks. NaN handling is the transport's.
    func allreduceMin(_ values: inout [Double])

    /// The maximum of `value` over all ranks, e.g. "did any rank fail" with 0 and 1.
    func allreduceMax(_ value: Int) -> Int

    /// The minimum of `value` over all ranks.
    func allreduceMin(_ value: Int) -> Int

    /// Replaces every byte with the bitwise OR over all ranks (bitsets such as "which ranks need block j").
    func allreduceBitwiseOr(_ values: inout [UInt8])

    /// Concatenates every rank's bytes in rank order into `all`, when every rank already knows every count:
    /// memory the caller owns on both sides (pinned staging, a large summary), so nothing is copied twice.
    ///
    /// - Parameters:
    ///   - mine: this rank's bytes; `mine.count` must equal `counts[rank]`. May be empty.
    ///   - counts: the byte count of every rank, identical on all ranks; each count and their total must be
    ///     below 2³¹ (MPI counts and displacements are `int`).
    ///   - all: `counts.reduce(0, +)` bytes, rank 0's first.
    func allgatherv(_ mine: UnsafeRawBufferPointer, counts: [Int], into all: UnsafeMutableRawBufferPointer)

    /// Starts sending `buffer` to rank `to`; complete the request with `test` or `wait`.
    ///
    /// The caller keeps `buffer`'s memory alive and unchanged until the request completes.
    /// An empty buffer is a legal message: it is sent, matched by one `irecv` and counted in `messagesSent`
    /// with zero bytes. The ring never posts one (its message sizes are known on both sides, so an empty
    /// message is simply left out), but the transport allows it.
    ///
    /// - Parameters:
    ///   - to: the destination rank, `0..<size`; may be this rank.
    ///   - tag: `0...32767` (the range every MPI guarantees). Messages between one pair of ranks with one
    ///     tag arrive in the order they were posted.
    /// - Throws: `MPIError` when the transport refuses the send.
    func isend(_ buffer: UnsafeRawBufferPointer, to: Int, tag: Int) throws -> Request

    /// Starts receiving one message from rank `from` with `tag` into `into`.
    ///
    /// The caller keeps `into`'s memory alive and does not read it until the request completes. The message
    /// may be shorter than the buffer (the request's `byteCount` then says how long it was); a longer one is
    /// an error that ends every rank.
    /// - Throws: `MPIError` when the transport refuses the receive.
    func irecv(into: UnsafeMutableRawBufferPointer, from: Int, tag: Int) throws -> Request

    /// Completes `request` if it can without waiting; returns whether it is complete. Calling it again on a
    /// complete request returns `true` and changes nothing.
    func test(_ request: inout Request) -> Bool

    /// Blocks until `request` completes. A complete request returns at once.
    func wait(_ request: inout Request)

    /// Ends every rank of the run with `code` (non-zero for a failure). Prints nothing: see `failAll`.
    func abort(code: Int32) -> Never

    /// Bytes handed to `isend`, counted when posted.
    var bytesSent: Int { get }
    /// Bytes that arrived through `irecv`, counted when the receive completes.
    var bytesReceived: Int { get }
    /// Messages posted with `isend`, empty ones included.
    var messagesSent: Int { get }
    /// Receives completed, empty messages included.
    var messagesReceived: Int { get }
}

/// One pending or completed point-to-point transfer, created by `isend` or `irecv`.
///
/// A value type that holds the transport's handle: keep one copy and pass it `inout` to `test`/`wait`.
public struct Request {
    public enum Direction: Sendable { case send, receive }

    /// Whether this request sends or receives.
    public let direction: Direction
    /// The other rank.
    public let peer: Int
    /// The message tag.
    public let tag: Int
    /// Whether the transfer has completed (set by `test` or `wait`).
    public internal(set) var isComplete: Bool
    /// The bytes posted; for a completed receive, the bytes that actually arrived.
    public internal(set) var byteCount: Int

    /// The MPI request handle (`MPICommunicator`); nil once complete and for other transports.
    var handle: MPI_Request?
    /// The mailbox ticket (`SingleProcessCommunicator`).
    var ticket: Int

    init(direction: Direction, peer: Int, tag: Int, byteCount: Int, handle: MPI_Request? = nil, ticket: Int = 0) {
        self.direction = direction
        self.peer = peer
        self.tag = tag
        self.isComplete = false
        self.byteCount = byteCount
        self.handle = handle
        self.ticket = ticket
    }
}

extension Communicator {
    public var movesDeviceMemory: Bool { false }

    /// Gathers every rank's bytes in rank order when the counts are not known in advance: the counts are
    /// gathered first (8 bytes per rank), then the bytes with `allgatherv`.
    /// - Returns: one array per rank, indexed by rank; empty for a rank that gave nothing.
    /// `allgatherv(_:counts:into:)` into a new array: `counts.reduce(0, +)` bytes, rank 0's first.
    public func allgatherv(_ mine: [UInt8], counts: [Int]) -> [UInt8] {
        var all = [UInt8](repeating: 0, count: counts.reduce(0, +))
        mine.withUnsafeBytes { send in all.withUnsafeMutableBytes { allgatherv(send, counts: counts, into: $0) } }
        return all
    }

    public func allgather(bytes mine: [UInt8]) -> [[UInt8]] {
        var myCount = UInt64(mine.count).littleEndian
        let countBytes = withUnsafeBytes(of: &myCount) { Array($0) }
        let gatheredCounts = allgatherv(countBytes, counts: Array(repeating: 8, count: size))
        var counts = [Int]()
        counts.reserveCapacity(size)
        for r in 0..<size {
            var value: UInt64 = 0
            for byte in gatheredCounts[(r * 8)..<(r * 8 + 8)].reversed() { value = value << 8 | UInt64(byte) }
            counts.append(Int(value))
        }
        let all = allgatherv(mine, counts: counts)
        var result = [[UInt8]]()
        result.reserveCapacity(size)
        var start = 0
        for count in counts {
            result.append(Array(all[start..<(start + count)]))
            start += count
        }
        return result
    }

    /// Whether `bytes` (a serialized configuration, say) is byte-for-byte the same on every rank.
    /// The answer is the same on all ranks.
    public func isIdenticalOnAllRanks(_ bytes: [UInt8]) -> Bool {
        // Every rank gathers the same arrays, so every rank reaches the same answer without another round.
        let all = allgather(bytes: bytes)
        return all.allSatisfy { $0 == all[0] }
    }

    /// Whether `failed` is true on any rank. The answer is the same on all ranks.
    public func anyRank(_ failed: Bool) -> Bool {
        allreduceMax(failed ? 1 : 0) != 0
    }

    /// Completes every request in `requests`, in order.
    public func waitAll(_ requests: inout [Request]) {
        for i in requests.indices { wait(&requests[i]) }
    }
}
