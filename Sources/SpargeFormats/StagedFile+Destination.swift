#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension StagedFile {
    /// Checks that `path` may be written, before anything is computed for it: its folder exists, its name
    /// leaves room for the temporary suffix, and it does not exist unless `overwrite`.
    ///
    /// With `overwrite` only a regular file, or a symbolic link to one, is replaced: never a folder, a
    /// device, a FIFO or a socket (`--force --output /dev/null` must not replace `/dev/null`), nor a link
    /// to nothing.
    public static func checkDestination(_ path: String, overwrite: Bool) throws {
        let folder = path.contains("/") ? String(path[..<path.lastIndex(of: "/")!]) : "."
        switch FileKind(of: folder.isEmpty ? "/" : folder) {
        case .missing: throw FormatError(path: path, "the folder \(folder) does not exist")
        case .directory: break
        default: throw FormatError(path: path, "\(folder) is not a folder")
        }
        try checkNameLength(path, folder: folder.isEmpty ? "/" : folder)
        switch FileKind(of: path, followingLinks: false) {
        case .missing: return
        case .symbolicLink:
            let target = FileKind(of: path)
            guard target != .missing else {
                throw FormatError(path: path, "is a symbolic link to nothing; remove it or give another name")
            }
            try checkExisting(target, path: path, overwrite: overwrite, through: "a symbolic link to ")
        case let kind:
            try checkExisting(kind, path: path, overwrite: overwrite, through: "")
        }
    }

    private static func checkExisting(_ kind: FileKind, path: String, overwrite: Bool, through: String) throws {
        switch kind {
        case .directory:
            throw FormatError(path: path, "is \(through)a folder; give a file name")
        case .regular:
            guard overwrite else {
                throw FormatError(path: path, "exists; refusing to overwrite it (use --force to replace it)")
            }
        default:
            throw FormatError(path: path, "is \(through)\(kind.described), not a regular file: outputs are written "
                + "only as regular files, and --force replaces only a regular file (or a link to one)")
        }
    }

    /// The file name plus the longest temporary suffix must fit the folder's name limit (`NAME_MAX`).
    private static func checkNameLength(_ path: String, folder: String) throws {
        let name = path.split(separator: "/").last.map(String.init) ?? path
        let limit = pathconf(folder, Int32(_PC_NAME_MAX))
        let maximum = limit > 0 ? limit : 255
        guard name.utf8.count + longestSuffix <= maximum else {
            throw FormatError(path: path, "the file name has \(name.utf8.count) bytes; with the temporary suffix "
                + "('.partial-…', up to \(longestSuffix) bytes) it exceeds this folder's limit of \(maximum) bytes")
        }
    }
}

extension OutputFile {
    /// Writes `bytes` to `path` through a temporary file in the same folder, renamed on success and removed
    /// on failure.
    static func writeWhole(path: String, bytes: [UInt8], overwrite: Bool) throws {
        let staged = try StagedFile.create(path: path, overwrite: overwrite)
        try staged.write(bytes)
        try staged.commit()
    }
}
