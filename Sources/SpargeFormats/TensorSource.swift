/// A 3-D float tensor in a file (`.npy`, or one tensor of a `.safetensors` file), read by row ranges.
///
/// Whatever the file's dtype (float32, float16, bfloat16) and layout (`hnd` or `nhd`), rows come back as
/// float32 in `hnd` order `[H, rows, D]`. Each read fetches only the bytes it needs with positioned reads:
/// one read per head and range for `hnd`, one contiguous read per range for `nhd`. The file kind is decided
/// by content (the `.npy` magic or a plausible safetensors header), not by the extension.
///
/// Rows are checked for NaN and ±inf as they are read (``checksFinite``); the error names the first bad
/// element by tensor, head, row and column.
public final class TensorSource {
    /// The open file.
    public let file: InputFile
    /// The tensor's name inside a `.safetensors` file; nil for `.npy`.
    public let tensorName: String?
    /// The layout the caller declared for the file.
    public let layout: TensorLayout
    /// The element type on disk.
    public let elementType: ElementType
    /// The shape as stored in the file.
    public let fileShape: [Int]
    /// The logical shape (heads, seqLen, headDim).
    public let shape: TensorShape
    /// Whether reads reject NaN and ±inf (default true).
    public var checksFinite = true
    /// Byte offset of element 0.
    public let dataOffset: Int

    /// The file's path.
    public var path: String { file.path }

    /// `path` or `path:tensor`, as a user would write it.
    public var label: String { tensorName.map { "\(path):\($0)" } ?? path }

    /// Splits `path:tensor` into its parts. A string naming an existing file is a path even if it holds a
    /// colon; otherwise the text after the last colon is the tensor name.
    public static func parse(spec: String) -> (path: String, tensor: String?) {
        if InputFile.exists(spec) { return (spec, nil) }
        if let colon = spec.lastIndex(of: ":"), colon != spec.startIndex {
            let name = spec[spec.index(after: colon)...]
            if !name.isEmpty && !name.contains("/") { return (String(spec[..<colon]), String(name)) }
        }
        return (spec, nil)
    }

    /// Opens `spec` (`file.npy`, `file.safetensors:name`, or `file.safetensors` holding one tensor).
    public convenience init(spec: String, layout: TensorLayout = .hnd) throws {
        let (path, tensor) = Self.parse(spec: spec)
        try self.init(path: path, tensor: tensor, layout: layout)
    }

    /// Opens tensor `tensor` of `path` (nil: the `.npy` array, or the only tensor of a `.safetensors`).
    public init(path: String, tensor: String? = nil, layout: TensorLayout = .hnd) throws {
        let file = try InputFile(path: path)
        let prefix = try file.readBytes(count: min(16, file.size), at: 0)
        let type: ElementType
        let shape: [Int]
        if prefix.count >= 6 && prefix[0] == 0x93 && Array(prefix[1..<6]) == Array("NUMPY".utf8) {
            if let tensor {
                throw FormatError(path: path,
                    "is an .npy file, which holds a single array; remove ':\(tensor)' from the input")
            }
            let header = try NPYHeader(reading: file)
            (type, shape, dataOffset) = (header.elementType, header.shape, header.dataOffset)
            tensorName = nil
        } else if SafetensorsHeader.looksLike(prefix: prefix) {
            let header = try SafetensorsHeader(reading: file)
            let names = header.names
            let name: String
            if let tensor {
                guard header.entries[tensor] != nil else {
                    throw FormatError(path: path,
                        "no tensor '\(tensor)'; the file holds \(Self.list(names))")
                }
                name = tensor
            } else {
                guard names.count == 1 else {
                    throw FormatError(path: path, names.isEmpty ? "holds no tensors" :
                        "holds \(names.count) tensors (\(Self.list(names))); name one as \(path):NAME")
                }
                name = names[0]
            }
            let entry = header.entries[name]!
            guard let entryType = entry.elementType, entryType != .uint8 else {
                throw FormatError(path: path,
                    "tensor '\(name)' has dtype \(entry.dtype); supported are F32, F16 and BF16")
            }
            // The header checked both already; kept here because this is what the reads below rely on.
            let needed = CheckedSize.bytes(shape: entry.shape, elementBytes: entryType.byteSize)
            guard entry.byteRange.count == needed else {
                throw FormatError(path: path, "tensor '\(name)': its data_offsets span \(entry.byteRange.count) "
                    + "bytes but shape \(entry.shape) of \(entry.dtype) needs \(needed.map(String.init) ?? "more than \(Int.max)")")
            }
            guard entry.byteRange.upperBound <= file.size else {
                throw FormatError(path: path, "truncated: tensor '\(name)' needs bytes "
                    + "\(entry.byteRange.lowerBound)..<\(entry.byteRange.upperBound), the file has \(file.size)")
            }
            (type, shape, dataOffset) = (entryType, entry.shape, entry.byteRange.lowerBound)
            tensorName = name
        } else {
            let shown = prefix.prefix(8).map { String($0, radix: 16) }.joined(separator: " ")
            throw FormatError(path: path,
                "neither an .npy nor a .safetensors file by its content (first bytes: \(shown))")
        }
        let what = tensorName.map { "tensor '\($0)'" } ?? "the array"
        guard type != .uint8 else {
            throw FormatError(path: path, "\(what) has dtype uint8; expected float32, float16 or bfloat16")
        }
        guard shape.count == 3 else {
            throw FormatError(path: path, "\(what) has shape \(shape) (\(shape.count)-D); expected 3-D "
                + (layout == .hnd ? "[heads, seqLen, headDim] (layout hnd)" : "[seqLen, heads, headDim] (layout nhd)"))
        }
        self.file = file
        self.layout = layout
        self.elementType = type
        self.fileShape = shape
        self.shape = layout.logicalShape(shape)
    }

    /// Throws unless the tensor has `expected` shape; `role` (e.g. "K") names it in the message.
    public func expect(_ expected: TensorShape, role: String) throws {
        guard shape == expected else {
            throw FormatError(path: path, "\(role)\(tensorName.map { " (tensor '\($0)')" } ?? ""): "
                + "expected shape \(expected) = \(layout.fileShape(expected)) in layout \(layout), "
                + "found \(shape) = \(fileShape)")
        }
    }

    /// Rows `rows` of every head as float32, `[H, rows.count, D]` in `hnd` order.
    public func readRows(_ rows: Range<Int>) throws -> [Float] {
        try readRows([rows])
    }

    /// The rows of every range, concatenated in the order given: `[H, Σ count, D]` in `hnd` order.
    /// A causal zigzag shard is two ranges.
    public func readRows(_ ranges: [Range<Int>]) throws -> [Float] {
        for r in ranges where r.lowerBound < 0 || r.upperBound > shape.seqLen {
            throw FormatError(path: path, "rows \(r.lowerBound)..<\(r.upperBound) requested from "
                + "\(tensorName.map { "tensor '\($0)'" } ?? "the array") of shape \(shape), which has \(shape.seqLen) rows")
        }
        let total = ranges.reduce(0) { $0 + $1.count }
        guard let count = CheckedSize.product([shape.heads, total, shape.headDim]) else {
            throw FormatError(path: path, "readRows: \(total) rows of shape \(shape) are more than \(Int.max) floats")
        }
        return try [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            try readRows(ranges, into: buffer)
            initialized = count
        }
    }

    /// Reads the rows of `ranges` into `buffer`, which must hold exactly `H · Σ count · D` floats; rows
    /// outside the tensor and a buffer of another size are `FormatError`s.
    public func readRows(_ ranges: [Range<Int>], into buffer: UnsafeMutableBufferPointer<Float>) throws {
        let (heads, n, d) = (shape.heads, shape.seqLen, shape.headDim)
        for r in ranges where r.lowerBound < 0 || r.upperBound > n {
            throw FormatError(path: path, "rows \(r.lowerBound)..<\(r.upperBound) requested from "
                + "\(tensorName.map { "tensor '\($0)'" } ?? "the array") of shape \(shape), which has \(n) rows")
        }
        let total = ranges.reduce(0) { $0 + $1.count }  // each count is at most n: no overflow in practice
        guard buffer.count == CheckedSize.product([heads, total, d]) else {
            throw FormatError(path: path, "readRows: a buffer of \(buffer.count) floats for \(heads) heads × "
                + "\(total) rows × \(d) of \(tensorName.map { "tensor '\($0)'" } ?? "the array")")
        }
        guard let out = buffer.baseAddress, total > 0 else { return }
        let size = elementType.byteSize
        // float32 in hnd order needs no conversion: read straight into the output (little-endian hosts).
        let direct = elementType == .float32 && layout == .hnd && 1.littleEndian == 1
        var scratch = [UInt8](repeating: 0, count: direct ? 0 : ranges.map { r in
            layout == .hnd ? r.count * d * size : r.count * heads * d * size }.max() ?? 0)
        try scratch.withUnsafeMutableBytes { raw in
            var row0 = 0  // first output row of the current range
            for r in ranges where !r.isEmpty {
                switch layout {
                case .hnd:
                    for h in 0..<heads {
                        let destination = out + (h * total + row0) * d
                        let offset = dataOffset + (h * n + r.lowerBound) * d * size
                        if direct {
                            try file.read(into: destination, count: r.count * d * size, at: offset)
                        } else {
                            try file.read(into: raw.baseAddress!, count: r.count * d * size, at: offset)
                            elementType.widen(raw.baseAddress!, count: r.count * d, into: destination)
                        }
                    }
                case .nhd:
                    try file.read(into: raw.baseAddress!, count: r.count * heads * d * size,
                                  at: dataOffset + r.lowerBound * heads * d * size)
                    for i in 0..<r.count {
                        for h in 0..<heads {
                            elementType.widen(raw.baseAddress! + (i * heads + h) * d * size, count: d,
                                              into: out + (h * total + row0 + i) * d)
                        }
                    }
                }
                row0 += r.count
            }
        }
        if checksFinite { try checkFinite(UnsafeBufferPointer(buffer), ranges: ranges, total: total) }
    }

    /// Throws naming the first NaN or ±inf of `values` (`[H, total, D]` over `ranges`).
    private func checkFinite(_ values: UnsafeBufferPointer<Float>, ranges: [Range<Int>], total: Int) throws {
        // A fast pass on the common all-finite case, then the position of the first offender in file order.
        var allFinite = true
        for x in values where !x.isFinite { allFinite = false; break }
        if allFinite { return }
        let d = shape.headDim
        for h in 0..<shape.heads {
            var row0 = 0
            for r in ranges {
                for i in 0..<r.count {
                    for c in 0..<d {
                        let x = values[(h * total + row0 + i) * d + c]
                        if !x.isFinite {
                            let kind = x.isNaN ? "a NaN" : (x > 0 ? "+inf" : "-inf")
                            throw FormatError(path: path, "\(tensorName.map { "tensor '\($0)'" } ?? "the array") "
                                + "has \(kind) at head \(h), row \(r.lowerBound + i), column \(c) (shape \(shape))")
                        }
                    }
                }
                row0 += r.count
            }
        }
    }

    private static func list(_ names: [String]) -> String {
        names.count <= 20 ? names.joined(separator: ", ")
            : names.prefix(20).joined(separator: ", ") + ", … (\(names.count) in all)"
    }
}

extension Array where Element == Range<Int> {
    /// The part of these row ranges, laid end to end, at positions `local`: `[0..<4, 10..<14].slice(2..<6)` is
    /// `[2..<4, 10..<12]` (a chunk of a shard's rows, as the file's row ranges to read).
    public func slice(_ local: Range<Int>) -> [Range<Int>] {
        var out: [Range<Int>] = []
        var start = 0
        for r in self {
            let lo = Swift.max(local.lowerBound, start), hi = Swift.min(local.upperBound, start + r.count)
            if lo < hi { out.append((r.lowerBound + lo - start)..<(r.lowerBound + hi - start)) }
            start += r.count
        }
        return out
    }
}
