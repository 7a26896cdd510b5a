#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes a `.npy` file whole, or collectively: several ranks each write their own rows of one file.
///
/// Output is never left half-written under its final name: data goes to a temporary file in the same folder,
/// `<path>.partial-<token>`, which ``commit()`` renames to `path`; ``abort()`` (or the creator's deinit
/// without a commit) removes it. An existing `path` is replaced only with `overwrite` (the CLI's `--force`).
///
/// ## Collective protocol
/// SpargeFormats has no MPI, so the caller provides the barriers and the agreement on success:
/// 1. All ranks agree on a `token` (rank 0 picks one, e.g. ``makeToken()``, and broadcasts it).
/// 2. Rank 0 calls ``create(path:shape:type:layout:overwrite:token:)``: it checks the folder and the
///    overwrite rule, creates the temporary file with its header and full size.
/// 3. **Barrier**, and agree that step 2 succeeded (e.g. allreduce of an ok flag); on failure all ranks stop.
/// 4. The other ranks call ``open(path:shape:type:layout:token:)``, which checks that the header matches.
/// 5. Every rank calls ``writeRows(_:values:)`` for its own rows, then ``finish()`` (flush and close).
/// 6. **Barrier**, and agree that every rank succeeded.
/// 7. Rank 0 calls ``commit()`` if all succeeded, otherwise ``abort()``; no partial output remains.
/// A single process does 2, 5 and 7 (or uses ``write(path:shape:values:overwrite:)``).
public final class NPYWriter {
    /// The temporary file and its final path.
    public let staged: StagedFile
    /// The array's shape as written in the header.
    public let shape: [Int]
    /// float32 or uint8.
    public let elementType: ElementType
    /// How ``writeRows(_:values:)`` maps its `hnd`-ordered rows onto the file.
    public let layout: TensorLayout
    /// Byte offset of the first element.
    public let dataOffset: Int

    /// The final path.
    public var path: String { staged.path }
    /// Where the data is written until ``commit()``.
    public var temporaryPath: String { staged.temporaryPath }
    /// Whether this writer created the temporary file (and so may commit or remove it).
    public var isCreator: Bool { staged.isCreator }
    /// Whether a commit replaces an existing file.
    public var overwrite: Bool { staged.overwrite }

    private var file: OutputFile?

    /// The temporary path used for `path` and `token`.
    public static func temporaryPath(for path: String, token: String) -> String {
        StagedFile.temporaryPath(for: path, token: token)
    }

    /// A token unlikely to collide with another job's: the process id and 32 random bits, in hex.
    public static func makeToken() -> String { StagedFile.makeToken() }

    private init(staged: StagedFile, shape: [Int], type: ElementType, layout: TensorLayout, file: OutputFile) {
        self.staged = staged
        self.shape = shape
        self.elementType = type
        self.layout = layout
        self.dataOffset = NPYHeader(elementType: type, shape: shape).dataOffset
        self.file = file
    }

    /// Creates the temporary file for `path` with its header and full size (rank 0 of a collective write).
    ///
    /// - Parameters:
    ///   - shape: the file's shape; `writeRows` needs at least 2 dimensions (`[H, N, …]` for `hnd`,
    ///     `[N, H, …]` for `nhd`).
    ///   - type: `.float32` or `.uint8`.
    ///   - overwrite: replace an existing regular file at commit (default false: an existing file is an error).
    ///   - token: names the temporary file; every rank must pass the same one (default: a fresh one).
    public static func create(path: String, shape: [Int], type: ElementType, layout: TensorLayout = .hnd,
                              overwrite: Bool = false, token: String = makeToken()) throws -> NPYWriter {
        guard type == .float32 || type == .uint8 else {
            throw FormatError(path: path, "can write float32 or uint8 arrays, not \(type)")
        }
        guard let bytes = CheckedSize.bytes(shape: shape, elementBytes: type.byteSize) else {
            throw FormatError(path: path, "shape \(shape) is negative or has more bytes than \(Int.max)")
        }
        let (staged, file) = try StagedFile.createOpen(path: path, overwrite: overwrite, token: token)
        let writer = NPYWriter(staged: staged, shape: shape, type: type, layout: layout, file: file)
        // From here the staged file's deinit removes the temporary file if anything throws.
        let header = NPYHeader(elementType: type, shape: shape).encoded()
        try header.withUnsafeBytes { try file.write($0.baseAddress!, count: header.count, at: 0) }
        try file.resize(to: header.count + bytes)
        return writer
    }

    /// Opens the temporary file another rank created for `path` and `token` (step 4 of the protocol), after
    /// checking that its header has `shape` and `type`.
    public static func open(path: String, shape: [Int], type: ElementType, layout: TensorLayout = .hnd,
                            token: String) throws -> NPYWriter {
        let temporary = temporaryPath(for: path, token: token)
        let header = try NPYHeader(reading: InputFile(path: temporary))
        guard header.shape == shape, header.elementType == type else {
            throw FormatError(path: temporary, "expected a \(type) array of shape \(shape), "
                + "found \(header.elementType) of shape \(header.shape) (ranks disagree on the output?)")
        }
        return NPYWriter(staged: .observing(path: path, token: token), shape: shape, type: type, layout: layout,
                         file: try OutputFile.openExisting(path: temporary))
    }

    /// Writes rows `rows` of every head from `values`, `[H, rows.count, …]` in `hnd` order (float32 files).
    public func writeRows(_ rows: Range<Int>, values: [Float]) throws {
        try writeRows([rows], values: values)
    }

    /// Writes the rows of every range from `values`, `[H, Σ count, …]` in `hnd` order (float32 files):
    /// one write per head and range for `hnd`, one contiguous write per range for `nhd`.
    public func writeRows(_ ranges: [Range<Int>], values: [Float]) throws {
        guard elementType == .float32 else {
            throw FormatError(path: path, "float rows written to a \(elementType) array")
        }
        try values.withUnsafeBytes { try writeRows(ranges, raw: $0, count: values.count) }
    }

    /// Writes the rows of every range from `bytes`, `[H, Σ count, …]` in `hnd` order (uint8 files, e.g. a
    /// block mask `[H, nq, nk]` whose rows are query blocks).
    public func writeRows(_ ranges: [Range<Int>], bytes: [UInt8]) throws {
        guard elementType == .uint8 else {
            throw FormatError(path: path, "uint8 rows written to a \(elementType) array")
        }
        try bytes.withUnsafeBytes { try writeRows(ranges, raw: $0, count: bytes.count) }
    }

    private func writeRows(_ ranges: [Range<Int>], raw: UnsafeRawBufferPointer, count: Int) throws {
        guard let file else { throw FormatError(path: path, "written after finish(), commit() or abort()") }
        guard shape.count >= 2 else {
            throw FormatError(path: path, "rows need an array of at least 2 dimensions, not \(shape)")
        }
        let (heads, n) = layout == .hnd ? (shape[0], shape[1]) : (shape[1], shape[0])
        let rowElements = CheckedSize.product(Array(shape.dropFirst(2))) ?? 0
        let total = ranges.reduce(0) { $0 + $1.count }
        guard count == CheckedSize.product([heads, total, rowElements]) else {
            throw FormatError(path: path, "\(count) values for \(heads) heads × \(total) rows × \(rowElements) "
                + "(array shape \(shape), layout \(layout))")
        }
        for r in ranges where r.lowerBound < 0 || r.upperBound > n {
            throw FormatError(path: path, "rows \(r.lowerBound)..<\(r.upperBound) outside an array of \(n) rows "
                + "(shape \(shape), layout \(layout))")
        }
        guard count > 0 else { return }
        let size = elementType.byteSize
        let rowBytes = rowElements * size
        var row0 = 0
        var scratch: [UInt8] = []
        for r in ranges where !r.isEmpty {
            switch layout {
            case .hnd:
                for h in 0..<heads {
                    try file.write(raw.baseAddress! + (h * total + row0) * rowBytes, count: r.count * rowBytes,
                                   at: dataOffset + (h * n + r.lowerBound) * rowBytes)
                }
            case .nhd:
                if scratch.count < r.count * heads * rowBytes {
                    scratch = [UInt8](repeating: 0, count: r.count * heads * rowBytes)
                }
                scratch.withUnsafeMutableBytes { out in
                    for i in 0..<r.count {
                        for h in 0..<heads {
                            (out.baseAddress! + (i * heads + h) * rowBytes).copyMemory(
                                from: raw.baseAddress! + (h * total + row0 + i) * rowBytes, byteCount: rowBytes)
                        }
                    }
                }
                try scratch.withUnsafeBytes {
                    try file.write($0.baseAddress!, count: r.count * heads * rowBytes,
                                   at: dataOffset + r.lowerBound * heads * rowBytes)
                }
            }
            row0 += r.count
        }
    }

    /// Flushes this rank's writes to storage and closes the file (step 5; before the final barrier).
    public func finish() throws {
        let open = file
        file = nil
        try open?.close()
    }

    /// Moves the finished temporary file to `path` (rank 0, after every rank finished).
    ///
    /// Without `overwrite`, a file that appeared at `path` since ``create`` is not replaced: that is an error
    /// and the temporary file is removed. Several outputs commit together with ``StagedFile/commit(_:beforeEach:)``.
    public func commit() throws {
        guard isCreator else {
            throw FormatError(path: path, "only the rank that created the file commits it")
        }
        do {
            try finish()
        } catch {
            abort()
            throw error
        }
        try staged.commit()
    }

    /// Gives up: closes the file; the creator also removes the temporary file.
    public func abort() {
        file = nil
        staged.abort()
    }

    /// Writes a whole float32 array of `shape` to `path` (single process).
    public static func write(path: String, shape: [Int], values: [Float], overwrite: Bool = false) throws {
        try values.withUnsafeBytes {
            try writeWhole(path: path, shape: shape, type: .float32, overwrite: overwrite, raw: $0)
        }
    }

    /// Writes a whole uint8 array of `shape` to `path` (single process).
    public static func write(path: String, shape: [Int], bytes: [UInt8], overwrite: Bool = false) throws {
        try bytes.withUnsafeBytes {
            try writeWhole(path: path, shape: shape, type: .uint8, overwrite: overwrite, raw: $0)
        }
    }

    private static func writeWhole(path: String, shape: [Int], type: ElementType, overwrite: Bool,
                                   raw: UnsafeRawBufferPointer) throws {
        guard let count = CheckedSize.product(shape), raw.count == CheckedSize.product([count, type.byteSize]) else {
            throw FormatError(path: path, "\(raw.count / type.byteSize) values for shape \(shape)")
        }
        let writer = try create(path: path, shape: shape, type: type, overwrite: overwrite)
        if count > 0 {
            try writer.file!.write(raw.baseAddress!, count: raw.count, at: writer.dataOffset)
        }
        try writer.commit()
    }
}
