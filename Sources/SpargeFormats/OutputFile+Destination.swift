extension OutputFile {
    /// Checks that `path` may be written: its folder exists, it is not a folder, and it does not exist
    /// unless `overwrite`.
    static func checkDestination(_ path: String, overwrite: Bool) throws {
        let folder = path.contains("/") ? String(path[..<path.lastIndex(of: "/")!]) : "."
        switch kind(of: folder.isEmpty ? "/" : folder) {
        case .missing: throw FormatError(path: path, "the folder \(folder) does not exist")
        case .other: throw FormatError(path: path, "\(folder) is not a folder")
        case .directory: break
        }
        switch kind(of: path) {
        case .directory: throw FormatError(path: path, "is a folder; give a file name")
        case .other where !overwrite:
            throw FormatError(path: path, "exists; refusing to overwrite it (use --force to replace it)")
        default: break
        }
    }

    /// Writes `bytes` to `path` through a temporary file in the same folder, renamed on success and removed
    /// on failure.
    static func writeWhole(path: String, bytes: [UInt8], overwrite: Bool) throws {
        try checkDestination(path, overwrite: overwrite)
        let temporary = NPYWriter.temporaryPath(for: path, token: NPYWriter.makeToken())
        let file = try createNew(path: temporary)
        do {
            try bytes.withUnsafeBytes { if $0.count > 0 { try file.write($0.baseAddress!, count: $0.count, at: 0) } }
            try file.close()
            try move(temporary, to: path, replacing: overwrite)
        } catch {
            remove(temporary)
            throw error
        }
    }
}
