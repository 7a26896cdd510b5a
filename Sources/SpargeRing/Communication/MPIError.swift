/// An MPI call that returned an error code, with the text MPI gives for it.
///
/// Every raw MPI call goes through one check (`MPI.check` in `MPI+Raw.swift`) that builds this value; the
/// communicator sets `MPI_ERRORS_RETURN` so that codes come back instead of MPI aborting on its own.
public struct MPIError: Error, CustomStringConvertible, Sendable {
    /// The error code returned by MPI (an `MPI_ERR_*` class or an implementation-specific code).
    public let code: Int32
    /// The MPI function that failed, e.g. `MPI_Isend`.
    public let function: String
    /// `MPI_Error_string` of `code`, or a description of the misuse that SpargeRing caught before calling.
    public let message: String

    public init(code: Int32, function: String, message: String) {
        self.code = code
        self.function = function
        self.message = message
    }

    public var description: String { "\(function) failed: \(message) (MPI error \(code))" }
}
