import CSparge
import SpargeKernels
import SpargeRing

/// An error on its way out of the C interface: the status the caller branches on and the message it shows.
struct CError: Error {
    let status: sparge_status
    let message: String

    init(_ status: sparge_status, _ message: String) {
        self.status = status
        self.message = message
    }

    /// Any error a library call threw, with the status that says who is at fault.
    init(_ error: Error) {
        switch error {
        case let e as CError: self = e
        case let e as SpargeError: self.init(SPARGE_ERROR_INVALID_ARGUMENT, e.description)
        case let e as ForwardError: self.init(SPARGE_ERROR_INVALID_ARGUMENT, e.description)
        case let e as MPIError: self.init(SPARGE_ERROR_MPI, "\(e)")
        default: self.init(SPARGE_ERROR_BACKEND, "\(error)")
        }
    }
}

/// Runs `body`, turning whatever it throws into a status and a NUL-terminated message in `error`.
func reporting(_ buffer: UnsafeMutablePointer<CChar>?, _ size: Int, _ body: () throws -> Void) -> sparge_status {
    do {
        try body()
        return SPARGE_OK
    } catch {
        let failure = CError(error)
        copy(failure.message, into: buffer, size: size)
        return failure.status
    }
}

/// Copies `message` into `buffer` as a C string of at most `size` bytes, cut at a character boundary.
func copy(_ message: String, into buffer: UnsafeMutablePointer<CChar>?, size: Int) {
    guard let buffer, size > 0 else { return }
    var bytes = Array(message.utf8)
    if bytes.count >= size {
        bytes = Array(bytes.prefix(size - 1))
        // Drop a UTF-8 sequence cut in the middle (continuation bytes are 10xxxxxx).
        while let last = bytes.last, last & 0xC0 == 0x80 { bytes.removeLast() }
        if let last = bytes.last, last >= 0xC0 { bytes.removeLast() }
    }
    for (i, byte) in bytes.enumerated() { buffer[i] = CChar(bitPattern: byte) }
    buffer[bytes.count] = 0
}
