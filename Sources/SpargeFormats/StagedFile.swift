#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An output written under a temporary name next to its final path, `<path>.partial-<token>`, and moved
/// into place by a commit, so that no reader ever sees it half-written.
///
/// The creator (rank 0 of a collective write) creates and commits or removes the temporary file; other
/// ranks observe it (they write into it and know its name, so that a signal on any rank removes it, see
/// ``InterruptCleanup``). An uncommitted temporary file is removed by ``abort()`` or by the creator's
/// deinit. An existing `path` is replaced only with `overwrite`, and only if it is a regular file or a
/// symbolic link to one (see ``checkDestination(_:overwrite:)``).
public final class StagedFile {
    /// The final path.
    public let path: String
    /// Where the data is until the commit.
    public let temporaryPath: String
    /// Whether a commit may replace an existing regular file at `path`.
    public let overwrite: Bool
    /// Whether this process created the temporary file (and so commits or removes it).
    public let isCreator: Bool
    /// Whether the file is in place under `path`.
    public private(set) var isCommitted = false
    private let token: String

    /// The temporary path used for `path` and `token`.
    public static func temporaryPath(for path: String, token: String) -> String { "\(path).partial-\(token)" }

    /// Where a commit keeps the file it replaces until every output of the commit is in place.
    static func previousPath(for path: String, token: String) -> String { "\(path).previous-\(token)" }

    /// A token unlikely to collide with another job's: the process id and 32 random bits, in hex.
    public static func makeToken() -> String {
        String(getpid(), radix: 16) + "-" + String(UInt32.random(in: .min ... .max), radix: 16)
    }

    /// The longest suffix a file name gets from staging: `.previous-` and a token of up to 17 bytes.
    static let longestSuffix = ".previous-".utf8.count + 17

    private init(path: String, token: String, overwrite: Bool, creator: Bool) {
        self.path = path
        self.token = token
        self.temporaryPath = Self.temporaryPath(for: path, token: token)
        self.overwrite = overwrite
        self.isCreator = creator
        InterruptCleanup.register(temporaryPath)
    }

    deinit { if isCreator { abort() } else { InterruptCleanup.unregister(temporaryPath) } }

    /// Checks the destination and creates the empty temporary file for `path` (the creator's step).
    ///
    /// - Parameters:
    ///   - overwrite: replace an existing regular file at commit (default false: an existing file is an error).
    ///   - token: names the temporary file; every rank of a collective write passes the same one.
    public static func create(path: String, overwrite: Bool = false, token: String = makeToken()) throws -> StagedFile {
        try createOpen(path: path, overwrite: overwrite, token: token).staged
    }

    /// ``create(path:overwrite:token:)``, keeping the open file for writing.
    static func createOpen(path: String, overwrite: Bool, token: String) throws -> (staged: StagedFile, file: OutputFile) {
        try checkDestination(path, overwrite: overwrite)
        let file = try OutputFile.createNew(path: temporaryPath(for: path, token: token))
        return (StagedFile(path: path, token: token, overwrite: overwrite, creator: true), file)
    }

    /// The temporary file another process created for `path` and `token` (never committed nor removed here).
    static func observing(path: String, token: String) -> StagedFile {
        StagedFile(path: path, token: token, overwrite: false, creator: false)
    }

    /// Writes `bytes` as the whole content of the temporary file (creator only).
    public func write(_ bytes: [UInt8]) throws {
        guard isCreator, !isCommitted else { throw FormatError(path: path, "written by a process that did not create it, or after its commit") }
        let file = try OutputFile.openExisting(path: temporaryPath)
        try bytes.withUnsafeBytes { if $0.count > 0 { try file.write($0.baseAddress!, count: $0.count, at: 0) } }
        try file.resize(to: bytes.count)
        try file.close()
    }

    /// Moves the temporary file to `path`; on failure it is removed.
    public func commit() throws { try Self.commit([self]) }

    /// Gives up: the creator removes the temporary file.
    public func abort() {
        guard isCreator, !isCommitted else { return }
        OutputFile.remove(temporaryPath)
        InterruptCleanup.unregister(temporaryPath)
    }
}

extension StagedFile {
    /// Commits `files` all or nothing: either every one is in place under its final path, or none of the
    /// final paths changed and every temporary file is removed.
    ///
    /// Every destination is checked again first. A file that a commit replaces (with `overwrite`) is kept
    /// under `<path>.previous-<token>` (a hard link) until every output is in place, so that a failure of
    /// a later rename can put it back; then those links are removed. SIGINT, SIGTERM and SIGHUP are held
    /// back during the commit and delivered after it. Only SIGKILL or a crash between two renames can leave
    /// a `.previous-*` file (the replaced one) or a partial set of outputs.
    ///
    /// - Parameter beforeEach: called with each file's index before it is moved (a seam for tests).
    public static func commit(_ files: [StagedFile], beforeEach: (Int) -> Void = { _ in }) throws {
        let files = files.filter { !$0.isCommitted }
        if let other = files.first(where: { !$0.isCreator }) {
            throw FormatError(path: other.path, "only the process that created the file commits it")
        }
        try InterruptCleanup.deferringSignals {
            do {
                for file in files { try checkDestination(file.path, overwrite: file.overwrite) }
                let previous = try keepReplaced(files)
                try moveAll(files, previous: previous, beforeEach: beforeEach)
                for path in previous.compactMap({ $0 }) { OutputFile.remove(path) }
            } catch {
                for file in files { file.abort() }
                throw error
            }
        }
    }

    /// Hard links to the files that `files` will replace (nil where nothing is replaced).
    private static func keepReplaced(_ files: [StagedFile]) throws -> [String?] {
        var kept: [String?] = []
        for file in files {
            guard file.overwrite, FileKind(of: file.path, followingLinks: false) != .missing else { kept.append(nil); continue }
            let previous = previousPath(for: file.path, token: file.token)
            guard link(file.path, previous) == 0 else {
                let error = OutputFile.systemError(file.path, "cannot keep the existing file as \(previous) while replacing it")
                for path in kept.compactMap({ $0 }) { OutputFile.remove(path) }
                throw error
            }
            kept.append(previous)
        }
        return kept
    }

    /// Renames each file into place; when one fails, puts back what the earlier ones replaced.
    private static func moveAll(_ files: [StagedFile], previous: [String?], beforeEach: (Int) -> Void) throws {
        for (i, file) in files.enumerated() {
            do {
                beforeEach(i)
                try OutputFile.move(file.temporaryPath, to: file.path, replacing: file.overwrite)
            } catch {
                for j in (0..<i).reversed() {
                    if let kept = previous[j] { rename(kept, files[j].path) } else { OutputFile.remove(files[j].path) }
                    files[j].isCommitted = false
                }
                for path in previous.compactMap({ $0 }) { OutputFile.remove(path) }
                throw error
            }
            file.isCommitted = true
            InterruptCleanup.unregister(file.temporaryPath)
        }
    }
}
