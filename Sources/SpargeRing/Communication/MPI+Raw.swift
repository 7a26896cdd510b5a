import CMPI
import CMPIShim
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Every raw C MPI call of SpargeRing, each checked through `check`, which turns a code other than
/// `MPI_SUCCESS` into an `MPIError` carrying `MPI_Error_string`.
///
/// Nothing else in the package calls MPI directly: the communicator types call these. Arguments are already
/// validated by the caller (ranks in range, counts below 2³¹); handles stay `MPI_*` C types here.
enum MPI {
    /// Throws `MPIError` unless `code` is `MPI_SUCCESS`.
    @inline(__always)
    static func check(_ code: Int32, _ function: String) throws {
        if code != cmpiSuccess() { throw MPIError(code: code, function: function, message: errorString(code)) }
    }

    /// The text MPI gives for an error code; never fails (falls back to the number).
    /// The corresponding MPI function is `MPI_Error_string`.
    static func errorString(_ code: Int32) -> String {
        var buffer = [CChar](repeating: 0, count: Int(cmpiMaxErrorString()) + 1)
        var length: Int32 = 0
        guard MPI_Error_string(code, &buffer, &length) == cmpiSuccess() else { return "unknown MPI error \(code)" }
        let bytes = buffer.prefix(Int(length)).map { UInt8(bitPattern: $0) }
        return String(decoding: bytes, as: UTF8.self)
    }

    // MARK: - Setup and teardown

    /// Whether `MPI_Init` or `MPI_Init_thread` has been called in this process.
    /// The corresponding MPI function is `MPI_Initialized`.
    static func initialized() throws -> Bool {
        var flag: Int32 = 0
        try check(MPI_Initialized(&flag), "MPI_Initialized")
        return flag != 0
    }

    /// Whether `MPI_Finalize` has been called in this process.
    /// The corresponding MPI function is `MPI_Finalized`.
    static func finalized() throws -> Bool {
        var flag: Int32 = 0
        try check(MPI_Finalized(&flag), "MPI_Finalized")
        return flag != 0
    }

    /// Initializes MPI asking for thread support `required`; returns the level provided.
    /// The command-line arguments are not passed: OpenMPI takes its settings from the environment `mpirun`
    /// sets up. The corresponding MPI function is `MPI_Init_thread`.
    static func initThread(required: Int32) throws -> Int32 {
        var provided: Int32 = 0
        try check(MPI_Init_thread(nil, nil, required, &provided), "MPI_Init_thread")
        return provided
    }

    /// The corresponding MPI function is `MPI_Finalize`.
    static func finalize() throws {
        try check(MPI_Finalize(), "MPI_Finalize")
    }

    /// The corresponding MPI function is `MPI_Comm_dup`.
    static func commDup(_ comm: MPI_Comm) throws -> MPI_Comm {
        var copy: MPI_Comm? = cmpiCommNull()
        try check(MPI_Comm_dup(comm, &copy), "MPI_Comm_dup")
        return copy!
    }

    /// The corresponding MPI function is `MPI_Comm_free`.
    static func commFree(_ comm: MPI_Comm) throws {
        var handle: MPI_Comm? = comm
        try check(MPI_Comm_free(&handle), "MPI_Comm_free")
    }

    /// Makes MPI errors on `comm` return codes instead of aborting the job.
    /// The corresponding MPI function is `MPI_Comm_set_errhandler` with `MPI_ERRORS_RETURN`.
    static func setErrorsReturn(_ comm: MPI_Comm) throws {
        try check(MPI_Comm_set_errhandler(comm, cmpiErrorsReturn()), "MPI_Comm_set_errhandler")
    }

    /// The corresponding MPI function is `MPI_Comm_rank`.
    static func commRank(_ comm: MPI_Comm) throws -> Int {
        var rank: Int32 = 0
        try check(MPI_Comm_rank(comm, &rank), "MPI_Comm_rank")
        return Int(rank)
    }

    /// The corresponding MPI function is `MPI_Comm_size`.
    static func commSize(_ comm: MPI_Comm) throws -> Int {
        var size: Int32 = 0
        try check(MPI_Comm_size(comm, &size), "MPI_Comm_size")
        return Int(size)
    }

    /// Ends every process of `comm`'s job; falls back to `exit` should MPI return.
    /// The corresponding MPI function is `MPI_Abort`.
    static func abort(_ comm: MPI_Comm, code: Int32) -> Never {
        _ = MPI_Abort(comm, code)
        exit(code)
    }

    // MARK: - Collectives

    /// The corresponding MPI function is `MPI_Barrier`.
    static func barrier(_ comm: MPI_Comm) throws {
        try check(MPI_Barrier(comm), "MPI_Barrier")
    }

    /// Reduces `count` elements of `datatype` in place with `op` across `comm`.
    /// The corresponding MPI function is `MPI_Allreduce` with `MPI_IN_PLACE`.
    static func allreduceInPlace(
        _ buffer: UnsafeMutableRawPointer?, count: Int32, datatype: MPI_Datatype, op: MPI_Op, _ comm: MPI_Comm
    ) throws {
        try check(MPI_Allreduce(cmpiInPlace(), buffer, count, datatype, op, comm), "MPI_Allreduce")
    }

    /// Gathers bytes of uneven counts from every rank into `receive` at `displacements`.
    /// The corresponding MPI function is `MPI_Allgatherv`.
    static func allgatherv(
        _ send: UnsafeRawPointer?, count: Int32, into receive: UnsafeMutableRawPointer?,
        counts: [Int32], displacements: [Int32], _ comm: MPI_Comm
    ) throws {
        try check(
            MPI_Allgatherv(send, count, cmpiByte(), receive, counts, displacements, cmpiByte(), comm),
            "MPI_Allgatherv")
    }

    // MARK: - Point to point

    /// Starts sending `count` bytes. The corresponding MPI function is `MPI_Isend`.
    static func isend(
        _ buffer: UnsafeRawPointer?, count: Int32, to destination: Int32, tag: Int32, _ comm: MPI_Comm
    ) throws -> MPI_Request {
        var request: MPI_Request? = cmpiRequestNull()
        try check(MPI_Isend(buffer, count, cmpiByte(), destination, tag, comm, &request), "MPI_Isend")
        return request!
    }

    /// Starts receiving up to `count` bytes. The corresponding MPI function is `MPI_Irecv`.
    static func irecv(
        _ buffer: UnsafeMutableRawPointer?, count: Int32, from source: Int32, tag: Int32, _ comm: MPI_Comm
    ) throws -> MPI_Request {
        var request: MPI_Request? = cmpiRequestNull()
        try check(MPI_Irecv(buffer, count, cmpiByte(), source, tag, comm, &request), "MPI_Irecv")
        return request!
    }

    /// Completes `request` if possible; returns nil while pending, else the bytes that arrived for a receive
    /// (0 for a send). MPI sets a completed request to `MPI_REQUEST_NULL`.
    /// The corresponding MPI functions are `MPI_Test` and `MPI_Get_count`.
    static func test(_ request: inout MPI_Request?, isReceive: Bool) throws -> Int? {
        var flag: Int32 = 0
        var status = MPI_Status()
        try check(MPI_Test(&request, &flag, &status), "MPI_Test")
        guard flag != 0 else { return nil }
        return isReceive ? try receivedBytes(&status) : 0
    }

    /// Blocks until `request` completes; returns the bytes that arrived for a receive (0 for a send).
    /// The corresponding MPI functions are `MPI_Wait` and `MPI_Get_count`.
    static func wait(_ request: inout MPI_Request?, isReceive: Bool) throws -> Int {
        var status = MPI_Status()
        try check(MPI_Wait(&request, &status), "MPI_Wait")
        return isReceive ? try receivedBytes(&status) : 0
    }

    /// The length of a completed receive (a send's status carries no count).
    /// The corresponding MPI function is `MPI_Get_count` with `MPI_BYTE`.
    private static func receivedBytes(_ status: inout MPI_Status) throws -> Int {
        var count: Int32 = 0
        try check(MPI_Get_count(&status, cmpiByte(), &count), "MPI_Get_count")
        return Int(count)
    }
}
