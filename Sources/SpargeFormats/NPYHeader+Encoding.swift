extension NPYHeader {
    /// A header for a C-order array of `shape` and `elementType`; `dataOffset` is set to where its encoding
    /// ends.
    public init(elementType: ElementType, shape: [Int]) {
        self.elementType = elementType
        self.shape = shape
        self.dataOffset = 0
        self.dataOffset = encoded().count
    }

    /// The header bytes: magic, version, length, the dict padded with spaces and a newline so that the data
    /// starts on a 64-byte boundary. Version 1.0 unless the dict needs more than 65535 bytes (then 2.0).
    public func encoded() -> [UInt8] {
        let dims = shape.map(String.init).joined(separator: ", ") + (shape.count == 1 ? "," : "")
        let dict = "{'descr': '\(elementType.npyDescr)', 'fortran_order': False, 'shape': (\(dims)), }"
        var bytes: [UInt8] = [0x93] + Array("NUMPY".utf8)
        let small = dict.utf8.count + 1 + 10 <= 65535
        let prefixLength = small ? 10 : 12
        let padded = (prefixLength + dict.utf8.count + 1 + 63) / 64 * 64
        let length = padded - prefixLength
        bytes += small ? [1, 0, UInt8(length & 0xff), UInt8(length >> 8)]
                       : [2, 0] + (0..<4).map { UInt8((length >> (8 * $0)) & 0xff) }
        bytes += Array(dict.utf8)
        bytes += [UInt8](repeating: UInt8(ascii: " "), count: padded - bytes.count - 1) + [UInt8(ascii: "\n")]
        return bytes
    }
}
