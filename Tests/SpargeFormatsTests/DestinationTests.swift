import Foundation
import SpargeFormats
import XCTest

/// Where outputs may be written: `overwrite` (the CLI's `--force`) replaces a regular file or a link to
/// one, nothing else; several outputs commit all or nothing.
final class DestinationTests: XCTestCase {
    private var folder = ""
    override func setUpWithError() throws { folder = try temporaryFolder(self) }

    /// A FIFO or a device node was replaced by a regular file under `overwrite`.
    func testOverwriteNeverReplacesASpecialFile() throws {
        let fifo = "\(folder)/fifo"
        XCTAssertEqual(mkfifo(fifo, 0o644), 0)
        assertFormatError([fifo, "FIFO", "not a regular file"]) {
            try NPYWriter.write(path: fifo, shape: [1, 2], values: [1, 2], overwrite: true)
        }
        XCTAssertEqual(mode(fifo), S_IFIFO, "the FIFO was replaced")
        let link = "\(folder)/fifo-link"
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: fifo)
        assertFormatError([link, "symbolic link to a FIFO"]) { try StagedFile.checkDestination(link, overwrite: true) }
        assertFormatError(["/dev/null", "character device"]) { try StagedFile.checkDestination("/dev/null", overwrite: true) }
    }

    func testDanglingLinkFolderAndLongName() throws {
        let dangling = "\(folder)/dangling"
        try FileManager.default.createSymbolicLink(atPath: dangling, withDestinationPath: "\(folder)/none/x")
        assertFormatError([dangling, "symbolic link to nothing"]) { try StagedFile.checkDestination(dangling, overwrite: true) }
        assertFormatError([folder, "is a folder"]) { try StagedFile.checkDestination(folder, overwrite: true) }
        let long = "\(folder)/" + String(repeating: "x", count: 240)
        assertFormatError([long, "exceeds this folder's limit"]) { try StagedFile.checkDestination(long, overwrite: false) }
    }

    /// What `--force` always did, it still does: replace a regular file, or a link to one (the link itself).
    func testOverwriteReplacesRegularFilesAndLinksToThem() throws {
        let target = "\(folder)/target.npy", link = "\(folder)/link.npy"
        try Data("old".utf8).write(to: URL(fileURLWithPath: target))
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: target)
        try NPYWriter.write(path: link, shape: [1, 2], values: [1, 2], overwrite: true)
        try NPYWriter.write(path: target, shape: [1, 2], values: [3, 4], overwrite: true)
        XCTAssertEqual(mode(link), S_IFREG)
        XCTAssertEqual(try NPYFile(path: target).readFloat32(), [3, 4])
        XCTAssertEqual(try leftovers(), [])
    }

    /// When the second of two renames fails, the first output is undone: a file it replaced is back, byte
    /// for byte, and no temporary or kept file remains.
    func testCommitIsAllOrNothing() throws {
        let first = "\(folder)/out.npy", second = "\(folder)/mask.npy"
        try Data("older result".utf8).write(to: URL(fileURLWithPath: first))
        let a = try NPYWriter.create(path: first, shape: [1, 2], type: .float32, overwrite: true)
        try a.writeRows(0..<2, values: [1, 2])
        try a.finish()
        let b = try NPYWriter.create(path: second, shape: [1, 2], type: .uint8, overwrite: true)
        try b.writeRows([0..<2], bytes: [1, 0])
        try b.finish()
        XCTAssertThrowsError(try StagedFile.commit([a.staged, b.staged]) { index in
            // The second destination turns into a folder after the first rename: its rename fails.
            if index == 1 { try? FileManager.default.createDirectory(atPath: second, withIntermediateDirectories: false) }
        })
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: first)), Data("older result".utf8))
        XCTAssertEqual(mode(second), S_IFDIR)
        XCTAssertEqual(try leftovers(), [])
        XCTAssertFalse(a.staged.isCommitted || b.staged.isCommitted)
    }

    /// Error paths that end a process without unwinding remove every registered temporary file.
    func testRemoveAllRemovesTemporaryFiles() throws {
        let staged = try StagedFile.create(path: "\(folder)/out.png")
        XCTAssertTrue(FileManager.default.fileExists(atPath: staged.temporaryPath))
        InterruptCleanup.removeAll()
        XCTAssertEqual(try leftovers(), [])
    }

    private func leftovers() throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.contains(".partial-") || $0.contains(".previous-") }
    }

    private func mode(_ path: String) -> mode_t {
        var st = stat()
        return lstat(path, &st) == 0 ? st.st_mode & S_IFMT : 0
    }
}

/// Pictures from arguments that describe no image: errors a library caller can handle, not traps.
final class ImageArgumentTests: XCTestCase {
    func testEmptyOrMismatchedImagesThrow() {
        assertFormatError(["0×4"]) { _ = try PNGImage(width: 0, height: 4) }
        assertFormatError(["3 bits for [1, 2, 2]"]) { _ = try MaskImage(bits: [1, 0, 1], heads: 1, queryBlocks: 2, keyBlocks: 2, head: 0) }
        assertFormatError(["head 1 of 1"]) { _ = try MaskImage(bits: [1, 0, 1, 0], heads: 1, queryBlocks: 2, keyBlocks: 2, head: 1) }
    }
}
