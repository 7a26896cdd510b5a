import Foundation
import SpargeCUDA
import SpargeRing
import SpargeWorkloads

/// The consumer turns of `sparge selftest-cuda`: the Hopper kernel's two consumer warpgroups taking turns at
/// issuing their products (`CUDAOptions.consumerTurns`) changes when each issues, not what it computes, so
/// whole resident passes with turns and without must give the same mask, output and LSE bit for bit. The
/// cases cover CTAs that take turns (equal steps), CTAs that cannot (a causal diagonal leaving one tile a step
/// more than the other, in the same launch), int8 and bf16, and a partial last query tile.
struct CUDATurnsSelfTestCase {
    var label: String
    var workload: Workload = .llm
    var seqLen: Int
    var heads = 4, kvHeads = 2
    var config: SpargeConfig
    var precision: CUDAPrecision

    static let sweep: [CUDATurnsSelfTestCase] = [
        .init(label: "random dense 128-key, bf16", workload: .random, seqLen: 4096, heads: 2, kvHeads: 2,
              config: SpargeConfig(blockK: 128, selection: .dense), precision: .bf16),
        // 64-key blocks, causal TopK: a query block's two tiles see the mask row cut at two diagonals, and
        // where the second holds one more entry and the first an even count, their steps differ.
        .init(label: "llm causal topk 0.3 64-key, partial tail, int8", seqLen: 5000,
              config: SpargeConfig(selection: .topK(0.3), causal: true), precision: .int8),
        .init(label: "llm topk 0.3 128-key, GQA 4/2, int8", seqLen: 8192,
              config: SpargeConfig(blockK: 128, selection: .topK(0.3)), precision: .int8),
    ]

    /// The case run on `withTurns` and on `without` (engines of the case's precision).
    func run(withTurns: CUDAAttentionEngine, without: CUDAAttentionEngine) throws -> CUDASelfTestCase.Outcome {
        let shape = WorkloadShape(queryHeads: heads, kvHeads: kvHeads, seqLen: seqLen, headDim: 128)
        let generator = try WorkloadGenerator(workload, shape: shape, seed: 11)
        let (q, k, v) = generator.generate(rows: [0..<seqLen])
        let layout = try ShardLayout(seqLen: seqLen, ranks: 1, config: config)
        let comm = SingleProcessCommunicator()
        let passes = try [withTurns, without].map { engine in
            try ShardedAttention.forwardResident(q: Tensor(q), k: Tensor(k), v: Tensor(v), layout: layout, config: config,
                                                 communicator: comm, engine: engine, kvFormat: .bf16).onHost(engine)
        }
        var failures: [String] = []
        if passes[0].mask != passes[1].mask { failures.append("the masks differ") }
        let outputBits = zip(passes[0].output.data, passes[1].output.data).filter { $0.bitPattern != $1.bitPattern }.count
        if outputBits > 0 { failures.append("\(outputBits) output values differ") }
        let lseBits = zip(passes[0].lse, passes[1].lse).filter { $0.bitPattern != $1.bitPattern }.count
        if lseBits > 0 { failures.append("\(lseBits) LSE values differ") }
        let line = label.padding(toLength: 48, withPad: " ", startingAt: 0)
            + String(format: " %6d  %2d/%-2d  %6.4f  %8d  %6d", seqLen, heads, kvHeads, passes[0].statistics.mask.density, outputBits, lseBits)
            + (failures.isEmpty ? "  ok" : "  FAIL")
        return .init(line: line, failures: failures)
    }
}

/// Runs the turns sweep where the Hopper kernel runs (elsewhere turns change nothing); returns the failures.
func runCUDATurnsSelfTest(device: CUDADevice) -> [String] {
    let options = CUDAOptions.fromEnvironment
    guard hopperKernelRuns(on: device, options: options) else {
        print("consumer turns: not run (the Hopper kernel does not run here)")
        return []
    }
    print("Hopper kernel: whole passes with consumer turns against without (mask, output and LSE bit for bit)")
    print("case                                                 N  Hq/Hkv  density  out-diff  lse-diff")
    var off = options
    var on = options
    on.consumerTurns = true
    off.consumerTurns = false
    return runSelfTestCases(CUDATurnsSelfTestCase.sweep, label: { "turns \($0.label)" }) { c in
        try c.run(withTurns: CUDAAttentionEngine(device: device, precision: c.precision, options: on),
                  without: CUDAAttentionEngine(device: device, precision: c.precision, options: off))
    }
}
