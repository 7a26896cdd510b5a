import Foundation

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
        let json = try file.readBytes(count: Int(length), at: 8)
        guard let object = try? JSONSerialization.jsonObject(with: Data(json)),
              let table = object as? [String: Any] else {
            throw FormatError(path: path, "not a .safetensors file (its header is not a JSON object)")
        }
        dataStart = 8 + Int(length)
        var entries: [String: Entry] = [:]
        for (name, value) in table where name != "__metadata__" {
            guard let info = value as? [String: Any],
                  let dtype = info["dtype"] as? String,
                  let shape = Self.integers(info["shape"]),
                  let offsets = Self.integers(info["data_offsets"]),
                  offsets.count == 2, offsets[0] >= 0, offsets[0] <= offsets[1],
                  shape.allSatisfy({ $0 >= 0 }) else {
                throw FormatError(path: path,
                    "malformed .safetensors header: tensor '\(name)' lacks a valid dtype, shape or data_offsets")
            }
            entries[name] = Entry(dtype: dtype, shape: shape,
                                  byteRange: (dataStart + offsets[0])..<(dataStart + offsets[1]))
        }
        self.entries = entries
    }

    /// A JSON array of integers, or nil if it is anything else.
    private static func integers(_ value: Any?) -> [Int]? {
        guard let array = value as? [Any] else { return nil }
        let numbers = array.compactMap { ($0 as? NSNumber)?.intValue }
        return numbers.count == array.count ? numbers : nil
    }
}
