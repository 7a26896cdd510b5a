import SpargeTestSupport
import XCTest
@testable import SpargeRing

/// The forward pass on one process (no mpirun): the runtime's path — summaries, mask rows, need table and a
/// one-step ring feeding `BlockSparseAttention` — against the kernels' own single-process driver and mask
/// predictor, two independently written schedules over the same tile kernel.
final class ShardedAttentionTests: XCTestCase {
    struct Case { let n: Int, hq: Int, hkv: Int, d: Int, causal: Bool, selection: BlockSelection, seed: UInt64 }

    /// A case drawn afresh on every run (its seed is in the failure message): N in 200…1500, GQA, causal and
    /// the threshold at random; dense is left to the fixed cases, so the mask is sparse.
    static func freshCase() -> Case {
        var system = SystemRandomNumberGenerator()
        let hkv = Int.random(in: 1...2, using: &system)
        return Case(n: Int.random(in: 200...1500, using: &system), hq: hkv * Int.random(in: 1...3, using: &system),
                    hkv: hkv, d: [16, 24, 32, 64].randomElement(using: &system)!, causal: Bool.random(using: &system),
                    selection: .cdf(Float.random(in: 0.6...0.9, using: &system)),
                    seed: UInt64.random(in: 1...UInt64.max, using: &system))
    }

    func testSingleProcessForwardEqualsTheKernelDriver() throws {
        let cases = [
            Case(n: 1000, hq: 2, hkv: 2, d: 32, causal: false, selection: .cdf(0.9), seed: 1),
            Case(n: 1111, hq: 4, hkv: 2, d: 16, causal: true, selection: .cdf(0.8), seed: 2),
            Case(n: 640, hq: 3, hkv: 1, d: 64, causal: true, selection: .topK(0.3), seed: 3),
            Case(n: 300, hq: 2, hkv: 1, d: 24, causal: false, selection: .dense, seed: 4),
            Case(n: 333, hq: 2, hkv: 2, d: 16, causal: true, selection: .dense, seed: 5),
        ]
        for c in cases + [Self.freshCase()] {
            let label = "\(c)"
            var g = SeededGenerator(seed: c.seed)
            let q = Tensor3.blockStructured(heads: c.hq, rows: c.n, dim: c.d, using: &g)
            let k = Tensor3.blockStructured(heads: c.hkv, rows: c.n, dim: c.d, using: &g)
            let v = Tensor3.random(heads: c.hkv, rows: c.n, dim: c.d, using: &g)
            let config = SpargeConfig(simThreshold: 0.3, selection: c.selection, causal: c.causal)
            let layout = ShardLayout(seqLen: c.n, ranks: 1, blockQ: 128, blockK: 64, causal: c.causal)
            let result = try ShardedAttention.forward(q: q, k: k, v: v, layout: layout, config: config,
                                                      communicator: SingleProcessCommunicator(), threads: 2)
            // Dense runs pool no summaries: their mask must still be the one the predictor gives.
            let predicted = try MaskPredictor.predict(q: q, k: k, config: config)
            XCTAssertEqual(result.mask, predicted, label)
            let mask = c.selection == .dense ? nil : predicted
            let reference = try SparseAttention.forward(q: q, k: k, v: v, mask: mask, config: config, threads: 1)
            // Same tile kernel, same visit order within a tile: only the float order of the merge across
            // threads could differ, so agreement is to fp32 rounding (well under 1e-6).
            let metrics = ErrorMetrics(output: result.output.data, reference: reference.output.data.map(Double.init))
            XCTAssertLessThan(metrics.relativeL1, 1e-6, label)
            for i in stride(from: 0, to: result.lse.count, by: 7) {
                XCTAssertEqual(result.lse[i], reference.lse[i], accuracy: 1e-4 * max(1, abs(reference.lse[i])), label)
            }
            XCTAssertEqual(result.statistics.ring.bytesSent, 0, "one process sends nothing")
            // The ring's seconds hold its setup, its steps' compute and its finish, each measured.
            let s = result.statistics
            XCTAssertGreaterThan(s.setupSeconds, 0, label)
            XCTAssertGreaterThan(s.finishSeconds, 0, label)
            XCTAssertLessThanOrEqual(s.setupSeconds + s.ring.computeSeconds + s.finishSeconds, s.ringSeconds, label)
            // The fixed cases are sparse; a fresh draw may keep every block of a short sequence (n = 222,
            // causal: 2 query blocks, the diagonal ones always kept) and still checks the equality.
            if c.selection != .dense && cases.contains(where: { $0.seed == c.seed }) {
                XCTAssertLessThan(result.statistics.mask.density, 1, "\(label): the mask must be sparse for the test to mean anything")
            }
        }
    }

    /// A shard that does not fit the layout is an error, not a crash.
    func testShardOfTheWrongSizeIsAnError() {
        var g = SeededGenerator(seed: 9)
        let q = Tensor3.random(heads: 1, rows: 100, dim: 8, using: &g)
        let layout = ShardLayout(seqLen: 128, ranks: 1, blockQ: 128, blockK: 64, causal: false)
        XCTAssertThrowsError(try ShardedAttention.forward(q: q, k: q, v: q, layout: layout, config: SpargeConfig(),
                                                          communicator: SingleProcessCommunicator())) { error in
            XCTAssertTrue("\(error)".contains("100"), "\(error)")
        }
    }
}

/// A CPU engine that notes the host width its mask phases run under.
private final class WidthRecordingEngine: AttentionEngine, @unchecked Sendable {
    let cpu = CPUAttentionEngine()
    var widths: [Int?] = []
    var name: String { "cpu (recording)" }

    func makeAttention(queries: Tensor3, mask: BlockMask, kvHeads: Int, config: SpargeConfig, seqLen: Int,
                       threads: Int) throws -> any StepwiseAttention {
        try cpu.makeAttention(queries: queries, mask: mask, kvHeads: kvHeads, config: config, seqLen: seqLen,
                              threads: threads)
    }

    func summarize(_ x: Tensor3, rows: Range<Int>, firstBlock: Int, blockSize: Int, threshold: Float,
                   subtracting mean: [Float]?) throws -> BlockSummaries {
        widths.append(HostParallelism.threads)
        return try cpu.summarize(x, rows: rows, firstBlock: firstBlock, blockSize: blockSize, threshold: threshold,
                                 subtracting: mean)
    }

    func predictRows(querySummaries: BlockSummaries, queryBlocks: [Int], keySummaries: BlockSummaries,
                     config: SpargeConfig, headDim: Int, queryHeads: Int, kvHeads: Int, seqLen: Int) throws -> BlockMask {
        widths.append(HostParallelism.threads)
        return try cpu.predictRows(querySummaries: querySummaries, queryBlocks: queryBlocks, keySummaries: keySummaries,
                                   config: config, headDim: headDim, queryHeads: queryHeads, kvHeads: kvHeads,
                                   seqLen: seqLen)
    }
}

final class ForwardThreadsTests: XCTestCase {
    /// The pass keeps to its `threads` in the summaries and the mask rows too (a rank's share of a node), on
    /// both entries (fp32 arrays, and tensors of any type), and leaves the width unbound afterwards.
    func testMaskPhasesRunUnderThePassThreads() throws {
        var g = SeededGenerator(seed: UInt64.random(in: 0...UInt64.max))
        let (n, d) = (500, 32)
        let q = Tensor3.blockStructured(heads: 2, rows: n, dim: d, using: &g)
        let k = Tensor3.blockStructured(heads: 1, rows: n, dim: d, using: &g)
        let v = Tensor3.random(heads: 1, rows: n, dim: d, using: &g)
        let config = SpargeConfig(simThreshold: 0.3, selection: .cdf(0.9))
        let layout = try ShardLayout(seqLen: n, ranks: 1, config: config)
        for threads in [1, 3] {
            let engine = WidthRecordingEngine()
            _ = try ShardedAttention.forward(q: q, k: k, v: v, layout: layout, config: config,
                                             communicator: SingleProcessCommunicator(), threads: threads, engine: engine)
            _ = try ShardedAttention.forward(q: Tensor(q), k: Tensor(k), v: Tensor(v), layout: layout, config: config,
                                             communicator: SingleProcessCommunicator(), threads: threads, engine: engine)
            XCTAssertEqual(engine.widths.count, 6, "two summaries and one mask a pass")
            XCTAssertTrue(engine.widths.allSatisfy { $0 == threads }, "\(engine.widths) under \(threads) threads")
        }
    }

    /// A whole pass at `threads: 1`, entered with strided tensors (converted on entry), stays on the calling
    /// thread: the process spends no more CPU time than the thread (within 5% and 3 ms of scheduling noise).
    /// A long sequence at a low density, so that the conversions and the mask phases are a large part of the
    /// pass and any of them on a second core shows. On one core this cannot fail.
    func testOneThreadPassStaysOnTheCallingThread() throws {
        var g = SeededGenerator(seed: UInt64.random(in: 0...UInt64.max))
        let (n, heads, d) = (16384, 4, 64)
        func viewed(_ t: Tensor3) throws -> Tensor {  // [rows, heads, dim] read as [heads, rows, dim]
            var values = [Float](repeating: 0, count: t.data.count)
            for h in 0..<t.heads { for r in 0..<t.rows { for i in 0..<t.dim { values[(r * t.heads + h) * t.dim + i] = t[h, r, i] } } }
            return try Tensor(values, shape: [t.rows, t.heads, t.dim]).permuted([1, 0, 2])
        }
        let q = try viewed(Tensor3.blockStructured(heads: heads, rows: n, dim: d, using: &g))
        let k = try viewed(Tensor3.blockStructured(heads: heads, rows: n, dim: d, using: &g))
        let v = try viewed(Tensor3.random(heads: heads, rows: n, dim: d, using: &g))
        let config = SpargeConfig(simThreshold: -1, selection: .topK(0.02))
        let layout = try ShardLayout(seqLen: n, ranks: 1, config: config)
        let spent = try cpuSeconds {
            _ = try ShardedAttention.forward(q: q, k: k, v: v, layout: layout, config: config,
                                             communicator: SingleProcessCommunicator(), threads: 1)
        }
        XCTAssertLessThanOrEqual(spent.process, 1.05 * spent.thread + 0.003,
                                 "\(spent.process) s of CPU for \(spent.thread) s on this thread")
    }
}
