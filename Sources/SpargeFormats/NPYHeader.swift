import Foundation

/// Element types SpargeRing reads and writes.
public enum ElementType: String, Sendable, CaseIterable {
    case float32, float16, bfloat16, uint8

    /// Bytes per element.
    public var byteSize: Int {
        switch self {
        case .float32: 4
        case .float16, .bfloat16: 2
        case .uint8: 1
        }
    }

    /// The `descr` string NumPy writes for this type. NumPy has no bfloat16; `ml_dtypes` saves it as a
    /// two-byte void type, `<V2`, which is what we read and write for it.
    public var npyDescr: String {
        switch self {
        case .float32: "<f4"
        case .float16: "<f2"
        case .bfloat16: "<V2"
        case .uint8: "|u1"
        }
    }
}

/// The header of a NumPy `.npy` file (format versions 1.0, 2.0 and 3.0).
public struct NPYHeader: Sendable, Equatable {
    /// The element type.
    public var elementType: ElementType
    /// The array's shape.
    public var shape: [Int]
    /// Byte offset of the first element.
    public var dataOffset: Int

    /// Number of elements.
    public var elementCount: Int { shape.reduce(1, *) }

    /// Parses the header of `file`; every failure names the file and what was found.
    public init(reading file: InputFile) throws {
        let path = file.path
        guard file.size >= 10 else { throw FormatError(path: path, "not an .npy file (only \(file.size) bytes)") }
        let prefix = try file.readBytes(count: 10, at: 0)
        guard prefix[0] == 0x93, Array(prefix[1..<6]) == Array("NUMPY".utf8) else {
            throw FormatError(path: path, "not an .npy file (no \\x93NUMPY magic)")
        }
        let major = prefix[6]
        let headerLength: Int
        let headerStart: Int
        switch major {
        case 1:
            headerLength = Int(prefix[8]) | Int(prefix[9]) << 8
            headerStart = 10
        case 2, 3:
            let more = try file.readBytes(count: 12, at: 0)
            headerLength = (0..<4).reduce(0) { $0 | Int(more[8 + $1]) << (8 * $1) }
            headerStart = 12
        default:
            throw FormatError(path: path, "unsupported .npy format version \(major)")
        }
        let text = String(decoding: try file.readBytes(count: headerLength, at: headerStart), as: UTF8.self)
        guard let descr = NPYHeader.value(of: "descr", in: text) else {
            throw FormatError(path: path, "malformed .npy header: no 'descr' in \(text)")
        }
        let descrText = descr.trimmingCharacters(in: CharacterSet(charactersIn: " '\""))
        guard let type = ElementType.allCases.first(where: { $0.npyDescr == descrText })
            ?? (descrText == "<u1" ? .uint8 : nil) else {
            throw FormatError(path: path,
                "unsupported dtype '\(descrText)' (expected float32 '<f4', float16 '<f2', bfloat16 '<V2' or uint8 '|u1')")
        }
        if let fortran = NPYHeader.value(of: "fortran_order", in: text), fortran.hasPrefix("True") {
            throw FormatError(path: path, "Fortran-order arrays are not supported; save with C order")
        }
        guard let open = text.firstIndex(of: "("), let close = text[open...].firstIndex(of: ")") else {
            throw FormatError(path: path, "malformed .npy header: no shape in \(text)")
        }
        let dims = text[text.index(after: open)..<close].split(separator: ",")
            .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        var shape: [Int] = []
        for dim in dims {
            guard let n = Int(dim), n >= 0 else { throw FormatError(path: path, "malformed shape in \(text)") }
            shape.append(n)
        }
        self.elementType = type
        self.shape = shape
        self.dataOffset = headerStart + headerLength
        let needed = dataOffset + elementCount * type.byteSize
        guard file.size >= needed else {
            throw FormatError(path: path,
                "truncated: shape \(shape) of \(type) needs \(needed) bytes, the file has \(file.size)")
        }
    }

    /// The raw text after `'key':` up to the next top-level comma.
    private static func value(of key: String, in text: String) -> Substring? {
        guard let range = text.range(of: "'\(key)':") else { return nil }
        let rest = text[range.upperBound...].drop(while: { $0 == " " })
        return rest.prefix(while: { $0 != "," && $0 != "}" })
    }
}

