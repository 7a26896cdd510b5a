import Foundation
import SpargeFormats
import SpargeKernels
import SpargeRing
import SpargeWorkloads
import SpargeTestSupport
import XCTest

/// `sparge run --hilbert T,H,W`: attention in Hilbert order, written back in the input's token order.
final class HilbertRunTests: XCTestCase {
    /// Dense attention commutes with a permutation of the tokens (Attn(PQ, PK, PV) = P·Attn(Q, K, V)), so in
    /// dense mode the Hilbert run must give the plain run's output in the original order. Only the order in
    /// which keys are accumulated differs: fp32 rounding, ~1e-7; 1e-5 would still catch one misplaced row
    /// (a row of another token differs by O(1)). On 1 and 3 ranks, so that positions map to tokens across
    /// shards.
    func testDenseHilbertRunEqualsThePlainRun() throws {
        let folder = try scratchFolder(self)
        let shape = WorkloadShape(queryHeads: 2, kvHeads: 1, seqLen: 3 * 10 * 12, headDim: 16)
        let generator = try WorkloadGenerator(.video, shape: shape, seed: 3,
                                              videoGrid: VideoGrid(frames: 3, height: 10, width: 12))
        let (q, k, v) = generator.generate(rows: [0..<shape.seqLen])
        var files: [String] = []
        for (name, t) in [("q", q), ("k", k), ("v", v)] {
            let path = "\(folder)/\(name).npy"
            try NPYWriter.write(path: path, shape: t.shape, values: t.data)
            files += ["--\(name)", path]
        }
        let plainPath = "\(folder)/plain.npy"
        let plain = try Launch.single.run(["run"] + files + ["--dense", "--output", plainPath])
        XCTAssertEqual(plain.status, 0, transcript(plain))
        let reference = try readFloatNPY(plainPath).values
        for launch in [Launch.single, .ranks(3)] {
            let path = "\(folder)/hilbert-\(launch.description.filter(\.isLetter)).npy"
            let run = try launch.run(["run"] + files + ["--dense", "--hilbert", "3,10,12", "--output", path])
            XCTAssertEqual(run.status, 0, "\(launch)\n\(transcript(run))")
            let out = try readFloatNPY(path).values
            XCTAssertLessThan(relativeL1(out, reference), 1e-5, "\(launch)")
        }
    }

    /// A grid that does not hold N tokens, and --hilbert with --causal, are refused.
    func testBadGridsAreRefused() throws {
        let folder = try scratchFolder(self)
        let args = try SmallInputs().writeNPY(to: folder)
        let wrong = try Launch.single.run(["run"] + args + ["--hilbert", "2,3,4", "--output", "\(folder)/o.npy"])
        XCTAssertNotEqual(wrong.status, 0)
        XCTAssertTrue(wrong.stderr.contains("24 tokens"), transcript(wrong))
        let causal = try Launch.single.run(["run"] + args + ["--hilbert", "2,15,20", "--causal", "--output", "\(folder)/o.npy"])
        XCTAssertEqual(causal.status, 2, transcript(causal))
        XCTAssertFalse(FileManager.default.fileExists(atPath: "\(folder)/o.npy"))
    }
}
