import Foundation
import SpargeCUDA
import SpargeFormats
import SpargeRing
import SpargeWorkloads

/// `sparge bench-kernel`: the attention kernel alone — the CUDA kernel on one GPU, timed with device events,
/// or with `--backend cpu` the CPU tiles' pass over every block (`KernelBenchCPU`).
///
/// `bench --backend cuda` times the whole forward pass (mask prediction, conversion and copies,
/// the kernel); this times only the kernel, on data already on the device, which is what PyTorch's
/// attention functions are timed on. It writes the mask (`--mask-out`) so that launch/gpu_bench_torch.py can
/// run FlexAttention on exactly the same blocks.
enum KernelBenchCommand {
    static let specs: [OptionSpec] = [
        .value("workload", "llm|video|random", "generated inputs (default llm)"),
        .value("seq", "N", "tokens (default 32768)"),
        .value("heads", "H", "query heads (default 8)"),
        .value("kv-heads", "H", "key/value heads (default: --heads)"),
        .value("head-dim", "D", "head dimension (default 128)"),
        .value("seed", "S", "workload seed (default 1)"),
        .value("repeat", "R", "timed repetitions; the median is reported (default 10)"),
        .value("backend", "cuda|cpu", "what computes the tiles (default cuda)"),
        .value("precision", "P", "cuda: bf16|fp16 (default bf16); cpu: fp32|bf16|fp16|int8 (default fp32)"),
        .value("mask-out", "FILE.npy", "write the block mask [H, nq, nk] as uint8"),
        .value("inputs-out", "PREFIX", "write the generated Q, K, V as PREFIX_q.npy, PREFIX_k.npy, PREFIX_v.npy (float32 [H, N, D]), for another tool to run on"),
        .flag("force", "overwrite existing --mask-out and --inputs-out files"),
        .flag("json", "one JSON object instead of the text line"),
    ] + ConfigOptions.specs

    static let summary = """
        Times the CUDA block-sparse attention kernel on one GPU (device events, median of --repeat, data already
        on the device): real TFLOP/s over the blocks the mask computes, and dense-equivalent TFLOP/s, next to the
        tensor cores' measured mma.sync peak. With --backend cpu: the CPU tiles' pass over every block on all
        cores (SPARGE_CPU_ISA picks the kernels), in GFLOP/s next to the FMA peak (int16 multiply-adds for
        int8), with the precision's error on sampled query blocks.
        """

    static func main(_ arguments: [String]) -> Int32 {
        Command.main(name: "bench-kernel", usage: "[options]", summary: summary, specs: specs, arguments: arguments, body: run)
    }

    /// The parsed shape, the generated inputs and their predicted mask (written to `--mask-out` if given).
    struct Setup {
        let config: SpargeConfig, workload: Workload, seq: Int, heads: Int, kvHeads: Int, dim: Int, repeats: Int
        let q: Tensor3, k: Tensor3, v: Tensor3, mask: BlockMask, maskSeconds: Double

        init(_ o: ParsedOptions) throws {
            config = try ConfigOptions.config(o)
            workload = try o.choice("workload", Workload.allCases.map(\.rawValue)).flatMap(Workload.init) ?? .llm
            seq = try o.int("seq", range: 1...(1 << 26)) ?? 32768
            heads = try o.int("heads", range: 1...4096) ?? 8
            kvHeads = try o.int("kv-heads", range: 1...4096) ?? heads
            guard heads % kvHeads == 0 else { throw UsageError("--heads \(heads) is not a multiple of --kv-heads \(kvHeads)") }
            dim = try o.int("head-dim", range: 1...1024) ?? 128
            let seed = UInt64(try o.int("seed", range: 0...Int.max) ?? 1)
            repeats = try o.int("repeat", range: 1...1000) ?? 10
            let maskPath = o.string("mask-out")
            if let maskPath { try StagedFile.checkDestination(maskPath, overwrite: o.has("force")) }
            let inputPaths = o.string("inputs-out").map { prefix in ["q", "k", "v"].map { "\(prefix)_\($0).npy" } } ?? []
            for path in inputPaths { try StagedFile.checkDestination(path, overwrite: o.has("force")) }
            let shape = WorkloadShape(queryHeads: heads, kvHeads: kvHeads, seqLen: seq, headDim: dim)
            (q, k, v) = try WorkloadGenerator(workload, shape: shape, seed: seed).generate(rows: [0..<seq])
            for (path, tensor) in zip(inputPaths, [q, k, v]) {
                try NPYWriter.write(path: path, shape: [tensor.heads, tensor.rows, tensor.dim], values: tensor.data,
                                    overwrite: o.has("force"))
            }
            let t = DispatchTime.now().uptimeNanoseconds
            mask = try MaskPredictor.predict(q: q, k: k, config: config)  // the CPU's; the GPU's is the same bits
            maskSeconds = Double(DispatchTime.now().uptimeNanoseconds - t) * 1e-9
            if let maskPath {
                try NPYWriter.write(path: maskPath, shape: [heads, mask.rowCount, mask.keyBlocks], bytes: mask.denseBits(),
                                    overwrite: o.has("force"))
            }
        }

        /// FLOPs: dense-equivalent 4·N²·D·Hq (half when causal); real: 4·D·rows·keys over the computed
        /// blocks, counting diagonal blocks whole (as the kernels compute them).
        var flops: (dense: Double, real: Double) {
            let dense = 4 * Double(seq) * Double(seq) * Double(dim) * Double(heads) / (config.causal ? 2 : 1)
            var real = 0.0
            for h in 0..<heads {
                for (row, block) in mask.queryBlocks.enumerated() {
                    let rows = Double(min(config.blockQ, seq - block * config.blockQ))
                    for j in mask.keyBlockList(head: h, row: row) {
                        real += 4 * Double(dim) * rows * Double(min(config.blockK, seq - j * config.blockK))
                    }
                }
            }
            return (dense, real)
        }
    }

    static func run(_ o: ParsedOptions, _ ctx: CommandContext) throws {
        let backend = try o.choice("backend", ["cuda", "cpu"]) ?? "cuda"
        if backend == "cpu" { return try KernelBenchCPU.run(o, ctx) }
        let precision = try o.choice("precision", CUDAPrecision.allCases.map(\.rawValue)).flatMap(CUDAPrecision.init) ?? .bf16
        let options = CUDAOptions.fromEnvironment
        let device = try CUDADevice.open(options: options)
        let setup = try Setup(o)
        let (config, workload, seq, heads, kvHeads, dim, repeats) =
            (setup.config, setup.workload, setup.seq, setup.heads, setup.kvHeads, setup.dim, setup.repeats)
        let (q, k, v, mask, maskSeconds) = (setup.q, setup.k, setup.v, setup.mask, setup.maskSeconds)
        BackendOptions.printHint(config: config, device: device, options: options)

        let t = DispatchTime.now().uptimeNanoseconds
        let attention = try CUDABlockSparseAttention(queries: q, mask: mask, kvHeads: kvHeads, config: config,
                                                     seqLen: seq, device: device, precision: precision,
                                                     options: options)
        let setupSeconds = Double(DispatchTime.now().uptimeNanoseconds - t) * 1e-9
        var table = KeyValueBlockTable(kvHeads: kvHeads, keyBlocks: mask.keyBlocks, blockK: config.blockK, seqLen: seq)
        let threads = ProcessInfo.processInfo.activeProcessorCount
        var kernel: [Double] = [], upload: [Double] = [], total: [Double] = []
        try k.data.withUnsafeBufferPointer { kp in
            try v.data.withUnsafeBufferPointer { vp in
                table.setAll(k: kp.baseAddress!, v: vp.baseAddress!, dim: dim)
                for r in 0...repeats {  // the first run warms up and is not counted
                    try attention.reset()
                    let t0 = DispatchTime.now().uptimeNanoseconds
                    try attention.attend(table, threads: threads, poll: nil)
                    try attention.synchronize()
                    if r > 0 {
                        kernel.append(attention.kernelSeconds)
                        upload.append(attention.uploadSeconds)
                        total.append(Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9)
                    }
                }
            }
        }
        _ = try attention.finish()
        let seconds = Format.median(kernel)
        let peak = try TensorCorePeak.measure(device: device, precision: precision)

        let (dense, real) = setup.flops
        let density = MaskStatistics(mask: mask, config: config).density
        let stats = attention.attendStatistics
        if o.has("json") {
            var j = JSONLine()
            j.add("device", device.name); j.add("workload", workload.rawValue); j.add("seq", seq)
            j.add("heads", heads); j.add("kv_heads", kvHeads); j.add("head_dim", dim); j.add("causal", config.causal)
            j.add("config", config.summary); j.add("precision", precision.rawValue)
            j.add("density", density); j.add("kernel_ms", seconds * 1e3)
            j.add("kernel_ms_min", (kernel.min() ?? 0) * 1e3); j.add("kernel_ms_max", (kernel.max() ?? 0) * 1e3)
            j.add("tflops_real", real / seconds / 1e12); j.add("tflops_dense_equiv", dense / seconds / 1e12)
            j.add("peak_tflops_mma_sync", peak)
            j.add("host_prep_ms", Format.median(upload) * 1e3); j.add("attend_ms", Format.median(total) * 1e3)
            j.add("mask_prediction_s", maskSeconds)
            j.add("setup_s", setupSeconds); j.add("blocks_visited", stats.keyBlocksVisited)
            j.add("pv_skipped", stats.pvBlocksSkipped)
            print(j.text)
        } else {
            print("bench-kernel: \(device.name), \(workload.rawValue) N \(seq), heads \(heads)/\(kvHeads), D \(dim), "
                + "\(config.summary), \(precision.rawValue)")
            print("  density \(Format.fixed(density, 4)); kernel \(Format.fixed(seconds * 1e3, 3)) ms (median of \(repeats); "
                + "min \(Format.fixed((kernel.min() ?? 0) * 1e3, 3)), max \(Format.fixed((kernel.max() ?? 0) * 1e3, 3)))")
            print("  \(Format.fixed(real / seconds / 1e12, 1)) TFLOP/s real, \(Format.fixed(dense / seconds / 1e12, 1)) TFLOP/s dense-equivalent, "
                + "measured mma.sync peak \(Format.fixed(peak, 1)) TFLOP/s; "
                + "host preparation \(Format.fixed(Format.median(upload) * 1e3, 1)) ms, whole attend \(Format.fixed(Format.median(total) * 1e3, 1)) ms, "
                + "mask prediction (CPU) \(Format.fixed(maskSeconds, 2)) s")
        }
        for line in attention.kernelReport { FileHandle.standardError.write(Data("kernel \(line)\n".utf8)) }
    }
}
