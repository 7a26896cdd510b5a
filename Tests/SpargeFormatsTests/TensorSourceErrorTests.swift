import Foundation
import SpargeFormats
import XCTest

/// Every bad input is a `FormatError` naming the file and, where it applies, the tensor and the shapes.
final class TensorSourceErrorTests: XCTestCase {
    func testMissingFile() throws {
        let path = try temporaryFolder(self) + "/absent.npy"
        assertFormatError([path, "cannot open", "No such file"]) { _ = try TensorSource(spec: path) }
    }

    func testFolderIsNotAFile() throws {
        let folder = try temporaryFolder(self)
        assertFormatError([folder, "not a regular file"]) { _ = try TensorSource(path: folder) }
    }

    func testNeitherFormatByContent() throws {
        let path = try temporaryFolder(self) + "/fake.npy"
        try writeFile(path, Array("<html>not a tensor</html>".utf8))
        assertFormatError([path, "neither an .npy nor a .safetensors"]) { _ = try TensorSource(spec: path) }
        let empty = try temporaryFolder(self) + "/empty.safetensors"
        try writeFile(empty, [])
        assertFormatError([empty, "neither"]) { _ = try TensorSource(spec: empty) }
    }

    func testTruncatedNPY() throws {
        let path = try temporaryFolder(self) + "/short.npy"
        try writeFile(path, NPYHeader(elementType: .float32, shape: [2, 10, 4]).encoded()
            + [UInt8](repeating: 0, count: 100))
        assertFormatError([path, "truncated", "[2, 10, 4]", "448 bytes", "228"]) { _ = try TensorSource(spec: path) }
    }

    func testTruncatedSafetensors() throws {
        let path = try temporaryFolder(self) + "/short.safetensors"
        let full = safetensorsBytes([("q", "F32", [2, 10, 4], [UInt8](repeating: 0, count: 320))])
        try writeFile(path, Array(full.dropLast(7)))
        assertFormatError([path, "truncated", "tensor 'q'"]) { _ = try TensorSource(spec: "\(path):q") }
        // a header longer than the file
        try writeFile(path, Array(full.prefix(20)))
        assertFormatError([path, "truncated"]) { _ = try TensorSource(spec: path) }
    }

    func testOffsetsDisagreeWithShape() throws {
        let path = try temporaryFolder(self) + "/bad.safetensors"
        try writeFile(path, safetensorsBytes([("q", "F32", [2, 10, 4], [UInt8](repeating: 0, count: 300))]))
        assertFormatError([path, "tensor 'q'", "[2, 10, 4]", "300", "320"]) { _ = try TensorSource(spec: path) }
    }

    func testUnsupportedDtypes() throws {
        let folder = try temporaryFolder(self)
        let st = folder + "/ints.safetensors"
        try writeFile(st, safetensorsBytes([("ids", "I64", [1, 2, 2], [UInt8](repeating: 0, count: 32))]))
        assertFormatError([st, "tensor 'ids'", "I64", "F32, F16 and BF16"]) { _ = try TensorSource(spec: st) }
        let npy = folder + "/f64.npy"
        var header = NPYHeader(elementType: .float32, shape: [1, 2, 2]).encoded()
        let at = header.indices.first { Array(header[$0..<$0 + 3]) == Array("<f4".utf8) }!
        header[at + 2] = UInt8(ascii: "8")
        try writeFile(npy, header + [UInt8](repeating: 0, count: 32))
        assertFormatError([npy, "unsupported dtype", "<f8"]) { _ = try TensorSource(spec: npy) }
        let mask = folder + "/mask.npy"
        try NPYWriter.write(path: mask, shape: [1, 2, 2], bytes: [1, 0, 1, 0])
        assertFormatError([mask, "uint8"]) { _ = try TensorSource(spec: mask) }
    }

    func testNot3D() throws {
        let folder = try temporaryFolder(self)
        let npy = folder + "/flat.npy"
        try NPYWriter.write(path: npy, shape: [4, 6], values: [Float](repeating: 1, count: 24))
        assertFormatError([npy, "[4, 6]", "2-D", "expected 3-D", "hnd"]) { _ = try TensorSource(spec: npy) }
        let st = folder + "/four.safetensors"
        try writeFile(st, safetensorsBytes([("v", "F32", [1, 2, 3, 1], [UInt8](repeating: 0, count: 24))]))
        assertFormatError([st, "tensor 'v'", "[1, 2, 3, 1]", "4-D"]) { _ = try TensorSource(spec: st) }
    }

    func testTensorNameNotFoundListsNames() throws {
        let path = try temporaryFolder(self) + "/qkv.safetensors"
        let zeros = [UInt8](repeating: 0, count: 16)
        try writeFile(path, safetensorsBytes([("q", "F32", [1, 1, 4], zeros), ("k", "F32", [1, 1, 4], zeros),
                                              ("v", "F32", [1, 1, 4], zeros)]))
        assertFormatError([path, "no tensor 'o'", "k, q, v"]) { _ = try TensorSource(spec: "\(path):o") }
        assertFormatError([path, "3 tensors", "k, q, v", ":NAME"]) { _ = try TensorSource(spec: path) }
    }

    func testTensorNameOnAnNPY() throws {
        let path = try temporaryFolder(self) + "/q.npy"
        try NPYWriter.write(path: path, shape: [1, 1, 2], values: [1, 2])
        assertFormatError([path, "single array", ":q"]) { _ = try TensorSource(path: path, tensor: "q") }
    }

    func testNonFiniteValuesNamePosition() throws {
        let folder = try temporaryFolder(self)
        let (h, n, d) = (2, 6, 4)
        for (bad, kind) in [(Float.nan, "a NaN"), (.infinity, "+inf"), (-.infinity, "-inf")] {
            var x = exactValues(heads: h, rows: n, dim: d)
            x[(1 * n + 4) * d + 3] = bad   // head 1, row 4, column 3
            let path = "\(folder)/bad.safetensors"
            try? FileManager.default.removeItem(atPath: path)
            try writeFile(path, safetensorsBytes([("k", "F16", [n, h, d],
                                                   encode(transposeToNHD(x, heads: h, rows: n, dim: d), dtype: "F16"))]))
            let source = try TensorSource(spec: "\(path):k", layout: .nhd)
            XCTAssertNoThrow(try source.readRows(0..<4), "rows without the bad value read fine")
            assertFormatError([path, "tensor 'k'", kind, "head 1, row 4, column 3", "[H=2, N=6, D=4]"]) {
                _ = try source.readRows([0..<1, 3..<6])
            }
            source.checksFinite = false
            XCTAssertNoThrow(try source.readRows(0..<6))
        }
    }

    func testRowsOutOfRange() throws {
        let path = try temporaryFolder(self) + "/q.npy"
        try NPYWriter.write(path: path, shape: [1, 4, 2], values: [Float](repeating: 0, count: 8))
        let source = try TensorSource(spec: path)
        assertFormatError([path, "rows 2..<6", "4 rows"]) { _ = try source.readRows(2..<6) }
    }

    func testExpectedShape() throws {
        let path = try temporaryFolder(self) + "/k.npy"
        try NPYWriter.write(path: path, shape: [2, 4, 8], values: [Float](repeating: 0, count: 64))
        let source = try TensorSource(spec: path)
        XCTAssertNoThrow(try source.expect(TensorShape(heads: 2, seqLen: 4, headDim: 8), role: "K"))
        assertFormatError([path, "K", "expected shape [H=2, N=8, D=8]", "found [H=2, N=4, D=8]"]) {
            try source.expect(TensorShape(heads: 2, seqLen: 8, headDim: 8), role: "K")
        }
    }
}
