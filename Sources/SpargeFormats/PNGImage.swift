/// An 8-bit RGB image, written as PNG without zlib.
///
/// The zlib stream holds stored (uncompressed) deflate blocks: images here are a few megabytes at most,
/// and a stored stream is simple enough to check by decoding it in a test. Rows use filter type 0 (none).
public struct PNGImage: Sendable, Equatable {
    public let width: Int
    public let height: Int
    /// `height` rows of `width` RGB triples.
    public var pixels: [UInt8]

    /// A `width × height` image of one colour; an empty or impossibly large size is a `FormatError`.
    public init(width: Int, height: Int, fill: RGB = .white) throws {
        guard width > 0, height > 0, width <= Int(UInt32.max), height <= Int(UInt32.max),
              CheckedSize.product([width, height, 3]) != nil else {
            throw FormatError(path: "PNGImage", "no image of \(width)×\(height) pixels")
        }
        self.width = width
        self.height = height
        self.pixels = [UInt8](repeating: 0, count: width * height * 3)
        for i in 0..<width * height { (pixels[3 * i], pixels[3 * i + 1], pixels[3 * i + 2]) = (fill.r, fill.g, fill.b) }
    }

    /// The colour at column `x`, row `y`.
    public subscript(x: Int, y: Int) -> RGB {
        get {
            let i = 3 * (y * width + x)
            return RGB(pixels[i], pixels[i + 1], pixels[i + 2])
        }
        set {
            let i = 3 * (y * width + x)
            (pixels[i], pixels[i + 1], pixels[i + 2]) = (newValue.r, newValue.g, newValue.b)
        }
    }

    /// The PNG file's bytes.
    public func pngData() -> [UInt8] {
        var out: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
        var ihdr = bigEndian(UInt32(width)) + bigEndian(UInt32(height))
        ihdr += [8, 2, 0, 0, 0]  // bit depth 8, colour type 2 (RGB), deflate, filter set 0, no interlace
        Self.appendChunk("IHDR", ihdr, to: &out)
        Self.appendChunk("IDAT", zlibStored(), to: &out)
        Self.appendChunk("IEND", [], to: &out)
        return out
    }

    /// Writes the PNG to `path` (through a temporary file; an existing file only with `overwrite`).
    public func write(to path: String, overwrite: Bool = false) throws {
        try OutputFile.writeWhole(path: path, bytes: pngData(), overwrite: overwrite)
    }

    /// The scanlines (filter byte 0 + RGB row) as a zlib stream of stored blocks.
    private func zlibStored() -> [UInt8] {
        let rowBytes = 3 * width
        var raw = [UInt8](repeating: 0, count: height * (rowBytes + 1))
        for y in 0..<height {
            raw[y * (rowBytes + 1) + 1..<(y + 1) * (rowBytes + 1)] = pixels[y * rowBytes..<(y + 1) * rowBytes]
        }
        var out: [UInt8] = [0x78, 0x01]  // deflate, 32 KiB window; FCHECK makes 0x7801 a multiple of 31
        out.reserveCapacity(raw.count + raw.count / 65535 * 5 + 16)
        var start = 0
        repeat {
            let count = min(65535, raw.count - start)
            let final: UInt8 = start + count == raw.count ? 1 : 0
            out += [final, UInt8(count & 0xff), UInt8(count >> 8), UInt8(~count & 0xff), UInt8((~count >> 8) & 0xff)]
            out += raw[start..<start + count]
            start += count
        } while start < raw.count
        out += bigEndian(Adler32.checksum(raw))
        return out
    }

    private static func appendChunk(_ type: String, _ data: [UInt8], to out: inout [UInt8]) {
        out += bigEndian(UInt32(data.count))
        let typeAndData = Array(type.utf8) + data
        out += typeAndData
        out += bigEndian(CRC32.checksum(typeAndData))
    }
}

/// An 8-bit RGB colour.
public struct RGB: Sendable, Equatable, Hashable {
    public var r, g, b: UInt8

    public init(_ r: UInt8, _ g: UInt8, _ b: UInt8) {
        (self.r, self.g, self.b) = (r, g, b)
    }

    public static let white = RGB(255, 255, 255)

    /// This colour darkened to `percent` of its brightness.
    public func scaled(_ percent: Int) -> RGB {
        RGB(UInt8(Int(r) * percent / 100), UInt8(Int(g) * percent / 100), UInt8(Int(b) * percent / 100))
    }
}

private func bigEndian(_ x: UInt32) -> [UInt8] { [UInt8(x >> 24), UInt8((x >> 16) & 0xff), UInt8((x >> 8) & 0xff), UInt8(x & 0xff)] }
