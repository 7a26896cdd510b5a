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
    private func check(_ cases: [Case], launches: [Launch] = [.single, .ranks(2)]) throws {
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
                let result = Result { try launch.run(["run"] + c.args) }
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

extension Array where Element == String {
    /// These arguments with the value of each `--name` in `paths` replaced.
    fileprivate func replacingPaths(_ paths: [String: String]) -> [String] {
        var out = self
        for (name, path) in paths { out[out.firstIndex(of: "--\(name)")! + 1] = path }
        return out
    }
}
