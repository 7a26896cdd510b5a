/// Everything that can go wrong on the CUDA path, each with a message that says what to do.
public enum CUDAError: Error, CustomStringConvertible, Equatable {
    /// No candidate of a library loaded; `tried` holds each name with the loader's reason.
    case libraryNotFound(what: String, tried: [String])
    /// A library loaded but lacks a function.
    case missingSymbol(name: String, library: String)
    /// A driver call returned an error.
    case driver(call: String, code: Int32, name: String, message: String)
    /// An NVRTC call returned an error (other than a failed compile).
    case nvrtc(call: String, code: Int32, message: String)
    /// NVRTC rejected a kernel source; `log` is NVRTC's log.
    case compile(kernel: String, options: [String], log: String)
    /// The driver loaded but there is no device (or not the one asked for).
    case noDevice(String)
    /// The problem is outside what the CUDA kernels handle (head dimension, tile shape, …).
    case unsupported(String)

    public var description: String {
        switch self {
        case let .libraryNotFound(what, tried):
            return "cannot load \(what); tried:\n" + tried.map { "  \($0)" }.joined(separator: "\n")
        case let .missingSymbol(name, library):
            return "\(library) has no function \(name) (too old a CUDA?)"
        case let .driver(call, code, name, message):
            return "\(call) failed: \(name) (\(code)): \(message)"
        case let .nvrtc(call, code, message):
            return "\(call) failed: \(message) (\(code))"
        case let .compile(kernel, options, log):
            return "NVRTC could not compile \(kernel) (options: \(options.joined(separator: " "))):\n\(log)"
        case let .noDevice(message):
            return "no CUDA device: \(message)"
        case let .unsupported(message):
            return "the cuda backend does not handle this: \(message)"
        }
    }
}
