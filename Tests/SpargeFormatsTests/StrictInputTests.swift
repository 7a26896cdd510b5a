import Foundation
import SpargeFormats
import XCTest

/// Files that lie about their sizes, and files that are ambiguous: each is a `FormatError` naming the file
/// (and the tensor), thrown before anything of the claimed size is read or allocated — never a trap.
final class StrictInputTests: XCTestCase {
    private var folder = ""
    override func setUpWithError() throws { folder = try temporaryFolder(self) }

    /// A safetensors file of one F32 tensor `q` `[1, 2, 2]` whose header is `entries` as written.
    private func safetensors(_ name: String, _ entries: String, data: [UInt8] = [UInt8](repeating: 0, count: 16)) throws -> String {
        let path = "\(folder)/\(name)"
        let json = Array(entries.utf8)
        try writeFile(path, (0..<8).map { UInt8((UInt64(json.count) >> (8 * UInt64($0))) & 0xff) } + json + data)
        return path
    }

    /// A 2 MB file whose version-2 header claims 4 GB of header was read (allocated) whole before the claim
    /// was checked against the file's size.
    func testNPYHeaderLongerThanTheFile() throws {
        let path = "\(folder)/lie.npy"
        try writeFile(path, [0x93] + Array("NUMPY".utf8) + [2, 0, 0, 0, 0, 0xFF] + [UInt8](repeating: 0x20, count: 2_000_000))
        assertFormatError([path, "truncated", "claims 4278190080 bytes"]) { _ = try TensorSource(spec: path) }
    }

    /// A shape whose element count overflows Int trapped in `reduce(1, *)`.
    func testNPYShapeThatOverflows() throws {
        let path = "\(folder)/overflow.npy"
        try writeFile(path, NPYHeader(elementType: .float32, shape: [3, Int.max / 2, 4]).encoded())
        assertFormatError([path, "truncated", "more than \(Int.max)"]) { _ = try TensorSource(spec: path) }
    }

    /// NumPy writes nothing after the data: bytes there mean the shape or the file is not what it seems.
    func testNPYTrailingBytes() throws {
        let path = "\(folder)/trailing.npy"
        try writeFile(path, NPYHeader(elementType: .float32, shape: [1, 2, 2]).encoded() + [UInt8](repeating: 0, count: 16 + 5))
        assertFormatError([path, "5 bytes after the data", "[1, 2, 2]"]) { _ = try TensorSource(spec: path) }
    }

    /// A FIFO blocked in `open()` until a writer came; it must be refused at once. The open runs on another
    /// thread so that a regression fails this test instead of hanging it (a writer then releases it).
    func testFIFOIsRefusedWithoutBlocking() throws {
        let path = "\(folder)/pipe"
        XCTAssertEqual(mkfifo(path, 0o644), 0)
        let done = DispatchSemaphore(value: 0)
        final class Outcome: @unchecked Sendable { var error: Error? }  // written before `done` is signalled
        let outcome = Outcome()
        Thread.detachNewThread {
            do { _ = try InputFile(path: path) } catch { outcome.error = error }
            done.signal()
        }
        if done.wait(timeout: .now() + 5) == .timedOut {
            let fd = open(path, O_WRONLY | O_NONBLOCK)  // releases the blocked open
            XCTFail("opening a FIFO blocked")
            _ = done.wait(timeout: .now() + 5)
            close(fd)
            return
        }
        let error = try XCTUnwrap(outcome.error as? FormatError, "a FIFO was accepted as an input")
        XCTAssertTrue(error.description.contains("not a regular file") && error.description.contains("FIFO"), "\(error)")
    }

    func testSafetensorsOffsetsNearInt64Max() throws {
        let path = try safetensors("far.safetensors",
            #"{"q":{"dtype":"F32","shape":[1,2,2],"data_offsets":[9223372036854775800,9223372036854775807]}}"#)
        assertFormatError([path, "tensor 'q'", "span 7 bytes", "needs 16"]) { _ = try TensorSource(spec: path) }
        let unknown = try safetensors("far-unknown.safetensors",
            #"{"q":{"dtype":"F4","shape":[1,2,2],"data_offsets":[9223372036854775800,9223372036854775807]}}"#)
        assertFormatError([unknown, "tensor 'q'", "belong to no tensor"]) { _ = try SafetensorsHeader(reading: InputFile(path: unknown)) }
    }

    func testSafetensorsShapeThatOverflows() throws {
        let path = try safetensors("overflow.safetensors",
            #"{"q":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,16]}}"#)
        assertFormatError([path, "tensor 'q'", "more than \(Int.max)"]) { _ = try TensorSource(spec: path) }
    }

    /// Each of these was accepted silently: the reference implementation refuses all of them.
    func testAmbiguousSafetensorsHeaders() throws {
        let q = #""q":{"dtype":"F32","shape":[1,2,2],"data_offsets":[0,16]}"#
        let cases: [(name: String, header: String, data: Int, mentions: [String])] = [
            ("duplicate", "{\(q),\(q)}", 16, ["'q' appears twice"]),
            ("fractional", #"{"q":{"dtype":"F32","shape":[1,2,2],"data_offsets":[0,16.0]}}"#, 16,
             ["tensor 'q'", "two non-negative integers", "16.0"]),
            ("reversed", #"{"q":{"dtype":"F32","shape":[1,2,2],"data_offsets":[16,0]}}"#, 16, ["tensor 'q'", "out of order"]),
            ("overlapping", "{\(q),\"k\":{\"dtype\":\"F32\",\"shape\":[1,2,2],\"data_offsets\":[8,24]}}", 24,
             ["tensor 'k'", "overlaps", "tensor 'q'"]),
            ("gap", #"{"q":{"dtype":"F32","shape":[1,2,2],"data_offsets":[4,20]}}"#, 20, ["bytes 0..<4", "belong to no tensor"]),
            ("trailing", "{\(q)}", 20, ["4 bytes after the data", "'q'"]),
            ("fractional shape", #"{"q":{"dtype":"F32","shape":[1,2.5,2],"data_offsets":[0,16]}}"#, 16, ["tensor 'q'", "shape"]),
            ("not JSON", #"{"q":{"dtype":"F32",}}"#, 0, ["not JSON"]),
            ("too deep", String(repeating: "[", count: 200) + String(repeating: "]", count: 200), 0, ["nested deeper"]),
        ]
        for c in cases {
            let path = try safetensors("\(c.name.replacingOccurrences(of: " ", with: "-")).safetensors", c.header,
                                       data: [UInt8](repeating: 0, count: c.data))
            assertFormatError([path] + c.mentions) { _ = try SafetensorsHeader(reading: InputFile(path: path)) }
        }
    }

    /// The same header, well formed, is read: the strictness must not refuse what is valid (including
    /// tensors listed out of offset order, zero-size tensors and escaped names).
    func testWellFormedSafetensorsStillRead() throws {
        let header = #"{"__metadata__":{"format":"pt"},"k\u00e9":{"dtype":"F32","shape":[1,2,2],"data_offsets":[16,32]},"#
            + #""empty":{"dtype":"F32","shape":[0,2,2],"data_offsets":[16,16]},"q":{"dtype":"F32","shape":[1,2,2],"data_offsets":[0,16]}}"#
        let path = try safetensors("good.safetensors", header, data: [UInt8](repeating: 0, count: 32))
        let parsed = try SafetensorsHeader(reading: InputFile(path: path))
        XCTAssertEqual(parsed.names, ["empty", "ké", "q"])
        XCTAssertEqual(parsed.entries["ké"]?.byteRange.count, 16)
    }

    /// `readRows(_:into:)` with a buffer of the wrong size trapped in a `precondition`; library callers get
    /// an error.
    func testReadRowsWithAWrongBufferThrows() throws {
        let path = "\(folder)/q.npy"
        try NPYWriter.write(path: path, shape: [1, 4, 2], values: [Float](repeating: 1, count: 8))
        let source = try TensorSource(spec: path)
        var buffer = [Float](repeating: 0, count: 3)
        assertFormatError([path, "buffer of 3 floats"]) {
            try buffer.withUnsafeMutableBufferPointer { try source.readRows([0..<2], into: $0) }
        }
    }
}
