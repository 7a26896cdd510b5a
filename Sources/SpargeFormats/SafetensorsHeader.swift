/// The header of a `.safetensors` file: the tensors it holds, each with dtype, shape and byte range.
///
/// Layout: an 8-byte little-endian header length `n`, then `n` bytes of JSON
/// `{name: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, "__metadata__": {...}}`,
/// then the data; `data_offsets` count from the first byte after the header.
public struct SafetensorsHeader: Sendable {
    /// One tensor's entry.
    public struct Entry: Sendable, Equatable {
        /// The dtype string as written (`F32`, `F16`, `BF16`, `I64`, …).
        public var dtype: String
        /// The element type, where SpargeRing reads this dtype; nil otherwise.
        public var elementType: ElementType? {
            switch dtype {
            case "F32": .float32
            case "F16": .float16
            case "BF16": .bfloat16
            case "U8": .uint8
            default: nil
            }
        }
        public var shape: [Int]
        /// Absolute byte range of the data in the file.
        public var byteRange: Range<Int>
    }

    /// The tensors by name.
    public var entries: [String: Entry]
    /// Byte offset of the data area (8 + header length).
    public var dataStart: Int

    /// The tensor names, sorted.
    public var names: [String] { entries.keys.sorted() }

    /// The largest header accepted (the reference implementation's limit is 100 MB).
    static let maximumHeaderLength = 100_000_000

    /// Whether `prefix` (the first bytes of a file) looks like a safetensors header: a plausible length
    /// followed by `{`. A length beyond the end of the file still counts, so that a truncated file is
    /// reported as truncated rather than as unknown.
    static func looksLike(prefix: [UInt8]) -> Bool {
        guard prefix.count >= 9 else { return false }
        let n = (0..<8).reduce(UInt64(0)) { $0 | UInt64(prefix[$1]) << (8 * UInt64($1)) }
        return n >= 2 && n <= UInt64(maximumHeaderLength) && prefix[8] == UInt8(ascii: "{")
    }

    /// Parses the header of `file`; every failure names the file and what was found.
    ///
    /// As strict as the reference implementation: the header is JSON without repeated names; every tensor
    /// has a dtype, a shape of non-negative integers and `data_offsets` of two integers `begin <= end`;
    /// where the dtype's size is known, the offsets span exactly the shape's bytes; and the tensors cover
    /// the data area without overlaps or gaps, up to the end of the file ("the byte buffer needs to be
    /// entirely indexed, and cannot contain holes"). Every claim is checked against the file's size before
    /// it is used.
    public init(reading file: InputFile) throws {
        let path = file.path
        guard file.size >= 8 else {
            throw FormatError(path: path, "not a .safetensors file (only \(file.size) bytes)")
        }
        let lengthBytes = try file.readBytes(count: 8, at: 0)
        let length = (0..<8).reduce(UInt64(0)) { $0 | UInt64(lengthBytes[$1]) << (8 * UInt64($1)) }
        guard length <= UInt64(Self.maximumHeaderLength) else {
            throw FormatError(path: path, "not a .safetensors file (header length \(length) is implausible)")
        }
        guard Int(length) + 8 <= file.size else {
            throw FormatError(path: path,
                "truncated: the .safetensors header needs \(Int(length) + 8) bytes, the file has \(file.size)")
        }
        let root: JSONValue
        do {
            root = try JSONParser.parse(try file.readBytes(count: Int(length), at: 8))
        } catch let error as JSONSyntaxError {
            throw FormatError(path: path, "not a .safetensors file (its header is not JSON: \(error))")
        }
        guard case .object(let members) = root else {
            throw FormatError(path: path, "not a .safetensors file (its header is not a JSON object)")
        }
        dataStart = 8 + Int(length)
        var relative: [String: (dtype: String, shape: [Int], offsets: Range<Int>)] = [:]
        var seen = Set<String>()
        for (name, value) in members {
            guard seen.insert(name).inserted else {
                throw FormatError(path: path, "malformed .safetensors header: '\(name)' appears twice")
            }
            if name != "__metadata__" { relative[name] = try Self.entry(name, value, path: path) }
        }
        try Self.checkCoverage(relative.mapValues(\.offsets), dataBytes: file.size - dataStart, path: path)
        let start = dataStart
        entries = relative.mapValues {
            Entry(dtype: $0.dtype, shape: $0.shape, byteRange: (start + $0.offsets.lowerBound)..<(start + $0.offsets.upperBound))
        }
    }

    /// One tensor's dtype, shape and data offsets (relative to the data area), each checked on its own.
    private static func entry(_ name: String, _ value: JSONValue, path: String) throws
        -> (dtype: String, shape: [Int], offsets: Range<Int>) {
        func fail(_ what: String) -> FormatError {
            FormatError(path: path, "malformed .safetensors header: tensor '\(name)': \(what)")
        }
        guard case .object(let fields) = value else { throw fail("its entry is not a JSON object") }
        func field(_ key: String) -> JSONValue? { fields.first { $0.key == key }?.value }
        guard case .string(let dtype)? = field("dtype") else { throw fail("no dtype string") }
        guard case .array(let dims)? = field("shape"), let shape = integers(dims), shape.allSatisfy({ $0 >= 0 }) else {
            throw fail("its shape is not a list of non-negative integers (\(field("shape").map(text) ?? "none"))")
        }
        guard case .array(let ends)? = field("data_offsets"), let offsets = integers(ends), offsets.count == 2,
              offsets[0] >= 0 else {
            throw fail("data_offsets must be two non-negative integers [begin, end], found \(field("data_offsets").map(text) ?? "none")")
        }
        guard offsets[0] <= offsets[1] else {
            throw fail("data_offsets [\(offsets[0]), \(offsets[1])] are out of order (begin after end)")
        }
        let span = offsets[1] - offsets[0]
        if let size = elementBytes[dtype] {
            let needed = CheckedSize.bytes(shape: shape, elementBytes: size)
            guard needed == span else {
                throw FormatError(path: path, "tensor '\(name)': its data_offsets span \(span) bytes but shape \(shape) "
                    + "of \(dtype) needs \(needed.map(String.init) ?? "more than \(Int.max)")")
            }
        } else if CheckedSize.product(shape) == nil {
            throw fail("shape \(shape) has more elements than \(Int.max)")
        }
        return (dtype, shape, offsets[0]..<offsets[1])
    }

    /// The tensors must tile `0..<dataBytes` exactly: sorted by offset, each begins where the previous ended.
    private static func checkCoverage(_ offsets: [String: Range<Int>], dataBytes: Int, path: String) throws {
        let sorted = offsets.sorted { ($0.value.lowerBound, $0.value.upperBound, $0.key) < ($1.value.lowerBound, $1.value.upperBound, $1.key) }
        var end = 0
        var previous: (name: String, range: Range<Int>)?
        for (name, range) in sorted {
            if range.lowerBound < end, let previous {
                throw FormatError(path: path, "malformed .safetensors header: the data of tensor '\(name)' "
                    + "(bytes \(range.lowerBound)..<\(range.upperBound)) overlaps that of tensor '\(previous.name)' "
                    + "(bytes \(previous.range.lowerBound)..<\(previous.range.upperBound))")
            }
            if range.lowerBound > end {
                throw FormatError(path: path, "malformed .safetensors header: data bytes \(end)..<\(range.lowerBound) "
                    + "belong to no tensor (a gap before tensor '\(name)')")
            }
            guard range.upperBound <= dataBytes else {
                throw FormatError(path: path, "truncated: tensor '\(name)' needs data bytes \(range.lowerBound)..<\(range.upperBound), "
                    + "the file has \(dataBytes) after its header")
            }
            end = range.upperBound
            previous = (name, range)
        }
        guard end == dataBytes else {
            throw FormatError(path: path, "\(dataBytes - end) bytes after the data of the last tensor"
                + "\(previous.map { " ('\($0.name)')" } ?? "") belong to no tensor")
        }
    }

    /// Bytes per element of the dtypes whose size is known; others (e.g. sub-byte types) are not checked.
    static let elementBytes: [String: Int] = [
        "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
        "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
    ]

    /// The integers of a JSON array, or nil if any item is not an integer that fits `Int`.
    private static func integers(_ items: [JSONValue]) -> [Int]? {
        let numbers = items.compactMap(\.integer)
        return numbers.count == items.count ? numbers : nil
    }

    /// A value as it was written, shortened, for messages.
    private static func text(_ value: JSONValue) -> String {
        switch value {
        case .number(let t): t
        case .string(let s): "\"\(s.prefix(40))\""
        case .array(let items): "[" + items.prefix(8).map(text).joined(separator: ", ") + (items.count > 8 ? ", …" : "") + "]"
        case .object: "{…}"
        case .bool(let b): "\(b)"
        case .null: "null"
        }
    }
}
