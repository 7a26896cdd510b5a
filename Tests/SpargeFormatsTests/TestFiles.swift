import Foundation
import SpargeFormats
import XCTest

/// A fresh folder for one test's files, removed when the test ends.
func temporaryFolder(_ test: XCTestCase) throws -> String {
    let url = FileManager.default.temporaryDirectory
        .appendingPathComponent("sparge-formats-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    test.addTeardownBlock { try? FileManager.default.removeItem(at: url) }
    return url.path
}

/// Writes `bytes` to `path`.
func writeFile(_ path: String, _ bytes: [UInt8]) throws {
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}

/// Little-endian bytes of float values in a safetensors dtype.
func encode(_ values: [Float], dtype: String) -> [UInt8] {
    var out: [UInt8] = []
    for v in values {
        switch dtype {
        case "F32": withUnsafeBytes(of: v.bitPattern.littleEndian) { out += $0 }
        case "F16": withUnsafeBytes(of: Float16(v).bitPattern.littleEndian) { out += $0 }
        case "BF16": withUnsafeBytes(of: UInt16(v.bitPattern >> 16).littleEndian) { out += $0 }
        default: fatalError("encode: \(dtype)")
        }
    }
    return out
}

/// A safetensors file built by hand: each tensor is (name, dtype, shape, raw bytes).
func safetensorsBytes(_ tensors: [(name: String, dtype: String, shape: [Int], data: [UInt8])],
                      metadata: String = #"{"format":"pt"}"#) -> [UInt8] {
    var entries: [String] = ["\"__metadata__\":\(metadata)"]
    var data: [UInt8] = []
    for t in tensors {
        let shape = t.shape.map(String.init).joined(separator: ",")
        entries.append("\"\(t.name)\":{\"dtype\":\"\(t.dtype)\",\"shape\":[\(shape)],"
            + "\"data_offsets\":[\(data.count),\(data.count + t.data.count)]}")
        data += t.data
    }
    var header = Array(("{" + entries.joined(separator: ",") + "}").utf8)
    while header.count % 8 != 0 { header.append(UInt8(ascii: " ")) }
    let length = UInt64(header.count)
    return (0..<8).map { UInt8((length >> (8 * UInt64($0))) & 0xff) } + header + data
}

/// Values chosen to be exact in float16 and bfloat16 (small integers over a power of two), with a pattern
/// that differs in every head, row and column.
func exactValues(heads: Int, rows: Int, dim: Int) -> [Float] {
    (0..<heads * rows * dim).map { i in
        let h = i / (rows * dim), r = (i / dim) % rows, c = i % dim
        return Float((h * 37 + r * 11 + c * 5) % 61 - 30) / 8
    }
}

/// `[H, N, D]` → `[N, H, D]`.
func transposeToNHD(_ x: [Float], heads: Int, rows: Int, dim: Int) -> [Float] {
    var out = [Float](repeating: 0, count: x.count)
    for h in 0..<heads { for r in 0..<rows { for c in 0..<dim {
        out[(r * heads + h) * dim + c] = x[(h * rows + r) * dim + c]
    } } }
    return out
}

/// Rows `ranges` of `[H, N, D]` values, concatenated: what `readRows` must return.
func slice(_ x: [Float], heads: Int, rows: Int, dim: Int, _ ranges: [Range<Int>]) -> [Float] {
    var out: [Float] = []
    for h in 0..<heads {
        for r in ranges { out += x[(h * rows + r.lowerBound) * dim..<(h * rows + r.upperBound) * dim] }
    }
    return out
}

/// Asserts that `body` throws a `FormatError` whose description contains every one of `parts`.
func assertFormatError(_ parts: [String], file: StaticString = #filePath, line: UInt = #line,
                       _ body: () throws -> Void) {
    do {
        try body()
        XCTFail("no error; expected one mentioning \(parts)", file: file, line: line)
    } catch let error as FormatError {
        for part in parts where !error.description.contains(part) {
            XCTFail("error \"\(error)\" does not mention \"\(part)\"", file: file, line: line)
        }
    } catch {
        XCTFail("expected a FormatError, got \(error)", file: file, line: line)
    }
}
