#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Ends every rank of the run after printing `sparge: error: <message>` to standard error.
///
/// The rule of DESIGN.md §2.7: an error on one rank brings every rank down with a message and a non-zero
/// exit, never a hang. With more than one rank the message names the rank (`sparge: error: [rank 2] …`),
/// and the communicator aborts the job (`MPI_Abort`, exit code 1), which also stops ranks blocked in a
/// collective. With one rank it is `exit(1)`. Standard output is flushed first so that nothing already
/// printed is lost.
public func failAll(_ message: String, on comm: Communicator) -> Never {
    let origin = comm.size > 1 ? "[rank \(comm.rank)] " : ""
    fflush(stdout)
    printToStandardError("sparge: error: \(origin)\(message)\n")
    comm.abort(code: 1)
}

/// Writes `text` to standard error unbuffered, as one write so that lines from several ranks do not
/// interleave mid-line.
func printToStandardError(_ text: String) {
    var bytes = Array(text.utf8)
    var offset = 0
    while offset < bytes.count {
        let written = bytes.withUnsafeMutableBytes { write(2, $0.baseAddress! + offset, $0.count - offset) }
        if written <= 0 { break }
        offset += written
    }
}
