import Foundation
import SpargeCUDA
import SpargeRing
import SpargeWorkloads

/// The resident half of `sparge selftest-cuda`: whole forward passes kept on the GPU (entry, K sums,
/// summaries, mask and its compaction, the ring store, the kernel) against the CPU's pass on the same
/// inputs — rounded to the GPU's 16-bit type first, so that both see the same values. The masks must be
/// identical (the GPU repeats the CPU's arithmetic); outputs within 2e-3 relative L1 (P and V go through
/// 16 bits on the tensor cores; the kernel's own check uses the same bound); the LSE within 2e-3.
struct CUDAResidentSelfTestCase {
    var label: String
    var workload: Workload = .llm
    var seqLen: Int
    var heads = 4, kvHeads = 2, dim = 128
    var config = SpargeConfig()
    var kvFormat = StorageFormat.bf16
    /// Hand the tensors over as device tensors (else as host tensors, uploaded by the pass).
    var onDevice = true
    /// V scaled by this before rounding: beyond fp16's range, P·V must take bf16 V.
    var valueScale: Float = 1
    /// Whether the launch must split its last wave on a 132-SM Hopper GPU (`TailSplit`).
    var splitsTail = false

    static let sweep: [CUDAResidentSelfTestCase] = [
        .init(label: "llm causal cdf, partial tail, D64", seqLen: 5000, dim: 64, config: SpargeConfig(causal: true)),
        .init(label: "llm topk 0.1, GQA 8/1, host tensors", seqLen: 8192, heads: 8, kvHeads: 1,
              config: SpargeConfig(selection: .topK(0.1)), onDevice: false),
        .init(label: "video cdf 0.9, K/V f32", workload: .video, seqLen: 4096, heads: 2, kvHeads: 2,
              config: SpargeConfig(selection: .cdf(0.9)), kvFormat: .f32),
        .init(label: "random causal dense, K/V f16", workload: .random, seqLen: 2000, heads: 2, kvHeads: 1,
              config: SpargeConfig(selection: .dense, causal: true), kvFormat: .f16),
        // One rank in whole blocks converts V to fp16 ahead while it looks for values beyond fp16's range;
        // here there are some, and P·V must take V in bf16.
        .init(label: "llm topk 0.2, V beyond fp16", seqLen: 4096, heads: 2, kvHeads: 2,
              config: SpargeConfig(selection: .topK(0.2)), valueScale: 3e5),
        // Last waves split into parts (TailSplit) on 132 SMs: a dense pass's list by the host (160 CTAs of 160
        // steps: the last 28 in 4 parts each), a predicted mask's by the device (224 CTAs of ≥ 200 steps: the
        // last 92 in 7 parts). (Causal launches keep whole lists: their first rows are short.)
        .init(label: "random dense, last wave split", workload: .random, seqLen: 20480, heads: 1, kvHeads: 1,
              config: SpargeConfig(selection: .dense), splitsTail: true),
        .init(label: "llm topk 0.9 128-key, last wave split", seqLen: 28672, heads: 1, kvHeads: 1,
              config: SpargeConfig(blockK: 128, selection: .topK(0.9)), splitsTail: true),
    ]

    /// The case on `engine`; `splitHere` says whether this GPU splits tails as the case expects (a Hopper GPU
    /// of 132 SMs running the wgmma kernel, the split on).
    func run(engine: CUDAAttentionEngine, splitHere: Bool) throws -> CUDASelfTestCase.Outcome {
        let shape = WorkloadShape(queryHeads: heads, kvHeads: kvHeads, seqLen: seqLen, headDim: dim)
        let generator = try WorkloadGenerator(workload, shape: shape, seed: 5)
        let rounded = { (t: Tensor3) in engine.precision.rounded(t).rounded(to: kvFormat) }
        let q = engine.precision.rounded(generator.generate(.query, rows: [0..<seqLen]))
        var values = generator.generate(.value, rows: [0..<seqLen])
        if valueScale != 1 { values.data = values.data.map { $0 * valueScale } }
        let (k, v) = (rounded(generator.generate(.key, rows: [0..<seqLen])), rounded(values))
        let layout = try ShardLayout(seqLen: seqLen, ranks: 1, config: config)
        let comm = SingleProcessCommunicator()
        let cpu = try ShardedAttention.forward(q: q, k: k, v: v, layout: layout, config: config, communicator: comm,
                                               threads: ProcessInfo.processInfo.activeProcessorCount)
        var (tq, tk, tv) = (Tensor(q), Tensor(k), Tensor(v))
        if onDevice { (tq, tk, tv) = (try engine.upload(tq), try engine.upload(tk), try engine.upload(tv)) }
        let gpu = try ShardedAttention.forwardResident(q: tq, k: tk, v: tv, layout: layout, config: config,
                                                       communicator: comm, engine: engine, kvFormat: kvFormat)
        let host = try gpu.onHost(engine)
        var failures: [String] = []
        let blockDiff = zip(gpu.mask.denseBits(), cpu.mask.denseBits()).filter { $0 != $1 }.count
        if gpu.mask != cpu.mask { failures.append("the mask differs from the CPU's (\(blockDiff) blocks)") }
        let error = ErrorMetrics(output: host.output.data, reference: cpu.output.data.map(Double.init)).relativeL1
        if !(error <= 2e-3) { failures.append("rel L1 \(error) against the CPU's pass (bound 2e-3)") }
        var lseDiff = 0.0
        for (a, b) in zip(host.lse, cpu.lse) {
            if a.isInfinite || b.isInfinite {
                if a != b { failures.append("LSE -inf differs from the CPU's"); break }
            } else {
                lseDiff = max(lseDiff, Double(abs(a - b)))
            }
        }
        if lseDiff > 2e-3 { failures.append("LSE differs by \(lseDiff) (bound 2e-3)") }
        // The tiles' counters, which a split tile's parts add up.
        let visited = (gpu: gpu.statistics.attention.keyBlocksVisited, cpu: cpu.statistics.attention.keyBlocksVisited)
        if visited.gpu != visited.cpu { failures.append("blocks visited \(visited.gpu), the CPU's \(visited.cpu)") }
        let split = gpu.statistics.attention.splitTailCTAs
        if splitHere && (split > 0) != splitsTail {
            failures.append(splitsTail ? "the last wave was not split" : "\(split) CTAs split where none should be")
        }
        let line = label.padding(toLength: 38, withPad: " ", startingAt: 0)
            + String(format: " %6d  %2d/%-2d  %4d  ", seqLen, heads, kvHeads, dim)
            + kvFormat.rawValue.padding(toLength: 4, withPad: " ", startingAt: 0)
            + String(format: "  %6.4f  %6d   %.2e  %.2e   %8.2f", cpu.statistics.mask.density, blockDiff, error,
                     lseDiff, gpu.statistics.totalSeconds * 1e3)
            + (failures.isEmpty ? "  ok" : "  FAIL")
        return .init(line: line, failures: failures)
    }
}

/// Runs the resident sweep; returns the failures, labelled.
func runCUDAResidentSelfTest(device: CUDADevice) -> [String] {
    print("whole resident pass on the GPU against the CPU's pass (mask exactly; output and LSE within 2e-3)")
    print("case                                        N  Hq/Hkv   D  K/V   density  blocks   rel-L1    lse-diff   gpu ms")
    let engine: CUDAAttentionEngine
    do {
        engine = try CUDAAttentionEngine(device: device, options: .fromEnvironment)
    } catch {
        return ["resident: \(error)"]
    }
    let options = CUDAOptions.fromEnvironment
    let splitHere = hopperKernelRuns(on: device, options: options) && device.multiprocessors == 132 && options.tailSplit
    return runSelfTestCases(CUDAResidentSelfTestCase.sweep, label: { "resident \($0.label)" }) {
        try $0.run(engine: engine, splitHere: splitHere)
    }
}
