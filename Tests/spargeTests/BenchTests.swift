import Foundation
import SpargeTestSupport
import XCTest

/// `sparge bench --json` and `--mask-image` on small generated workloads.
final class BenchTests: XCTestCase {
    static let keys = ["seq", "ranks", "threads", "heads", "kv_heads", "head_dim", "causal", "density", "seconds",
                       "gflops_dense_equiv", "bytes_sent", "bytes_dense_ring", "mask_bytes", "kv_precision"]
    static let small = ["bench", "--workload", "llm", "--seq", "512", "--heads", "2", "--kv-heads", "1",
                        "--head-dim", "16", "--theta", "0.3", "--cdf", "0.9"]

    /// `bench-kernel --backend cpu` in fp32 and int8: the precision in its JSON, the pass's speed next to the
    /// peak of what it computes with, and the error next to it — fp32's its rounding (below 1e-5), int8's
    /// its quantization (above 1e-4: visible, within the 1e-2).
    func testKernelBenchOnTheCPUReportsErrorNextToSpeed() throws {
        for (precision, range) in [("fp32", 0.0...1e-5), ("int8", 1e-4...1e-2)] {
            let result = try spargeSingle(["bench-kernel", "--backend", "cpu", "--workload", "random", "--seq", "700",
                                           "--heads", "2", "--head-dim", "32", "--repeat", "1", "--dense",
                                           "--precision", precision, "--json"], timeout: 60)
            XCTAssertEqual(result.status, 0, transcript(result))
            let json = try jsonObject(result)
            XCTAssertEqual(json["precision"] as? String, precision)
            for key in ["isa", "kernel_ms", "gflops_dense_equiv", "peak_gflops"] where !(json[key] is NSNumber || json[key] is String) {
                XCTFail("\(precision): no '\(key)' in \(result.stdout)")
            }
            let error = try XCTUnwrap((json["rel_l1_sampled"] as? NSNumber)?.doubleValue, result.stdout)
            XCTAssertTrue(range.contains(error), "\(precision): rel L1 \(error) outside \(range)")
        }
    }

    /// One JSON line per run; `rel_l1` is a number with `--verify-sample`, null without; the PNG is a PNG.
    func testJSONLinesAndMaskImage() throws {
        let folder = try scratchFolder(self)
        for (launch, ranks) in [(Launch.single, 1), (.ranks(2), 2)] {
            let image = "\(folder)/mask-\(ranks).png"
            let result = try launch.run(Self.small + ["--json", "--repeat", "2", "--verify-sample", "2",
                                                      "--mask-image", image])
            XCTAssertEqual(result.status, 0, "\(launch)\n\(transcript(result))")
            let json = try jsonObject(result)
            for key in Self.keys + ["rel_l1"] where json[key] == nil { XCTFail("\(launch): no '\(key)' in \(result.stdout)") }
            XCTAssertEqual((json["ranks"] as? NSNumber)?.intValue, ranks)
            let error = try XCTUnwrap((json["rel_l1"] as? NSNumber)?.doubleValue, "\(launch): rel_l1 is not a number")
            XCTAssertTrue(error >= 0 && error < 0.5, "\(launch): rel_l1 \(error)")
            let png = try Data(contentsOf: URL(fileURLWithPath: image))
            XCTAssertEqual(Array(png.prefix(8)), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A], "\(launch): PNG signature")
        }

        // No sample, no error figure.
        let plain = try spargeSingle(Self.small + ["--json"], timeout: 60)
        XCTAssertEqual(plain.status, 0, transcript(plain))
        XCTAssertTrue(try jsonObject(plain)["rel_l1"] is NSNull, plain.stdout)

        // An existing picture is kept without --force, replaced with it.
        let image = "\(folder)/mask-1.png"
        let before = try Data(contentsOf: URL(fileURLWithPath: image))
        try Data("not a picture".utf8).write(to: URL(fileURLWithPath: image))
        let refused = try spargeSingle(Self.small + ["--mask-image", image], timeout: 60)
        assertFailsCleanly(refused, mentions: ["mask-1.png", "--force"], outputs: [], folder: folder, "existing picture")
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: image)), Data("not a picture".utf8))
        let forced = try spargeSingle(Self.small + ["--mask-image", image, "--force"], timeout: 60)
        XCTAssertEqual(forced.status, 0, transcript(forced))
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: image)), before, "same run, same picture")

        let missing = try spargeSingle(Self.small + ["--mask-image", "\(folder)/nowhere/m.png"], timeout: 60)
        assertFailsCleanly(missing, mentions: ["nowhere", "does not exist"], outputs: ["\(folder)/nowhere/m.png"],
                           folder: folder, "picture in a missing folder")
    }

    /// The phases `bench` reports are those of the pass whose time it reports (the median), not the last
    /// pass's: the last of three passes sleeps 0.6 s in its ring phase, and neither the time nor the ring
    /// phase may show it (a pass of this workload takes milliseconds; 0.3 s leaves room for a slow machine).
    func testPhasesAreTheMedianPasss() throws {
        setenv("SPARGE_TEST_PAUSE", "bench-last-ring:0.6", 1)
        defer { unsetenv("SPARGE_TEST_PAUSE") }
        let result = try spargeSingle(Self.small + ["--json", "--repeat", "3"], timeout: 60)
        XCTAssertEqual(result.status, 0, transcript(result))
        XCTAssertTrue(result.stderr.contains("pausing 0.6 s bench-last-ring"), "the last pass did not pause:\n\(transcript(result))")
        let json = try jsonObject(result)
        let seconds = try XCTUnwrap((json["seconds"] as? NSNumber)?.doubleValue)
        let ring = try XCTUnwrap((json["ring_seconds"] as? NSNumber)?.doubleValue)
        XCTAssertLessThan(seconds, 0.3, result.stdout)
        XCTAssertLessThan(ring, 0.3, "the ring phase is the paused pass's: \(result.stdout)")
    }

    /// `SPARGE_CPU_ISA` picks the CPU kernels of every rank (`isa` in the JSON, the header's backend), and a
    /// name that is unknown fails on every rank with a message naming the variable.
    func testCPUKernelSetFromTheEnvironment() throws {
        let plain = try spargeSingle(Self.small + ["--json"], timeout: 60)
        XCTAssertEqual(plain.status, 0, transcript(plain))
        XCTAssertNotNil(try jsonObject(plain)["isa"] as? String, plain.stdout)
        setenv("SPARGE_CPU_ISA", "portable", 1)
        defer { unsetenv("SPARGE_CPU_ISA") }
        for launch in [Launch.single, .ranks(2)] {
            let result = try launch.run(Self.small + ["--json", "--verify-sample", "2"])
            XCTAssertEqual(result.status, 0, "\(launch)\n\(transcript(result))")
            let json = try jsonObject(result)
            XCTAssertEqual(json["isa"] as? String, "portable", "\(launch): \(result.stdout)")
            // The same mask, the same error as any kernel set: sampled blocks agree with dense attention.
            let error = try XCTUnwrap((json["rel_l1"] as? NSNumber)?.doubleValue, "\(launch): rel_l1")
            XCTAssertTrue(error >= 0 && error < 0.5, "\(launch): rel_l1 \(error)")
        }
        let text = try spargeSingle(Self.small, timeout: 60)
        XCTAssertTrue(text.stdout.contains("backend cpu portable"), text.stdout)
        setenv("SPARGE_CPU_ISA", "avx3", 1)
        let refused = try Launch.ranks(2).run(Self.small)
        XCTAssertNotEqual(refused.status, 0, transcript(refused))
        XCTAssertTrue(refused.stderr.contains("SPARGE_CPU_ISA") && refused.stderr.contains("avx3"), transcript(refused))
    }
}
