#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What a path names in the file system, as `stat(2)` or `lstat(2)` sees it.
enum FileKind: Equatable {
    case missing, regular, directory, symbolicLink, fifo, characterDevice, blockDevice, socket

    /// The kind of `path`, following symbolic links (`stat`), or of the link itself (`lstat`).
    init(of path: String, followingLinks: Bool = true) {
        var st = stat()
        let status = followingLinks ? stat(path, &st) : lstat(path, &st)
        self = status == 0 ? FileKind(mode: st.st_mode) : .missing
    }

    /// The kind encoded in a `st_mode`.
    init(mode: mode_t) {
        switch mode & S_IFMT {
        case S_IFREG: self = .regular
        case S_IFDIR: self = .directory
        case S_IFLNK: self = .symbolicLink
        case S_IFIFO: self = .fifo
        case S_IFCHR: self = .characterDevice
        case S_IFBLK: self = .blockDevice
        default: self = .socket
        }
    }

    /// The kind with an article, for messages: "a FIFO", "a character device".
    var described: String {
        switch self {
        case .missing: "missing"
        case .regular: "a regular file"
        case .directory: "a folder"
        case .symbolicLink: "a symbolic link"
        case .fifo: "a FIFO (named pipe)"
        case .characterDevice: "a character device"
        case .blockDevice: "a block device"
        case .socket: "a socket"
        }
    }
}
