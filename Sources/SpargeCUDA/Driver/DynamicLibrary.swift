#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A shared library opened with `dlopen` at run time, so that nothing CUDA is needed to build or to run the
/// CPU path.
struct DynamicLibrary {
    /// The path or name that opened.
    let path: String
    private let handle: UnsafeMutableRawPointer

    /// Opens the first of `candidates` that loads.
    ///
    /// - Parameters:
    ///   - candidates: names for the dynamic loader (`libcuda.so.1`) or absolute paths, tried in order.
    ///   - what: what the library is, for the error (`the CUDA driver`).
    /// - Throws: `CUDAError.libraryNotFound` listing every name tried with the loader's reason.
    static func open(_ candidates: [String], what: String) throws -> DynamicLibrary {
        var tried: [String] = []
        for name in candidates {
            if let handle = dlopen(name, RTLD_NOW | RTLD_LOCAL) {
                return DynamicLibrary(path: name, handle: handle)
            }
            var reason = dlerror().map { String(cString: $0) } ?? "not found"
            if reason.hasPrefix(name + ": ") { reason.removeFirst(name.count + 2) }
            tried.append("\(name): \(reason)")
        }
        throw CUDAError.libraryNotFound(what: what, tried: tried)
    }

    /// The function `name`, as the C function type `T` (a `@convention(c)` type).
    func symbol<T>(_ name: String, as type: T.Type = T.self) throws -> T {
        guard let address = dlsym(handle, name) else {
            throw CUDAError.missingSymbol(name: name, library: path)
        }
        return unsafeBitCast(address, to: T.self)
    }

    /// The function `name`, or nil when the library lacks it.
    func optionalSymbol<T>(_ name: String, as type: T.Type = T.self) -> T? {
        dlsym(handle, name).map { unsafeBitCast($0, to: T.self) }
    }
}
