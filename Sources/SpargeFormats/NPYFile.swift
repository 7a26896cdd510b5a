/// A `.npy` array on disk, read whole or by row ranges.
public struct NPYFile {
    /// The open file.
    public let file: InputFile
    /// Its parsed header.
    public let header: NPYHeader

    /// Opens and parses `path`.
    public init(path: String) throws {
        file = try InputFile(path: path)
        header = try NPYHeader(reading: file)
    }

    /// The whole array as float32 (float16 and bfloat16 are widened); uint8 is an error.
    public func readFloat32() throws -> [Float] {
        try readFloat32(elements: 0..<header.elementCount)
    }

    /// Elements `range` (in C order) as float32.
    public func readFloat32(elements range: Range<Int>) throws -> [Float] {
        let type = header.elementType
        guard type != .uint8 else {
            throw FormatError(path: file.path, "dtype uint8 where a floating-point tensor was expected")
        }
        let raw = try file.readBytes(count: range.count * type.byteSize,
                                     at: header.dataOffset + range.lowerBound * type.byteSize)
        return raw.withUnsafeBytes { bytes in
            (0..<range.count).map { i in
                switch type {
                case .float32: Float(bitPattern: bytes.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))
                case .float16: Float(halfBits: bytes.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
                case .bfloat16:
                    Float(bitPattern: UInt32(bytes.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) << 16)
                case .uint8: 0
                }
            }
        }
    }

    /// The whole array as bytes; only for uint8 arrays.
    public func readUInt8() throws -> [UInt8] {
        guard header.elementType == .uint8 else {
            throw FormatError(path: file.path, "dtype \(header.elementType) where uint8 was expected")
        }
        return try file.readBytes(count: header.elementCount, at: header.dataOffset)
    }
}

extension Float {
    /// Widens IEEE 754 half-precision bits exactly.
    public init(halfBits h: UInt16) {
        let sign = UInt32(h & 0x8000) << 16
        let exponent = Int(h >> 10) & 0x1f
        let mantissa = UInt32(h & 0x3ff)
        if exponent == 0 {
            // zero or subnormal: mantissa · 2^-24
            let magnitude = Float(mantissa) * 0x1p-24
            self = sign != 0 ? -magnitude : magnitude
        } else if exponent == 0x1f {
            self = Float(bitPattern: sign | 0x7f80_0000 | mantissa << 13)
        } else {
            self = Float(bitPattern: sign | UInt32(exponent - 15 + 127) << 23 | mantissa << 13)
        }
    }
}
