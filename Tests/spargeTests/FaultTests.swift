import Foundation
import SpargeFormats
import SpargeTestSupport
import XCTest

/// Faults around a run rather than in its files: ranks asked to do different things, `--help` under
/// `mpirun`, sizes beyond the machine, signals while the output is being written, and a commit of two
/// outputs that fails halfway. Each must end every rank within seconds with one message, no trap, and no
/// file left or changed.
final class FaultTests: XCTestCase {
    private var folder = ""
    private var good: [String] = []
    private var output = "", mask = ""

    override func setUpWithError() throws {
        folder = try scratchFolder(self)
        good = try SmallInputs().writeNPY(to: folder)
        output = "\(folder)/out.npy"
        mask = "\(folder)/mask.npy"
    }

    /// MPMD launches whose ranks differ in the command or in `--help` deadlocked (one rank in a barrier, one
    /// in an allgather, or one gone before MPI while the other waited in it). Now: one message, every rank
    /// non-zero, within 10 s.
    func testRanksAskedForDifferentThingsAllStop() throws {
        let bench = ["bench", "--seq", "512", "--heads", "1", "--head-dim", "16"]
        let run = ["run"] + good + ["--output", output]
        let cases: [(label: String, apps: [[String]], mentions: [String])] = [
            ("bench and verify", [bench, ["verify", "--seq", "512"]],
             ["different commands", "'bench' on rank 0 but 'verify' on rank 1"]),
            ("--help on rank 1 only", [bench, bench + ["--help"]], ["--help is given on rank 1 but not on rank 0"]),
            ("sparge --help on rank 1 only", [run, ["--help"]], ["different commands", "'run' on rank 0 but no command on rank 1"]),
            ("a usage error on rank 1 only", [run, run + ["--bogus"]], ["unknown option '--bogus'", "(rank 1)"]),
            ("an unknown command on rank 0 only", [["frobnicate"], run], ["unknown command 'frobnicate'", "(rank 0)"]),
        ]
        for c in cases {
            let start = Date()
            let result = try mpirunMPMD(c.apps, timeout: 30, reportingRankStatus: true)
            let elapsed = Date().timeIntervalSince(start)
            assertFailsCleanly(result, mentions: c.mentions, outputs: [output], folder: folder, c.label)
            XCTAssertFalse(rankExitStatuses(result.stderr).values.contains(0), "\(c.label): a rank exited 0\n\(transcript(result))")
            XCTAssertLessThan(elapsed, 10, "\(c.label): took \(elapsed) s")
        }
    }

    /// Under `mpirun` every rank now starts MPI even for `--help`: the help must still come out once, with
    /// status 0, and a usage error every rank shares once, with status 2.
    func testHelpAndUsageErrorsUnderMpirunAreSaidOnce() throws {
        for args in [["bench", "--help"], ["--help"]] {
            let result = try mpirun(np: 2, args, timeout: 30)
            XCTAssertEqual(result.status, 0, "\(args)\n\(transcript(result))")
            XCTAssertEqual(result.stdout.components(separatedBy: "usage: sparge").count - 1, 1, "\(args)\n\(transcript(result))")
        }
        let result = try mpirun(np: 2, ["bench", "--bogus"], timeout: 30, reportingRankStatus: true)
        XCTAssertEqual(result.status, 2, transcript(result))
        XCTAssertEqual(errorLines(result).count, 1, transcript(result))
        XCTAssertEqual(Set(rankExitStatuses(result.stderr).values), [2], transcript(result))
    }

    /// Sizes no machine has: refused with a message naming what needs how much, before allocating (it
    /// trapped on an overflow or ended in "failed to allocate").
    func testImpossibleSizesAreRefusedBeforeAllocating() throws {
        for launch in [Launch.single, .ranks(2)] {
            let result = try launch.run(["bench", "--seq", "10000000000", "--heads", "1", "--head-dim", "16"], timeout: 30)
            assertFailsCleanly(result, mentions: ["not enough memory", "one rank needs", "block mask", "this machine has"],
                               outputs: [], folder: folder, "--seq 1e10, \(launch)")
        }
        let huge = try spargeSingle(["bench", "--seq", "\(Int.max)"], timeout: 30)
        assertFailsCleanly(huge, mentions: ["not enough memory", "more than 8 EiB"], outputs: [], folder: folder, "--seq Int.max")
    }

    /// Under `ulimit -v` an allocation that cannot be satisfied trapped with a stack dump. 1M tokens × 4 heads
    /// × 128 need about 8 GiB for Q, K, V and the output; 3 GiB of address space is enough to start, not to run.
    func testAddressSpaceLimitIsAMessage() throws {
        let result = try spargeSingle(["bench", "--seq", "1000000", "--heads", "4", "--head-dim", "128"], timeout: 30,
                                      addressSpaceLimitKiB: 3 << 20)
        assertFailsCleanly(result, mentions: ["not enough memory", "ulimit -v", "Q, K, V and the output"], outputs: [],
                           folder: folder, "ulimit -v 3 GiB")
    }

    /// A signal while the outputs are written (here: all written, none committed) left full-size
    /// `*.partial-*` files behind. One process: SIGTERM, SIGINT, SIGHUP; two ranks: SIGTERM to `mpirun`,
    /// and to rank 1 alone (rank 0 created the files; `mpirun` then stops it).
    func testSignalsLeaveNoPartialFile() throws {
        let args = ["run"] + good + ["--output", output, "--mask-output", mask]
        let cases: [(label: String, ranks: Int?, signal: Int32, target: String)] = [
            ("SIGTERM", nil, SIGTERM, "process"), ("SIGINT", nil, SIGINT, "process"), ("SIGHUP", nil, SIGHUP, "process"),
            ("SIGTERM to mpirun", 2, SIGTERM, "process"), ("SIGTERM to rank 1", 2, SIGTERM, "rank 1"),
        ]
        for c in cases {
            let run = try BackgroundRun(args, ranks: c.ranks, environment: ["SPARGE_TEST_PAUSE": "before-commit:60"], folder: folder)
            let announced = run.wait(for: "pausing", timeout: 30)
                && (c.ranks == nil || run.wait(for: "rank 1 pid", timeout: 10))
            XCTAssertTrue(announced, "\(c.label): no pause announced\n\(run.stderr)")
            let partials = try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.contains(".partial-") }
            XCTAssertEqual(partials.count, 2, "\(c.label): both outputs should be staged by now: \(partials)")
            let pid = c.target == "rank 1" ? run.rankPIDs[1] ?? 0 : run.process.processIdentifier
            XCTAssertGreaterThan(pid, 0, "\(c.label): pid\n\(run.stderr)")
            kill(pid, c.signal)
            let start = Date()
            let result = try run.finish(timeout: 10)
            XCTAssertLessThan(Date().timeIntervalSince(start), 10, c.label)
            assertFailsCleanly(result, mentions: ["stopped by"], outputs: [output, mask], folder: folder, c.label)
        }
    }

    /// Two outputs commit all or nothing. With `--force` over an older output, the mask's destination
    /// becomes a folder between the two renames: the mask cannot be put in place, so the older output
    /// must be back, byte for byte, and nothing else left.
    func testSecondCommitFailingRestoresTheFirst() throws {
        let old = Data("an older result".utf8)
        try old.write(to: URL(fileURLWithPath: output))
        let args = ["run"] + good + ["--output", output, "--mask-output", mask, "--force"]
        let run = try BackgroundRun(args, ranks: nil, environment: ["SPARGE_TEST_PAUSE": "between-commits:3"], folder: folder)
        XCTAssertTrue(run.wait(for: "pausing", timeout: 30), "no pause announced\n\(run.stderr)")
        XCTAssertNotEqual(try Data(contentsOf: URL(fileURLWithPath: output)), old, "the first output is in place by now")
        try FileManager.default.createDirectory(atPath: mask, withIntermediateDirectories: false)
        let result = try run.finish(timeout: 20)
        assertFailsCleanly(result, mentions: ["mask.npy"], outputs: [], folder: folder, "second rename fails")
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: output)), old, "the older output was not restored")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: mask), [], "the folder was written into")
    }
}
