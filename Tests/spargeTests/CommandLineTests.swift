import Foundation
import SpargeTestSupport
import XCTest

/// `--help`, usage errors (status 2) and options that differ between ranks.
final class CommandLineTests: XCTestCase {
    /// The options the command-line contract names for each command.
    static let contract: [(command: String, options: [String])] = [
        ("run", ["q", "k", "v", "layout", "causal", "theta", "cdf", "topk", "dense", "pv-threshold", "sink", "block-q",
                 "block-k", "scale", "hilbert", "threads", "output", "mask-output", "json"]),
        ("bench", ["workload", "seq", "heads", "kv-heads", "head-dim", "causal", "dense", "repeat", "json",
                   "verify-sample"]),
        ("verify", ["causal", "theta", "cdf", "json"]),
    ]

    func testHelpOfEveryCommandListsItsOptions() throws {
        for (command, options) in Self.contract {
            let result = try spargeSingle([command, "--help"], timeout: 30)
            XCTAssertEqual(result.status, 0, "\(command) --help\n\(transcript(result))")
            XCTAssertTrue(result.stdout.hasPrefix("usage: sparge \(command)"), "\(command) --help\n\(result.stdout)")
            // Each option starts a line of the option list: "  --name" followed by a space or the line's end.
            let lines = result.stdout.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
            for option in options where !lines.contains(where: { $0 == "--\(option)" || $0.hasPrefix("--\(option) ") }) {
                XCTFail("sparge \(command) --help does not list --\(option)\n\(result.stdout)")
            }
        }
        for args in [["--help"], ["help"], ["-h"]] {
            let result = try spargeSingle(args, timeout: 30)
            XCTAssertEqual(result.status, 0, "\(args)\n\(transcript(result))")
            for (command, _) in Self.contract { XCTAssertTrue(result.stdout.contains(command), "\(args): no \(command)") }
        }
    }

    func testUsageErrorsExitWithStatus2() throws {
        let files = ["--q", "q.npy", "--k", "k.npy", "--v", "v.npy", "--output", "o.npy"]
        let cases: [(args: [String], mentions: String)] = [
            ([], "usage: sparge"),
            (["frobnicate"], "unknown command 'frobnicate'"),
            (["run", "--bogus"], "unknown option '--bogus'"),
            (["run", "--q"], "'--q' needs a value"),
            (["run", "--json=yes"] + files, "'--json' takes no value"),
            (["run", "--theta", "0.1", "--theta", "0.2"] + files, "'--theta' given twice"),
            (["run", "positional"], "unexpected argument 'positional'"),
            (["run", "--q", "q.npy", "--k", "k.npy", "--v", "v.npy"], "missing required option '--output'"),
            (["run", "--theta", "7"] + files, "--theta: expected a number in -1.0…1.0, got '7'"),
            (["run", "--cdf", "0"] + files, "--cdf"),
            (["run", "--cdf", "0.9", "--topk", "0.2"] + files, "exclude each other"),
            (["run", "--block-q", "many"] + files, "--block-q: expected an integer"),
            (["run", "--layout", "nch"] + files, "--layout: expected one of hnd, nhd, got 'nch'"),
            (["run", "--hilbert", "2,3"] + files, "--hilbert: expected T,H,W"),
            (["run", "--hilbert", "2,3,4", "--causal"] + files, "--hilbert reorders tokens"),
            (["run", "--threads", "0"] + files, "--threads"),
            (["bench"], "missing required option '--seq'"),
            (["bench", "--seq", "0"], "--seq: expected an integer in 1…"),
            (["bench", "--seq", "512", "--workload", "music"], "--workload: expected one of"),
            (["bench", "--seq", "512", "--heads", "3", "--kv-heads", "2"], "not a multiple of --kv-heads"),
            (["bench", "--seq", "512", "--repeat", "-1"], "--repeat"),
            (["bench", "--seq", "512", "--verify-sample", "x"], "--verify-sample"),
            (["verify", "--bogus"], "unknown option '--bogus'"),
        ]
        for c in cases {
            let result = try spargeSingle(c.args, timeout: 30)
            let label = "sparge \(c.args.joined(separator: " "))\n\(transcript(result))"
            XCTAssertEqual(result.status, 2, label)
            XCTAssertTrue(result.stderr.contains(c.mentions), "message should contain '\(c.mentions)': \(label)")
            XCTAssertTrue(c.args.isEmpty || errorLines(result).count == 1, "one error line: \(label)")
        }
        // Under mpirun every rank parses the same options and ends with status 2; rank 0 says why, once.
        let result = try mpirun(np: 2, ["run", "--theta", "7"] + files, timeout: 60, reportingRankStatus: true)
        XCTAssertEqual(result.status, 2, transcript(result))
        XCTAssertEqual(errorLines(result).count, 1, transcript(result))
        XCTAssertFalse(rankExitStatuses(result.stderr).values.contains(0), transcript(result))
    }

    /// Ranks launched with different options (MPMD) must all stop within seconds with one message saying so,
    /// for an option that changes the mask (--theta) and one that changes which collectives run (an extra
    /// output on one rank, which used to hang).
    func testRanksGivenDifferentOptionsAllStop() throws {
        let folder = try scratchFolder(self)
        let files = try SmallInputs().writeNPY(to: folder)
        let output = "\(folder)/out.npy", mask = "\(folder)/mask.npy"
        let base = ["run"] + files + ["--output", output]
        let cases: [(label: String, apps: [[String]], mentions: [String])] = [
            ("--theta", [base + ["--theta", "0.3"], base + ["--theta", "0.4"]],
             ["different options", "--theta is '0.3' on rank 0 but '0.4' on rank 1"]),
            ("--mask-output", [base + ["--mask-output", mask], base],
             ["different options", "--mask-output", "not given on rank 1"]),
        ]
        for c in cases {
            let start = Date()
            let result = try mpirunMPMD(c.apps, timeout: 60, reportingRankStatus: true)
            let elapsed = Date().timeIntervalSince(start)
            assertFailsCleanly(result, mentions: c.mentions, outputs: [output, mask], folder: folder, c.label)
            let statuses = rankExitStatuses(result.stderr)
            XCTAssertFalse(statuses.values.contains(0), "\(c.label): a rank exited 0\n\(transcript(result))")
            XCTAssertLessThan(elapsed, 20, "\(c.label): took \(elapsed) s")
        }
    }
}
