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
        return [Float](unsafeUninitializedCapacity: range.count) { out, initialized in
            if range.count > 0 {
                raw.withUnsafeBytes { type.widen($0.baseAddress!, count: range.count, into: out.baseAddress!) }
            }
            initialized = range.count
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
