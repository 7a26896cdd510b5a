import Foundation
import SpargeFormats
import XCTest

/// Writing .npy files whole and collectively, and never leaving partial output behind.
final class NPYWriterTests: XCTestCase {
    func testHeaderIsAligned() {
        for shape in [[3], [1, 2, 3], [1 << 20, 32, 128], [], [0, 4]] {
            let header = NPYHeader(elementType: .float32, shape: shape)
            XCTAssertEqual(header.dataOffset % 64, 0, "\(shape)")
            XCTAssertEqual(header.encoded().last, UInt8(ascii: "\n"))
        }
        XCTAssertTrue(String(decoding: NPYHeader(elementType: .uint8, shape: [7]).encoded(), as: UTF8.self)
            .contains("'shape': (7,)"), "a 1-D shape is a one-element Python tuple")
    }

    func testWholeRoundTrip() throws {
        let folder = try temporaryFolder(self)
        let values: [Float] = (0..<60).map { Float($0) * 0.37 - 5 }
        try NPYWriter.write(path: "\(folder)/a.npy", shape: [3, 4, 5], values: values)
        let npy = try NPYFile(path: "\(folder)/a.npy")
        XCTAssertEqual(npy.header.shape, [3, 4, 5])
        XCTAssertEqual(try npy.readFloat32(), values)
        let mask: [UInt8] = (0..<24).map { UInt8($0 % 3 == 0 ? 1 : 0) }
        try NPYWriter.write(path: "\(folder)/m.npy", shape: [2, 3, 4], bytes: mask)
        XCTAssertEqual(try NPYFile(path: "\(folder)/m.npy").readUInt8(), mask)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder).sorted(), ["a.npy", "m.npy"],
                       "no temporary file left")
    }

    func testRefusesToOverwriteWithoutForce() throws {
        let folder = try temporaryFolder(self)
        let path = "\(folder)/out.npy"
        try NPYWriter.write(path: path, shape: [2], values: [1, 2])
        assertFormatError([path, "exists", "--force"]) { try NPYWriter.write(path: path, shape: [2], values: [3, 4]) }
        XCTAssertEqual(try NPYFile(path: path).readFloat32(), [1, 2], "the existing file is untouched")
        try NPYWriter.write(path: path, shape: [2], values: [3, 4], overwrite: true)
        XCTAssertEqual(try NPYFile(path: path).readFloat32(), [3, 4])
    }

    /// A file that appears between create and commit is not replaced either.
    func testCommitDoesNotClobberAFileThatAppeared() throws {
        let folder = try temporaryFolder(self)
        let path = "\(folder)/late.npy"
        let writer = try NPYWriter.create(path: path, shape: [1, 2, 1], type: .float32)
        try writeFile(path, [1, 2, 3])
        assertFormatError([path, "exists", "--force"]) { try writer.commit() }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder), ["late.npy"])
        XCTAssertEqual(FileManager.default.contents(atPath: path), Data([1, 2, 3]))
    }

    func testMissingFolder() throws {
        let folder = try temporaryFolder(self)
        let path = "\(folder)/no/such/place/out.npy"
        assertFormatError([path, "the folder \(folder)/no/such/place does not exist"]) {
            try NPYWriter.write(path: path, shape: [1], values: [0])
        }
        assertFormatError([folder, "is a folder"]) { try NPYWriter.write(path: folder, shape: [1], values: [0]) }
    }

    /// Three "ranks" write a zigzag-sharded `[H, N, D]` output into one file, in both layouts: rank 0
    /// creates, the others open by token, all write their own rows, rank 0 commits.
    func testCollectiveWrite() throws {
        let folder = try temporaryFolder(self)
        let (h, n, d) = (2, 12, 3)
        let x = exactValues(heads: h, rows: n, dim: d)
        // 3 ranks, 6 chunks of 2 rows: rank r owns chunks r and 5 - r
        let shards: [[Range<Int>]] = (0..<3).map { r in [(2 * r)..<(2 * r + 2), (2 * (5 - r))..<(2 * (5 - r) + 2)] }
        for layout in TensorLayout.allCases {
            let path = "\(folder)/o_\(layout).npy"
            let fileShape = layout == .hnd ? [h, n, d] : [n, h, d]
            let token = NPYWriter.makeToken()
            let creator = try NPYWriter.create(path: path, shape: fileShape, type: .float32, layout: layout,
                                               token: token)
            // (barrier)
            let others = try (1..<3).map { _ in
                try NPYWriter.open(path: path, shape: fileShape, type: .float32, layout: layout, token: token)
            }
            for (rank, writer) in ([creator] + others).enumerated().reversed() {
                try writer.writeRows(shards[rank], values: slice(x, heads: h, rows: n, dim: d, shards[rank]))
                try writer.finish()
            }
            XCTAssertFalse(FileManager.default.fileExists(atPath: path), "nothing under the final name yet")
            // (barrier)
            try creator.commit()
            let stored = try NPYFile(path: path).readFloat32()
            XCTAssertEqual(stored, layout == .hnd ? x : transposeToNHD(x, heads: h, rows: n, dim: d), "\(layout)")
            XCTAssertEqual(try TensorSource(path: path, layout: layout).readRows(0..<n), x)
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder).sorted(),
                       ["o_hnd.npy", "o_nhd.npy"])
    }

    /// A rank that opens with a different shape is told so; an abort (or a creator dropped without a
    /// commit) leaves no file at all.
    func testMismatchAndAbortLeaveNothing() throws {
        let folder = try temporaryFolder(self)
        let path = "\(folder)/o.npy"
        let creator = try NPYWriter.create(path: path, shape: [2, 8, 4], type: .float32, token: "t1")
        assertFormatError(["\(path).partial-t1", "[2, 8, 4]", "[2, 9, 4]"]) {
            _ = try NPYWriter.open(path: path, shape: [2, 9, 4], type: .float32, token: "t1")
        }
        assertFormatError(["\(path).partial-t2", "cannot open"]) {
            _ = try NPYWriter.open(path: path, shape: [2, 8, 4], type: .float32, token: "t2")
        }
        assertFormatError([path, "80 values", "2 heads × 2 rows × 4"]) {
            try creator.writeRows(0..<2, values: [Float](repeating: 0, count: 80))
        }
        assertFormatError([path, "rows 6..<10", "8 rows"]) {
            try creator.writeRows(6..<10, values: [Float](repeating: 0, count: 32))
        }
        creator.abort()
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder), [])
        do {
            let dropped = try NPYWriter.create(path: path, shape: [1, 1, 1], type: .float32)
            try dropped.writeRows(0..<1, values: [1])
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder), [], "deinit removed it")
    }

    /// A block mask `[H, nq, nk]` written by query-block rows from two "ranks".
    func testUInt8RowsForMasks() throws {
        let folder = try temporaryFolder(self)
        let path = "\(folder)/mask.npy"
        let bits: [UInt8] = (0..<2 * 4 * 5).map { UInt8(($0 * 7) % 3 == 0 ? 1 : 0) }
        /// `[H, Σ count, nk]` of the given row ranges.
        func rows(_ ranges: [Range<Int>]) -> [UInt8] {
            var out: [UInt8] = []
            for h in 0..<2 {
                for r in ranges { out += bits[(h * 4 + r.lowerBound) * 5..<(h * 4 + r.upperBound) * 5] }
            }
            return out
        }
        let writer = try NPYWriter.create(path: path, shape: [2, 4, 5], type: .uint8, token: "m")
        let other = try NPYWriter.open(path: path, shape: [2, 4, 5], type: .uint8, token: "m")
        try writer.writeRows([0..<1, 3..<4], bytes: rows([0..<1, 3..<4]))
        try other.writeRows([1..<3], bytes: rows([1..<3]))
        try other.finish()
        assertFormatError([path, "float rows", "uint8"]) { try writer.writeRows(0..<1, values: [0]) }
        try writer.commit()
        XCTAssertEqual(try NPYFile(path: path).readUInt8(), bits)
    }
}
