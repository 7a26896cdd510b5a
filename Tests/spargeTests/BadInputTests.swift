import Foundation
import SpargeFormats
import SpargeKernels
import SpargeRing
import SpargeTestSupport
import XCTest

/// `sparge run` on bad inputs and outputs, as one process and under `mpirun -np 2`: every case must end with
/// a non-zero status and one message naming the file (and the tensor and shapes where they apply), within
/// the timeout, with no output and no `*.partial-*` file left behind.
final class BadInputTests: XCTestCase {
    /// One bad invocation: the `run` arguments and what the message must mention.
    struct Case {
        let label: String
        let args: [String]
        let mentions: [String]
    }

    private var folder = ""
    private var inputs: SmallInputs!
    private var good: [String] = []  // --q … --k … --v … of valid files
    private var output = "", mask = ""

    override func setUpWithError() throws {
        folder = try scratchFolder(self)
        inputs = try SmallInputs()
        good = try inputs.writeNPY(to: folder)
        output = "\(folder)/out.npy"
        mask = "\(folder)/mask.npy"
    }

    /// `good` with the path of `--name` replaced.
    private func with(_ name: String, _ path: String) -> [String] {
        var args = good
        args[args.firstIndex(of: "--\(name)")! + 1] = path
        return args
    }

    private var outputs: [String] { ["--output", output, "--mask-output", mask] }

    /// Runs every case with every launch, three launches at a time (an `mpirun` that fails spends most of its
    /// second or so waiting, not computing), then asserts in order. The cases fail before writing anything, so
    /// sharing the output paths is safe; a case that did write would fail its own assertions.
    private func check(_ cases: [Case], launches: [Launch] = [.single, .ranks(2)], timeout: TimeInterval = 60) throws {
        let runs = launches.flatMap { launch in cases.map { (launch, $0) } }
        final class Results: @unchecked Sendable {  // written under `lock` only
            var all: [Result<MPIRunResult, Error>?]
            init(_ count: Int) { all = Array(repeating: nil, count: count) }
        }
        let results = Results(runs.count)
        let lock = NSLock()
        let queue = OperationQueue()
        queue.maxConcurrentOperationCount = 3
        for (i, (launch, c)) in runs.enumerated() {
            queue.addOperation {
                let result = Result { try launch.run(["run"] + c.args, timeout: timeout) }
                lock.lock()
                results.all[i] = result
                lock.unlock()
            }
        }
        queue.waitUntilAllOperationsAreFinished()
        for (i, (launch, c)) in runs.enumerated() {
            assertFailsCleanly(try results.all[i]!.get(), mentions: c.mentions, outputs: [output, mask], folder: folder,
                               "\(c.label), \(launch)")
        }
    }

    /// A float32 hnd `.npy` of `shape` (values need not mean anything: these files fail before any use).
    private func npy(_ name: String, _ shape: [Int]) throws -> String {
        let path = "\(folder)/\(name)"
        try NPYWriter.write(path: path, shape: shape, values: [Float](repeating: 0.5, count: shape.reduce(1, *)))
        return path
    }

    func testUnusableFilesAndDisagreeingShapes() throws {
        let (n, d) = (SmallInputs.shape.seqLen, SmallInputs.shape.headDim)
        let notNPY = "\(folder)/notes.npy"
        try Data("these are notes, not an array\n".utf8).write(to: URL(fileURLWithPath: notNPY))
        let truncated = "\(folder)/k-truncated.npy"
        let kBytes = try Data(contentsOf: URL(fileURLWithPath: good[3]))
        try kBytes.prefix(kBytes.count - 100).write(to: URL(fileURLWithPath: truncated))
        let int64 = "\(folder)/v-int64.npy"
        try writeRawNPY(int64, descr: "<i8", shape: [1, n, d], data: [UInt8](repeating: 0, count: n * d * 8))

        let cases = [
            Case(label: "missing file", args: with("q", "\(folder)/missing.npy") + outputs,
                 mentions: ["Q: ", "missing.npy", "No such file"]),
            Case(label: "not an .npy", args: with("q", notNPY) + outputs,
                 mentions: ["Q: ", "notes.npy", "neither an .npy nor a .safetensors"]),
            Case(label: "truncated data", args: with("k", truncated) + outputs,
                 mentions: ["K: ", "k-truncated.npy", "truncated", "[1, \(n), \(d)]"]),
            Case(label: "wrong dtype", args: with("v", int64) + outputs,
                 mentions: ["V: ", "v-int64.npy", "'<i8'"]),
            Case(label: "K's N differs from Q's", args: with("k", try npy("k-short.npy", [1, n - 100, d])) + outputs,
                 mentions: ["k-short.npy", "K (against Q", "[H=1, N=\(n), D=\(d)]", "[H=1, N=\(n - 100), D=\(d)]"]),
            Case(label: "K's D differs from Q's", args: with("k", try npy("k-narrow.npy", [1, n, 8])) + outputs,
                 mentions: ["k-narrow.npy", "K (against Q", "[H=1, N=\(n), D=\(d)]", "[H=1, N=\(n), D=8]"]),
            // Q and V disagree while K agrees with Q: reported as V against K, naming both shapes.
            Case(label: "V's N differs from Q's", args: with("v", try npy("v-short.npy", [1, n - 64, d])) + outputs,
                 mentions: ["v-short.npy", "V (against K", "[H=1, N=\(n), D=\(d)]", "[H=1, N=\(n - 64), D=\(d)]"]),
            Case(label: "V's heads differ from K's", args: with("v", try npy("v-heads.npy", [2, n, d])) + outputs,
                 mentions: ["v-heads.npy", "V (against K", "[H=1, N=\(n), D=\(d)]", "[H=2, N=\(n), D=\(d)]"]),
            Case(label: "Hq not a multiple of Hkv",
                 args: with("q", try npy("q-3heads.npy", [3, n, d])).replacingPaths(["k": try npy("k-2heads.npy", [2, n, d]),
                                                                                       "v": try npy("v-2heads.npy", [2, n, d])]) + outputs,
                 mentions: ["k-2heads.npy", "2 heads", "Q's 3", "multiple of Hkv"]),
            Case(label: "output in a missing folder", args: good + ["--output", "\(folder)/nowhere/out.npy"],
                 mentions: ["nowhere/out.npy", "does not exist"]),
            Case(label: "output is an input", args: good + ["--output", "\(folder)/./q.npy", "--force"],
                 mentions: ["q.npy", "is also an input"]),
            Case(label: "output and mask on one path", args: good + ["--output", output, "--mask-output", output],
                 mentions: ["out.npy", "--output and --mask-output"]),
        ]
        let qBefore = try Data(contentsOf: URL(fileURLWithPath: good[1]))
        try check(cases)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: good[1])), qBefore, "q.npy was changed")
    }

    /// A NaN in rows that only rank 1 reads: rank 1 alone finds it, yet every rank must stop, and the message
    /// must say where it is. An infinity in rank 0's rows of K likewise.
    func testNonFiniteValuesOnOneRankStopEveryRank() throws {
        let n = SmallInputs.shape.seqLen
        let layout = ShardLayout(seqLen: n, ranks: 2, blockQ: 128, blockK: 64, causal: false)
        let rank1 = layout.tokenRanges[1]
        XCTAssertEqual(rank1.count, 1, "non-causal shards are contiguous")
        let row = rank1[0].lowerBound + 10
        XCTAssertFalse(layout.tokenRanges[0].contains { $0.contains(row) }, "row \(row) must be rank 1's alone")

        var q = inputs.q
        q.data[(1 * n + row) * q.dim + 5] = .nan
        let qPath = "\(folder)/q-nan.npy"
        try NPYWriter.write(path: qPath, shape: [q.heads, n, q.dim], values: q.data)
        var k = inputs.k
        k.data[3 * k.dim + 2] = -.infinity
        let kPath = "\(folder)/k-inf.npy"
        try NPYWriter.write(path: kPath, shape: [k.heads, n, k.dim], values: k.data)

        let nan = ["Q: ", "q-nan.npy", "a NaN at head 1, row \(row), column 5"]
        let inf = ["K: ", "k-inf.npy", "-inf at head 0, row 3, column 2"]
        for launch in [Launch.single, .ranks(2)] {
            for (label, args, mentions) in [("NaN", with("q", qPath), nan), ("-inf", with("k", kPath), inf)] {
                let result: MPIRunResult
                if case .ranks(let np) = launch {
                    result = try mpirun(np: np, ["run"] + args + outputs, timeout: 60, reportingRankStatus: true)
                    let statuses = rankExitStatuses(result.stderr)
                    XCTAssertFalse(statuses.values.contains(0), "\(label): a rank exited 0\n\(transcript(result))")
                    let finder = label == "NaN" ? "(rank 1)" : "(rank 0)"
                    XCTAssertTrue(result.stderr.contains(finder), "\(label): only one rank reads it\n\(transcript(result))")
                } else {
                    result = try launch.run(["run"] + args + outputs)
                }
                assertFailsCleanly(result, mentions: mentions, outputs: [output, mask], folder: folder, "\(label), \(launch)")
            }
        }
    }

    /// Files whose sizes lie or overflow, and files that are ambiguous: each must end in one message naming
    /// the file, never in a trap (an overflowing product, `% 0`) nor in a huge allocation (a header that
    /// claims 4 GB in a small file was read whole before it was checked).
    func testMalformedFilesEndInAMessageNotATrap() throws {
        let (n, d) = (SmallInputs.shape.seqLen, SmallInputs.shape.headDim)
        let overflowing = "\(folder)/q-overflow.npy"
        try writeFile(overflowing, NPYHeader(elementType: .float32, shape: [3, Int.max / 2, 4]).encoded() + [0, 0, 0, 0])
        let hugeHeader = "\(folder)/k-huge-header.npy"
        let fake: [UInt8] = [0x93] + Array("NUMPY".utf8) + [2, 0, 0, 0, 0, 0xFF]  // version 2, 4 GB of header
        try writeFile(hugeHeader, fake + [UInt8](repeating: 0x20, count: 2_000_000))
        let trailing = "\(folder)/v-trailing.npy"
        try writeFile(trailing, try Array(Data(contentsOf: URL(fileURLWithPath: good[5]))) + [1, 2, 3])
        let zeroHeads = "\(folder)/k-0heads.npy"
        try NPYWriter.write(path: zeroHeads, shape: [0, n, d], values: [])
        let farOffsets = "\(folder)/far.safetensors"
        try writeFile(farOffsets, rawSafetensors(#"{"q":{"dtype":"F32","shape":[2,\#(n),\#(d)],"data_offsets":[9223372036854775000,9223372036854775807]}}"#))
        let duplicate = "\(folder)/dup.safetensors"
        let bytes = inputs.q.data.withUnsafeBytes { Array($0) }
        let entry = #""q":{"dtype":"F32","shape":[2,\#(n),\#(d)],"data_offsets":[0,\#(bytes.count)]}"#
        try writeFile(duplicate, rawSafetensors("{\(entry),\(entry)}", data: bytes))

        let cases = [
            Case(label: "npy shape overflows", args: with("q", overflowing) + outputs,
                 mentions: ["Q: ", "q-overflow.npy", "truncated", "more than"]),
            Case(label: "npy header claims 4 GB", args: with("k", hugeHeader) + outputs,
                 mentions: ["K: ", "k-huge-header.npy", "header claims"]),
            Case(label: "npy with trailing bytes", args: with("v", trailing) + outputs,
                 mentions: ["V: ", "v-trailing.npy", "3 bytes after the data"]),
            Case(label: "K with 0 heads", args: with("k", zeroHeads).replacingPaths(["v": zeroHeads]) + outputs,
                 mentions: ["k-0heads.npy", "no heads"]),
            Case(label: "safetensors offsets near Int64.max", args: with("q", "\(farOffsets):q") + outputs,
                 mentions: ["Q: ", "far.safetensors", "tensor 'q'"]),
            Case(label: "safetensors duplicate name", args: with("q", "\(duplicate):q") + outputs,
                 mentions: ["Q: ", "dup.safetensors", "'q' appears twice"]),
        ]
        try check(cases)
    }

    /// A FIFO as an input blocked in `open()` until a writer came: it must be refused at once (the launch's
    /// timeout of 10 s turns a block into a failure).
    func testFIFOInputIsRefusedWithoutBlocking() throws {
        let fifo = "\(folder)/q.fifo"
        XCTAssertEqual(mkfifo(fifo, 0o644), 0, "mkfifo")
        try check([Case(label: "FIFO input", args: with("q", fifo) + outputs, mentions: ["Q: ", "q.fifo", "FIFO"])],
                  timeout: 10)
    }

    /// `--force` replaces a regular file, never a FIFO or a device node (as root, `--output /dev/null --force`
    /// replaced `/dev/null`). The node must still be what it was.
    func testForceReplacesOnlyRegularFiles() throws {
        let fifo = "\(folder)/out.fifo"
        XCTAssertEqual(mkfifo(fifo, 0o644), 0, "mkfifo")
        var cases = [Case(label: "FIFO output", args: good + ["--output", fifo, "--force"],
                          mentions: ["out.fifo", "FIFO", "--force replaces only a regular file"])]
        let device = "\(folder)/null.dev"
        let madeDevice = mknod(device, S_IFCHR | 0o666, 0x103) == 0  // makedev(1, 3): /dev/null; needs root
        if madeDevice {
            cases.append(Case(label: "character device output", args: good + ["--output", device, "--force"],
                              mentions: ["null.dev", "character device"]))
        }
        try check(cases)
        XCTAssertEqual(kind(fifo), S_IFIFO, "the FIFO was replaced")
        if madeDevice { XCTAssertEqual(kind(device), S_IFCHR, "the device node was replaced") }
    }

    /// Output paths that cannot be written used to fail only after the whole computation. Rank 1's rows of
    /// Q hold a NaN, found when the inputs are read: the message must be about the output, which proves the
    /// outputs were checked (their temporary files created) before the inputs were read.
    func testUnwritableOutputsFailBeforeComputing() throws {
        let n = SmallInputs.shape.seqLen
        var q = inputs.q
        q.data[(1 * n + n - 5) * q.dim] = .nan
        let qPath = "\(folder)/q-nan.npy"
        try NPYWriter.write(path: qPath, shape: [q.heads, n, q.dim], values: q.data)
        let dangling = "\(folder)/dangling.npy"
        try FileManager.default.createSymbolicLink(atPath: dangling, withDestinationPath: "\(folder)/nowhere/x.npy")
        try FileManager.default.createDirectory(atPath: "\(folder)/sub", withIntermediateDirectories: false)
        let long = "\(folder)/" + String(repeating: "o", count: 240) + ".npy"
        let bad = with("q", qPath)
        let cases = [
            Case(label: "output is a folder", args: bad + ["--output", "\(folder)/sub"], mentions: ["sub", "is a folder"]),
            Case(label: "output in /proc", args: bad + ["--output", "/proc/x.npy"], mentions: ["/proc/x.npy", "cannot create"]),
            Case(label: "output is a dangling link", args: bad + ["--output", dangling, "--force"],
                 mentions: ["dangling.npy", "symbolic link to nothing"]),
            Case(label: "name too long for the suffix", args: bad + ["--output", long],
                 mentions: ["oooo.npy", "exceeds this folder's limit"]),
            Case(label: "mask output is a folder", args: bad + ["--output", output, "--mask-output", "\(folder)/sub"],
                 mentions: ["sub", "is a folder"]),
        ]
        try check(cases)
    }

    /// An existing output is kept without `--force` (and the mask is not written either), and replaced with it.
    func testExistingOutputNeedsForce() throws {
        let old = Data("an older result".utf8)
        try old.write(to: URL(fileURLWithPath: output))
        for launch in [Launch.single, .ranks(2)] {
            let result = try launch.run(["run"] + good + outputs)
            XCTAssertNotEqual(result.status, 0, "\(launch)\n\(transcript(result))")
            XCTAssertEqual(errorLines(result).count, 1, "\(launch)\n\(transcript(result))")
            XCTAssertTrue(result.stderr.contains("out.npy") && result.stderr.contains("--force"), transcript(result))
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: output)), old, "\(launch): output was touched")
            XCTAssertFalse(FileManager.default.fileExists(atPath: mask), "\(launch): mask written")
        }
        let forced = try Launch.single.run(["run"] + good + outputs + ["--force"])
        XCTAssertEqual(forced.status, 0, transcript(forced))
        let (shape, _) = try readFloatNPY(output)
        XCTAssertEqual(shape, [2, SmallInputs.shape.seqLen, SmallInputs.shape.headDim])
    }

    /// chmod 000 stops reads only for non-root users; CI runs as root, where this test is skipped.
    func testUnreadableFile() throws {
        guard getuid() != 0 else {
            throw XCTSkip("running as root: chmod 000 does not stop reads, so an unreadable file cannot be made")
        }
        let path = good[1]
        try FileManager.default.setAttributes([.posixPermissions: 0], ofItemAtPath: path)
        defer { try? FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: path) }
        try check([Case(label: "unreadable file", args: good + outputs, mentions: ["Q: ", "q.npy", "Permission denied"])])
    }
}

/// The file type bits of `path` (not following a link).
private func kind(_ path: String) -> mode_t {
    var st = stat()
    return lstat(path, &st) == 0 ? st.st_mode & S_IFMT : 0
}

private func writeFile(_ path: String, _ bytes: [UInt8]) throws {
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}

/// A `.safetensors` file with `header` as its JSON, written as given (for headers no writer would make).
private func rawSafetensors(_ header: String, data: [UInt8] = []) -> [UInt8] {
    let json = Array(header.utf8)
    return (0..<8).map { UInt8((UInt64(json.count) >> (8 * UInt64($0))) & 0xff) } + json + data
}

extension Array where Element == String {
    /// These arguments with the value of each `--name` in `paths` replaced.
    fileprivate func replacingPaths(_ paths: [String: String]) -> [String] {
        var out = self
        for (name, path) in paths { out[out.firstIndex(of: "--\(name)")! + 1] = path }
        return out
    }
}
