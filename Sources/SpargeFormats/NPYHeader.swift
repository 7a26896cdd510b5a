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

    /// Number of elements; `Int.max` for a shape whose product overflows (``init(reading:)`` refuses those).
    public var elementCount: Int { CheckedSize.product(shape) ?? .max }

    /// The longest header accepted: NumPy writes a few hundred bytes for any array SpargeRing reads, and
    /// refuses headers over 10000 bytes itself unless told otherwise.
    static let maximumHeaderLength = 1 << 20

    /// Parses the header of `file`; every failure names the file and what was found.
    ///
    /// Every size the header claims is checked against the file before anything of that size is read or
    /// allocated: the header length, and the shape's byte count, which must end exactly at the end of the
    /// file (NumPy writes nothing after the data).
    public init(reading file: InputFile) throws {
        let path = file.path
        let (headerStart, headerLength) = try Self.headerExtent(file)
        let text = String(decoding: try file.readBytes(count: headerLength, at: headerStart), as: UTF8.self)
        self.elementType = try Self.elementType(in: text, path: path)
        if let fortran = NPYHeader.value(of: "fortran_order", in: text), fortran.hasPrefix("True") {
            throw FormatError(path: path, "Fortran-order arrays are not supported; save with C order")
        }
        self.shape = try Self.shape(in: text, path: path)
        self.dataOffset = headerStart + headerLength
        try checkDataExtent(fileSize: file.size, path: path)
    }

    /// Where the header text starts and how long it claims to be, checked against the file's size.
    private static func headerExtent(_ file: InputFile) throws -> (start: Int, length: Int) {
        let path = file.path
        guard file.size >= 10 else { throw FormatError(path: path, "not an .npy file (only \(file.size) bytes)") }
        let prefix = try file.readBytes(count: 12 <= file.size ? 12 : 10, at: 0)
        guard prefix[0] == 0x93, Array(prefix[1..<6]) == Array("NUMPY".utf8) else {
            throw FormatError(path: path, "not an .npy file (no \\x93NUMPY magic)")
        }
        let major = prefix[6]
        let start: Int, length: Int
        switch major {
        case 1:
            (start, length) = (10, Int(prefix[8]) | Int(prefix[9]) << 8)
        case 2, 3:
            guard prefix.count == 12 else { throw FormatError(path: path, "truncated: the .npy header is cut short") }
            (start, length) = (12, (0..<4).reduce(0) { $0 | Int(prefix[8 + $1]) << (8 * $1) })
        default:
            throw FormatError(path: path, "unsupported .npy format version \(major)")
        }
        guard length <= file.size - start else {
            throw FormatError(path: path,
                "truncated: the .npy header claims \(length) bytes, the file has only \(file.size - start) after its prefix")
        }
        guard length <= maximumHeaderLength else {
            throw FormatError(path: path, "implausible .npy header of \(length) bytes (at most \(maximumHeaderLength) accepted)")
        }
        return (start, length)
    }

    private static func elementType(in text: String, path: String) throws -> ElementType {
        guard let descr = NPYHeader.value(of: "descr", in: text) else {
            throw FormatError(path: path, "malformed .npy header: no 'descr' in \(text)")
        }
        let descrText = descr.trimmingCharacters(in: CharacterSet(charactersIn: " '\""))
        guard let type = ElementType.allCases.first(where: { $0.npyDescr == descrText })
            ?? (descrText == "<u1" ? .uint8 : nil) else {
            throw FormatError(path: path,
                "unsupported dtype '\(descrText)' (expected float32 '<f4', float16 '<f2', bfloat16 '<V2' or uint8 '|u1')")
        }
        return type
    }

    private static func shape(in text: String, path: String) throws -> [Int] {
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
        return shape
    }

    /// The data must fill the file from `dataOffset` to its end, exactly.
    private func checkDataExtent(fileSize: Int, path: String) throws {
        let total = CheckedSize.bytes(shape: shape, elementBytes: elementType.byteSize)
            .flatMap { CheckedSize.sum([$0, dataOffset]) }
        guard let total, total <= fileSize else {
            throw FormatError(path: path, "truncated: shape \(shape) of \(elementType) needs "
                + "\(total.map(String.init) ?? "more than \(Int.max)") bytes, the file has \(fileSize)")
        }
        guard total == fileSize else {
            throw FormatError(path: path, "\(fileSize - total) bytes after the data of shape \(shape) "
                + "of \(elementType) (the array ends at byte \(total), the file has \(fileSize)); "
                + "an .npy file ends with its data")
        }
    }

    /// The raw text after `'key':` up to the next top-level comma.
    private static func value(of key: String, in text: String) -> Substring? {
        guard let range = text.range(of: "'\(key)':") else { return nil }
        let rest = text[range.upperBound...].drop(while: { $0 == " " })
        return rest.prefix(while: { $0 != "," && $0 != "}" })
    }
}

