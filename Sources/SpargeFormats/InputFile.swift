#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A read-only file read with positioned reads (`pread`), so that each rank reads only its own shard.
public final class InputFile {
    /// The path as given.
    public let path: String
    /// Size in bytes.
    public let size: Int
    private let fd: Int32

    /// Opens `path` for reading; throws a `FormatError` naming the path and the system's reason.
    ///
    /// Only regular files are read. The kind is checked before opening, and the file is opened with
    /// `O_NONBLOCK`, so that a FIFO or a device named as an input is refused at once instead of blocking
    /// in `open` (a FIFO blocks until a writer appears).
    public init(path: String) throws {
        self.path = path
        var st = stat()
        guard stat(path, &st) == 0 else { throw FormatError(path: path, "cannot open: \(String(cString: strerror(errno)))") }
        try Self.requireRegular(FileKind(mode: st.st_mode), path: path)
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else { throw FormatError(path: path, "cannot open: \(String(cString: strerror(errno)))") }
        guard fstat(fd, &st) == 0 else {
            close(fd)
            throw FormatError(path: path, "cannot stat: \(String(cString: strerror(errno)))")
        }
        do { try Self.requireRegular(FileKind(mode: st.st_mode), path: path) } catch { close(fd); throw error }
        self.fd = fd
        self.size = Int(st.st_size)
    }

    private static func requireRegular(_ kind: FileKind, path: String) throws {
        guard kind == .regular else { throw FormatError(path: path, "not a regular file (it is \(kind.described))") }
    }

    deinit { close(fd) }

    /// Reads exactly `count` bytes at `offset` into `buffer`; a short file is a `FormatError` ("truncated").
    public func read(into buffer: UnsafeMutableRawPointer, count: Int, at offset: Int) throws {
        guard offset >= 0, count >= 0, count <= size, offset <= size - count else {
            throw FormatError(path: path,
                "truncated: needs \(count) bytes at offset \(offset) but the file has \(size) bytes")
        }
        var done = 0
        while done < count {
            let n = pread(fd, buffer + done, count - done, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw FormatError(path: path, "read failed: \(String(cString: strerror(errno)))")
            }
            if n == 0 { throw FormatError(path: path, "truncated: unexpected end of file at byte \(offset + done)") }
            done += n
        }
    }

    /// Reads `count` bytes at `offset`.
    public func readBytes(count: Int, at offset: Int) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        try bytes.withUnsafeMutableBytes { try read(into: $0.baseAddress!, count: count, at: offset) }
        return bytes
    }
}

extension InputFile {
    /// Whether `path` names an existing file system entry.
    public static func exists(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0
    }
}
