import Foundation
import SpargeFormats
import XCTest

/// Reading row ranges from .npy and .safetensors files, in every dtype and layout.
final class TensorSourceTests: XCTestCase {
    /// A chunk of a shard's rows, as the file's row ranges: every position of fresh random range lists and
    /// chunks maps to the row it lies on, in order.
    func testSliceOfRangesIsTheChunksRows() {
        for _ in 0..<200 {
            var ranges: [Range<Int>] = []
            var at = Int.random(in: 0...5)
            for _ in 0..<Int.random(in: 1...3) {
                let n = Int.random(in: 0...7)
                ranges.append(at..<(at + n))
                at += n + Int.random(in: 0...4)
            }
            let rows = ranges.flatMap { Array($0) }
            let lo = Int.random(in: 0...rows.count), hi = Int.random(in: lo...rows.count)
            let sliced = ranges.slice(lo..<hi)
            XCTAssertEqual(sliced.flatMap { Array($0) }, Array(rows[lo..<hi]), "\(ranges) slice \(lo)..<\(hi)")
            XCTAssertFalse(sliced.contains { $0.isEmpty }, "no empty ranges: \(sliced)")
        }
    }

    let (heads, rows, dim) = (3, 40, 8)

    /// Row-range sets every case is read with: whole, one inside, a zigzag pair, empty, single rows.
    var rangeSets: [[Range<Int>]] { [[0..<rows], [5..<17], [0..<8, 32..<40], [10..<10], [39..<40, 0..<1]] }

    func testNPYFloat32RoundTripAndRanges() throws {
        let folder = try temporaryFolder(self)
        let x = exactValues(heads: heads, rows: rows, dim: dim).map { $0 * 1.000_1 }  // not f16-exact: f32 path
        for layout in TensorLayout.allCases {
            let path = "\(folder)/x_\(layout).npy"
            let stored = layout == .hnd ? x : transposeToNHD(x, heads: heads, rows: rows, dim: dim)
            let fileShape = layout == .hnd ? [heads, rows, dim] : [rows, heads, dim]
            try NPYWriter.write(path: path, shape: fileShape, values: stored)
            XCTAssertEqual(try NPYFile(path: path).readFloat32(), stored, "\(layout): whole-file round trip")
            let source = try TensorSource(path: path, layout: layout)
            XCTAssertEqual(source.shape, TensorShape(heads: heads, seqLen: rows, headDim: dim))
            XCTAssertEqual(source.elementType, .float32)
            for ranges in rangeSets {
                XCTAssertEqual(try source.readRows(ranges), slice(x, heads: heads, rows: rows, dim: dim, ranges),
                               "\(layout), ranges \(ranges)")
            }
        }
    }

    func testSafetensorsAllDtypesAndLayouts() throws {
        let folder = try temporaryFolder(self)
        let x = exactValues(heads: heads, rows: rows, dim: dim)
        let nhd = transposeToNHD(x, heads: heads, rows: rows, dim: dim)
        var tensors: [(name: String, dtype: String, shape: [Int], data: [UInt8])] = []
        for dtype in ["F32", "F16", "BF16"] {
            tensors.append(("q_\(dtype)_hnd", dtype, [heads, rows, dim], encode(x, dtype: dtype)))
            tensors.append(("q_\(dtype)_nhd", dtype, [rows, heads, dim], encode(nhd, dtype: dtype)))
        }
        let path = "\(folder)/model.safetensors"
        try writeFile(path, safetensorsBytes(tensors))
        for dtype in ["F32", "F16", "BF16"] {
            for layout in TensorLayout.allCases {
                let name = "q_\(dtype)_\(layout)"
                let source = try TensorSource(spec: "\(path):\(name)", layout: layout)
                XCTAssertEqual(source.tensorName, name)
                XCTAssertEqual(source.shape, TensorShape(heads: heads, seqLen: rows, headDim: dim), name)
                for ranges in rangeSets {
                    XCTAssertEqual(try source.readRows(ranges),
                                   slice(x, heads: heads, rows: rows, dim: dim, ranges), "\(name), \(ranges)")
                }
            }
        }
    }

    /// A safetensors file with one tensor needs no name; the extension does not matter, the content does.
    func testSingleTensorSafetensorsByContent() throws {
        let folder = try temporaryFolder(self)
        let x = exactValues(heads: 2, rows: 5, dim: 4)
        let path = "\(folder)/weights.bin"
        try writeFile(path, safetensorsBytes([("k", "F16", [2, 5, 4], encode(x, dtype: "F16"))]))
        let source = try TensorSource(spec: path)
        XCTAssertEqual(source.tensorName, "k")
        XCTAssertEqual(source.elementType, .float16)
        XCTAssertEqual(try source.readRows(0..<5), x)
    }

    /// An .npy holding float16 widens exactly, by ranges as well as whole.
    func testNPYFloat16Ranges() throws {
        let folder = try temporaryFolder(self)
        let x = exactValues(heads: heads, rows: rows, dim: dim)
        let path = "\(folder)/h.npy"
        try writeFile(path, NPYHeader(elementType: .float16, shape: [heads, rows, dim]).encoded()
            + encode(x, dtype: "F16"))
        let source = try TensorSource(path: path)
        XCTAssertEqual(source.elementType, .float16)
        for ranges in rangeSets {
            XCTAssertEqual(try source.readRows(ranges), slice(x, heads: heads, rows: rows, dim: dim, ranges))
        }
    }

    /// Every one of the 65536 half-precision bit patterns widens to exactly what Swift's `Float16` gives:
    /// normals, subnormals, ±0, ±inf (NaNs compared as NaN).
    func testFloat16WideningIsExact() {
        for bits in 0...UInt16.max {
            let expected = Float(Float16(bitPattern: bits))
            let got = Float(halfBits: bits)
            if expected.isNaN {
                XCTAssertTrue(got.isNaN, "0x\(String(bits, radix: 16))")
            } else if got.bitPattern != expected.bitPattern {
                XCTFail("0x\(String(bits, radix: 16)): \(got) instead of \(expected)")
                return
            }
        }
        XCTAssertEqual(Float(halfBits: 0x0001), 0x1p-24, "smallest subnormal")
        XCTAssertEqual(Float(halfBits: 0x03ff), 1023 * 0x1p-24, "largest subnormal")
        XCTAssertEqual(Float(halfBits: 0x7bff), 65504, "largest normal")
        XCTAssertEqual(Float(halfBits: 0x7c00), .infinity)
        XCTAssertEqual(Float(halfBits: 0xfc00), -.infinity)
    }

    /// `path:tensor` splits at the last colon unless the whole string names an existing file.
    func testSpecParsing() throws {
        let folder = try temporaryFolder(self)
        XCTAssertTrue(TensorSource.parse(spec: "\(folder)/a.safetensors:q") == ("\(folder)/a.safetensors", "q"))
        XCTAssertTrue(TensorSource.parse(spec: "\(folder)/a.npy") == ("\(folder)/a.npy", nil))
        let odd = "\(folder)/odd:name.npy"
        try writeFile(odd, [0])
        XCTAssertTrue(TensorSource.parse(spec: odd) == (odd, nil))
    }
}
