#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `close(2)`, reachable from inside a type that has its own `close()`.
private func systemClose(_ fd: Int32) { _ = close(fd) }

/// A file opened for positioned writes (`pwrite`), so that ranks write their rows of one file in place.
///
/// Every raw file-system call of the writers is here; failures become `FormatError`s naming the path and
/// the system's reason.
final class OutputFile {
    let path: String
    private var fd: Int32

    private init(path: String, fd: Int32) {
        self.path = path
        self.fd = fd
    }

    deinit { if fd >= 0 { systemClose(fd) } }

    /// Creates `path`, which must not exist (`O_EXCL`), with mode 0644.
    static func createNew(path: String) throws -> OutputFile {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw systemError(path, "cannot create") }
        return OutputFile(path: path, fd: fd)
    }

    /// Opens the existing file `path` for writing, without truncating it.
    static func openExisting(path: String) throws -> OutputFile {
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw systemError(path, "cannot open for writing") }
        return OutputFile(path: path, fd: fd)
    }

    /// Sets the file's size (new bytes read as zero).
    func resize(to size: Int) throws {
        guard ftruncate(fd, off_t(size)) == 0 else { throw Self.systemError(path, "cannot resize to \(size) bytes") }
    }

    /// Writes `count` bytes from `buffer` at `offset`, retrying short writes.
    func write(_ buffer: UnsafeRawPointer, count: Int, at offset: Int) throws {
        var done = 0
        while done < count {
            let n = pwrite(fd, buffer + done, count - done, off_t(offset + done))
            if n < 0 {
                if errno == EINTR { continue }
                throw Self.systemError(path, "write of \(count) bytes at \(offset) failed")
            }
            done += n
        }
    }

    /// Flushes to stable storage and closes; later writes are a programming error.
    func close() throws {
        guard fd >= 0 else { return }
        let synced = fsync(fd) == 0 || errno == EINVAL  // EINVAL: a file (e.g. a pipe) that cannot sync
        let reason = errno
        systemClose(fd)
        fd = -1
        guard synced else { errno = reason; throw Self.systemError(path, "cannot flush") }
    }

    /// A `FormatError` with the system's reason for the last failure.
    static func systemError(_ path: String, _ what: String) -> FormatError {
        FormatError(path: path, "\(what): \(String(cString: strerror(errno)))")
    }

    /// Moves `source` to `destination`. Without `replacing`, an existing destination is never replaced,
    /// even one that appeared after the caller checked (a hard link fails with `EEXIST`); on file systems
    /// without hard links this falls back to check-then-rename.
    static func move(_ source: String, to destination: String, replacing: Bool) throws {
        if replacing {
            guard rename(source, destination) == 0 else {
                throw systemError(destination, "cannot rename \(source) to it")
            }
            return
        }
        if link(source, destination) == 0 {
            unlink(source)
            return
        }
        if errno == EEXIST {
            throw FormatError(path: destination, "exists; refusing to overwrite it (use --force to replace it)")
        }
        guard FileKind(of: destination, followingLinks: false) == .missing else {
            throw FormatError(path: destination, "exists; refusing to overwrite it (use --force to replace it)")
        }
        guard rename(source, destination) == 0 else { throw systemError(destination, "cannot rename \(source) to it") }
    }

    /// Removes `path`, ignoring failure (used to clean up after another failure).
    static func remove(_ path: String) { unlink(path) }
}
