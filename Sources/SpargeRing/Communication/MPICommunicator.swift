import CMPI
import CMPIShim

/// The MPI world: every process started by one `mpirun`.
///
/// Create one per process, on the thread that will make every MPI call (the main thread): MPI is
/// initialized with `MPI_THREAD_FUNNELED`, so worker threads may compute but never communicate. The
/// communicator works on its own duplicate of `MPI_COMM_WORLD` (so a host program's messages cannot match
/// ours) with `MPI_ERRORS_RETURN` set, so that every failure comes back as an `MPIError`.
///
/// Run without `mpirun`, OpenMPI starts a world of one rank ("singleton"), which works like any other.
///
/// MPI can be initialized once per process: after `finalize()` no new `MPICommunicator` can be created.
public final class MPICommunicator: Communicator {
    public let rank: Int
    public let size: Int
    /// The thread support MPI provided (`MPI_THREAD_FUNNELED` or better).
    public let providedThreadLevel: Int32

    public private(set) var bytesSent = 0
    public private(set) var bytesReceived = 0
    public private(set) var messagesSent = 0
    public private(set) var messagesReceived = 0

    /// Whether OpenMPI reports CUDA support (`MPIX_Query_cuda_support`): then the GPU backend's ring
    /// payloads go to MPI from device memory, with no copy through the host. Set it to false to send
    /// through pinned host memory anyway (the command line's `SPARGE_MPI_DEVICE_BUFFERS=0`).
    public lazy var movesDeviceMemory: Bool = cmpiCUDAAware() != 0

    /// Our duplicate of `MPI_COMM_WORLD`; nil after `finalize()`.
    private var comm: MPI_Comm?
    /// Whether this object initialized MPI and so must finalize it.
    private let ownsMPI: Bool

    /// Initializes MPI (unless the host program already did) and joins the world.
    /// - Throws: `MPIError` if MPI fails to start, was already finalized, or cannot provide
    ///   `MPI_THREAD_FUNNELED`.
    public init() throws {
        if try MPI.finalized() {
            throw MPIError(
                code: cmpiErrOther(), function: "MPI_Init_thread",
                message: "MPI was already finalized in this process and cannot be initialized again")
        }
        if try MPI.initialized() {
            ownsMPI = false
            providedThreadLevel = cmpiThreadFunneled()  // the host program's choice; assumed sufficient
        } else {
            let provided = try MPI.initThread(required: cmpiThreadFunneled())
            ownsMPI = true
            providedThreadLevel = provided
            // The thread levels are ordered: SINGLE < FUNNELED < SERIALIZED < MULTIPLE.
            if provided < cmpiThreadFunneled() {
                try? MPI.finalize()
                throw MPIError(
                    code: cmpiErrOther(), function: "MPI_Init_thread",
                    message: "MPI provides thread level \(provided); SpargeRing needs MPI_THREAD_FUNNELED")
            }
        }
        let world = cmpiCommWorld()!
        // Errors in MPI_Comm_dup itself must come back too, so the world gets the handler first.
        try MPI.setErrorsReturn(world)
        let duplicate = try MPI.commDup(world)
        try MPI.setErrorsReturn(duplicate)
        comm = duplicate
        rank = try MPI.commRank(duplicate)
        size = try MPI.commSize(duplicate)
    }

    /// Joins the ranks of a communicator the host program owns (mpi4py's `MPI._handleof(comm)`, say),
    /// through a duplicate of it, so that the host's messages cannot match ours. MPI is neither initialized
    /// nor finalized here: the host did the first and does the second; `finalize()` frees the duplicate only.
    ///
    /// - Parameter handle: the host's `MPI_Comm` as an integer (OpenMPI's handles are addresses).
    /// - Throws: `MPIError` when MPI is not running (not initialized, or finalized) or the handle is 0.
    public init(duplicating handle: UInt) throws {
        guard try MPI.initialized(), try !MPI.finalized() else {
            throw MPIError(code: cmpiErrOther(), function: "MPI_Comm_dup",
                           message: "a communicator was passed in but MPI is not running in this process")
        }
        guard let host = MPI_Comm(bitPattern: handle) else {
            throw MPIError(code: cmpiErrOther(), function: "MPI_Comm_dup", message: "the communicator handle is 0")
        }
        ownsMPI = false
        providedThreadLevel = cmpiThreadFunneled()  // the host program's choice; assumed sufficient
        let duplicate = try MPI.commDup(host)
        try MPI.setErrorsReturn(duplicate)
        comm = duplicate
        rank = try MPI.commRank(duplicate)
        size = try MPI.commSize(duplicate)
    }

    deinit { finalize() }

    /// Frees the communicator and finalizes MPI if this object initialized it. Calling it again does nothing.
    /// Every rank must call it (it synchronizes); pending requests must be complete.
    public func finalize() {
        guard let handle = comm else { return }
        comm = nil
        do {
            try MPI.commFree(handle)
            if ownsMPI { try MPI.finalize() }
        } catch {
            // No communicator is left to abort through once MPI is half torn down; report and go on.
            printToStandardError("sparge: warning: [rank \(rank)] \(error)\n")
        }
    }

    /// The live communicator; using a finalized one is a programming error.
    private var handle: MPI_Comm {
        guard let comm else { preconditionFailure("MPICommunicator used after finalize()") }
        return comm
    }

    /// Ends every rank with a message about a failed call that the ranks cannot recover from.
    private func fatal(_ error: Error) -> Never {
        failAll("\(error)", on: self)
    }

    // MARK: - Collectives

    /// Returns once every rank has called it. The corresponding MPI function is `MPI_Barrier`.
    public func barrier() {
        do { try MPI.barrier(handle) } catch { fatal(error) }
    }

    /// Elementwise sum, max or min over all ranks, in place.
    /// The corresponding MPI function is `MPI_Allreduce` (`MPI_IN_PLACE`, `MPI_DOUBLE`).
    public func allreduceSum(_ values: inout [Double]) { allreduce(&values, datatype: cmpiDouble(), op: cmpiSum()) }
    public func allreduceMax(_ values: inout [Double]) { allreduce(&values, datatype: cmpiDouble(), op: cmpiMax()) }
    public func allreduceMin(_ values: inout [Double]) { allreduce(&values, datatype: cmpiDouble(), op: cmpiMin()) }

    /// The corresponding MPI function is `MPI_Allreduce` (`MPI_INT64_T`, `MPI_MAX`).
    public func allreduceMax(_ value: Int) -> Int {
        var values = [Int64(value)]
        allreduce(&values, datatype: cmpiInt64(), op: cmpiMax())
        return Int(values[0])
    }

    /// The corresponding MPI function is `MPI_Allreduce` (`MPI_INT64_T`, `MPI_MIN`).
    public func allreduceMin(_ value: Int) -> Int {
        var values = [Int64(value)]
        allreduce(&values, datatype: cmpiInt64(), op: cmpiMin())
        return Int(values[0])
    }

    /// The corresponding MPI function is `MPI_Allreduce` (`MPI_UINT8_T`, `MPI_BOR`).
    public func allreduceBitwiseOr(_ values: inout [UInt8]) {
        allreduce(&values, datatype: cmpiUInt8(), op: cmpiBitwiseOr())
    }

    private func allreduce<T>(_ values: inout [T], datatype: MPI_Datatype?, op: MPI_Op?) {
        guard let count = Int32(exactly: values.count) else {
            failAll("allreduce of \(values.count) elements exceeds MPI's int count", on: self)
        }
        do {
            try values.withUnsafeMutableBytes {
                try MPI.allreduceInPlace($0.baseAddress, count: count, datatype: datatype!, op: op!, handle)
            }
        } catch { fatal(error) }
    }

    /// Every rank's bytes in rank order; the counts are known on every rank.
    /// The corresponding MPI function is `MPI_Allgatherv`.
    public func allgatherv(_ mine: UnsafeRawBufferPointer, counts: [Int], into all: UnsafeMutableRawBufferPointer) {
        // Misuse ends every rank with a message: the others are already waiting inside the collective.
        guard counts.count == size else {
            failAll("allgatherv needs one count per rank (\(counts.count) for \(size) ranks)", on: self)
        }
        guard mine.count == counts[rank] else {
            failAll("allgatherv: this rank gives \(mine.count) bytes, counts say \(counts[rank])", on: self)
        }
        var counts32 = [Int32]()
        var displacements = [Int32]()
        var total = 0
        for count in counts {
            guard let c = Int32(exactly: count), let d = Int32(exactly: total), count >= 0 else {
                failAll("allgatherv of \(counts.reduce(0, +)) bytes exceeds MPI's int counts", on: self)
            }
            counts32.append(c)
            displacements.append(d)
            total += count
        }
        guard Int32(exactly: total) != nil else {
            failAll("allgatherv of \(total) bytes exceeds MPI's int counts", on: self)
        }
        guard all.count == total else {
            failAll("allgatherv: \(all.count) bytes to receive into, counts say \(total)", on: self)
        }
        do {
            try MPI.allgatherv(mine.baseAddress, count: counts32[rank], into: all.baseAddress, counts: counts32,
                               displacements: displacements, handle)
        } catch { fatal(error) }
    }

    // MARK: - Point to point

    /// Starts a send; counted when posted. The corresponding MPI function is `MPI_Isend`.
    public func isend(_ buffer: UnsafeRawBufferPointer, to destination: Int, tag: Int) throws -> Request {
        let (count, peer, tag32) = try validate(buffer.count, peer: destination, tag: tag, function: "MPI_Isend")
        let request = try MPI.isend(buffer.baseAddress, count: count, to: peer, tag: tag32, handle)
        bytesSent += buffer.count
        messagesSent += 1
        return Request(direction: .send, peer: destination, tag: tag, byteCount: buffer.count, handle: request)
    }

    /// Starts a receive; counted when it completes. The corresponding MPI function is `MPI_Irecv`.
    public func irecv(into buffer: UnsafeMutableRawBufferPointer, from source: Int, tag: Int) throws -> Request {
        let (count, peer, tag32) = try validate(buffer.count, peer: source, tag: tag, function: "MPI_Irecv")
        let request = try MPI.irecv(buffer.baseAddress, count: count, from: peer, tag: tag32, handle)
        return Request(direction: .receive, peer: source, tag: tag, byteCount: buffer.count, handle: request)
    }

    /// The corresponding MPI function is `MPI_Test`.
    public func test(_ request: inout Request) -> Bool {
        if request.isComplete { return true }
        do {
            guard let bytes = try MPI.test(&request.handle, isReceive: request.direction == .receive) else {
                return false
            }
            complete(&request, bytes: bytes)
            return true
        } catch { fatal(error) }
    }

    /// The corresponding MPI function is `MPI_Wait`.
    public func wait(_ request: inout Request) {
        if request.isComplete { return }
        do {
            let bytes = try MPI.wait(&request.handle, isReceive: request.direction == .receive)
            complete(&request, bytes: bytes)
        } catch { fatal(error) }
    }

    private func complete(_ request: inout Request, bytes: Int) {
        request.isComplete = true
        request.handle = nil
        if request.direction == .receive {
            request.byteCount = bytes
            bytesReceived += bytes
            messagesReceived += 1
        }
    }

    /// Checks what MPI would reject with a less helpful message (or, for counts, silently truncate).
    private func validate(_ count: Int, peer: Int, tag: Int, function: String) throws -> (Int32, Int32, Int32) {
        guard (0..<size).contains(peer) else {
            throw MPIError(code: cmpiErrRank(), function: function, message: "rank \(peer) is outside 0..<\(size)")
        }
        guard (0...32767).contains(tag) else {
            throw MPIError(code: cmpiErrTag(), function: function, message: "tag \(tag) is outside 0...32767")
        }
        guard let count32 = Int32(exactly: count) else {
            throw MPIError(
                code: cmpiErrOther(), function: function,
                message: "\(count) bytes exceed MPI's int count; split the message")
        }
        return (count32, Int32(peer), Int32(tag))
    }

    /// Ends every rank of the job. The corresponding MPI function is `MPI_Abort`.
    public func abort(code: Int32) -> Never {
        MPI.abort(comm ?? cmpiCommWorld(), code: code)
    }
}
