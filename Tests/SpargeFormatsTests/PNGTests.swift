import Foundation
import SpargeFormats
import SpargeTestSupport
import XCTest

/// A PNG read back by hand: chunks with their CRCs checked, the zlib stream of stored blocks unpacked.
struct DecodedPNG {
    var width = 0, height = 0
    var chunkTypes: [String] = []
    var pixels: [UInt8] = []

    init(_ bytes: [UInt8], file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertEqual(Array(bytes.prefix(8)), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A], "signature",
                       file: file, line: line)
        func u32(_ at: Int) -> Int { bytes[at..<at + 4].reduce(0) { $0 << 8 | Int($1) } }
        var at = 8
        var idat: [UInt8] = []
        while at < bytes.count {
            let length = u32(at)
            let type = String(decoding: bytes[at + 4..<at + 8], as: UTF8.self)
            let body = Array(bytes[at + 8..<at + 8 + length])
            XCTAssertEqual(UInt32(u32(at + 8 + length)), CRC32.checksum(bytes[at + 4..<at + 8 + length]),
                           "CRC of \(type)", file: file, line: line)
            chunkTypes.append(type)
            if type == "IHDR" {
                (width, height) = (u32(at + 8), u32(at + 12))
                XCTAssertEqual(Array(body[8...]), [8, 2, 0, 0, 0], "8-bit RGB", file: file, line: line)
            }
            if type == "IDAT" { idat += body }
            at += 12 + length
        }
        // zlib: CMF/FLG, stored deflate blocks, Adler-32
        XCTAssertEqual((Int(idat[0]) << 8 | Int(idat[1])) % 31, 0, "zlib header check", file: file, line: line)
        var raw: [UInt8] = []
        var p = 2
        while true {
            let final = idat[p] & 1
            XCTAssertEqual(idat[p] >> 1, 0, "a stored block", file: file, line: line)
            let len = Int(idat[p + 1]) | Int(idat[p + 2]) << 8
            let nlen = Int(idat[p + 3]) | Int(idat[p + 4]) << 8
            XCTAssertEqual(len ^ 0xffff, nlen, file: file, line: line)
            raw += idat[p + 5..<p + 5 + len]
            p += 5 + len
            if final == 1 { break }
        }
        let adler: Int = idat[p..<p + 4].reduce(0) { $0 << 8 | Int($1) }
        XCTAssertEqual(UInt32(adler), Adler32.checksum(raw),
                       "Adler-32", file: file, line: line)
        XCTAssertEqual(raw.count, height * (1 + 3 * width), file: file, line: line)
        let stride = 1 + 3 * width
        for y in 0..<height {
            let start: Int = y * stride
            XCTAssertEqual(raw[start], 0, "filter type none", file: file, line: line)
            pixels += raw[(start + 1)..<(start + stride)]
        }
    }
}

final class PNGTests: XCTestCase {
    func testChecksumsKnownValues() {
        XCTAssertEqual(CRC32.checksum(Array("123456789".utf8)), 0xCBF4_3926)
        XCTAssertEqual(CRC32.checksum(Array("IEND".utf8)), 0xAE42_6082, "the CRC every PNG ends with")
        XCTAssertEqual(Adler32.checksum(Array("Wikipedia".utf8)), 0x11E6_0398)
        XCTAssertEqual(Adler32.checksum([UInt8](repeating: 255, count: 100_000)),
                       Self.slowAdler([UInt8](repeating: 255, count: 100_000)), "sums past the modulo window")
    }

    static func slowAdler(_ bytes: [UInt8]) -> UInt32 {
        var (a, b): (UInt32, UInt32) = (1, 0)
        for x in bytes { a = (a + UInt32(x)) % 65521; b = (b + a) % 65521 }
        return b << 16 | a
    }

    /// Sizes that make one stored block, several, and an exact multiple of the 65535-byte block size.
    func testRoundTripPixels() throws {
        for (w, h) in [(1, 1), (7, 3), (300, 200), (21845, 1)] {
            var image = try PNGImage(width: w, height: h)
            for y in 0..<h { for x in 0..<w { image[x, y] = RGB(UInt8(x % 256), UInt8(y % 256), UInt8((x * y) % 251)) } }
            let decoded = try DecodedPNG(image.pngData())
            XCTAssertEqual([decoded.width, decoded.height], [w, h], "\(w)×\(h)")
            XCTAssertEqual(decoded.chunkTypes, ["IHDR", "IDAT", "IEND"])
            XCTAssertEqual(decoded.pixels, image.pixels, "\(w)×\(h)")
        }
    }

    func testWriteIsSafe() throws {
        let folder = try temporaryFolder(self)
        let image = try PNGImage(width: 2, height: 2)
        try image.write(to: "\(folder)/a.png")
        assertFormatError(["\(folder)/a.png", "--force"]) { try image.write(to: "\(folder)/a.png") }
        try image.write(to: "\(folder)/a.png", overwrite: true)
        assertFormatError(["does not exist"]) { try image.write(to: "\(folder)/none/a.png") }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder), ["a.png"])
    }
}

final class MaskImageTests: XCTestCase {
    /// A 3×5 mask: colours at block centres follow the bits and the self-similarity flags.
    func testColoursAndScale() throws {
        let (nq, nk) = (3, 5)
        var bits = [UInt8](repeating: 0, count: 2 * nq * nk)
        for j in 0..<nk { bits[nq * nk + 1 * nk + j] = 1 }  // head 1: row 1 fully on (not self-similar)
        for i in 0..<nq { bits[nq * nk + i * nk + 3] = 1 }  // head 1: column 3 fully on (not self-similar)
        bits[nq * nk + 0 * nk + 0] = 1
        let picture = try MaskImage(bits: bits, heads: 2, queryBlocks: nq, keyBlocks: nk, head: 1,
                                rowNotSelfSimilar: [false, true, false],
                                columnNotSelfSimilar: [false, false, false, true, false])
        let k = picture.pixelsPerBlock
        XCTAssertEqual(k, 1024 / 5)
        XCTAssertEqual(picture.blocksPerPixel, 1)
        let decoded = try DecodedPNG(picture.image.pngData())
        XCTAssertEqual([decoded.width, decoded.height], [nk * k, nq * k])
        func centre(_ i: Int, _ j: Int) -> RGB { picture.image[j * k + k / 2, i * k + k / 2] }
        XCTAssertEqual(centre(0, 0), MaskImage.computed)
        XCTAssertEqual(centre(0, 1), MaskImage.skipped)
        XCTAssertEqual(centre(1, 0), MaskImage.rowTint.computed)
        XCTAssertEqual(centre(1, 3), MaskImage.bothTint.computed)
        XCTAssertEqual(centre(2, 3), MaskImage.columnTint.computed)
        XCTAssertEqual(centre(2, 4), MaskImage.skipped)
        XCTAssertEqual(picture.image[k - 1, k / 2], MaskImage.computed.scaled(85), "grid line")
    }

    /// 5000 key blocks are downsampled by OR: one set bit keeps its pixel dark.
    func testDownsamplingKeepsIsolatedBlocks() throws {
        let (nq, nk) = (2500, 5000)
        var bits = [UInt8](repeating: 0, count: nq * nk)
        bits[1234 * nk + 4321] = 1
        let picture = try MaskImage(bits: bits, heads: 1, queryBlocks: nq, keyBlocks: nk, head: 0)
        XCTAssertEqual(picture.blocksPerPixel, 5)
        XCTAssertEqual(picture.pixelsPerBlock, 1)
        XCTAssertEqual([picture.image.width, picture.image.height], [1000, 500])
        XCTAssertTrue(picture.note.contains("downsampled"))
        XCTAssertEqual(picture.image[4321 / 5, 1234 / 5], MaskImage.computed)
        XCTAssertEqual(picture.image[0, 0], MaskImage.skipped)
    }

    /// A fixture mask drawn to a PNG. The file is kept where `SPARGE_IMAGE_DIR` says, to look at.
    func testFixtureMaskImage() throws {
        let npy = try NPYFile(path: try Fixtures.directory().appendingPathComponent("mask/gqa_sink_mask.npy").path)
        let s = npy.header.shape
        let picture = try MaskImage(bits: try npy.readUInt8(), heads: s[0], queryBlocks: s[1], keyBlocks: s[2], head: 0)
        let decoded = try DecodedPNG(picture.image.pngData())
        XCTAssertEqual([decoded.width, decoded.height], [s[2] * picture.pixelsPerBlock, s[1] * picture.pixelsPerBlock])
        XCTAssertTrue((600...1200).contains(max(decoded.width, decoded.height)))
        if let folder = ProcessInfo.processInfo.environment["SPARGE_IMAGE_DIR"] {
            try picture.image.write(to: "\(folder)/gqa_sink_mask_head0.png", overwrite: true)
        }
    }
}
