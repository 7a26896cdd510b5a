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
        .value("precision", "P", "cuda: bf16|fp16|int8 (default bf16; int8 times the kernel of a whole resident pass, "
            + "which quantizes on the device); cpu: fp32|bf16|fp16|int8 (default fp32)"),
        .value("mask-out", "FILE.npy", "write the block mask [H, nq, nk] as uint8"),
        .value("inputs-out", "PREFIX", "write the generated Q, K, V as PREFIX_q.npy, PREFIX_k.npy, PREFIX_v.npy (float32 [H, N, D]), for another tool to run on"),
        .flag("force", "overwrite existing --mask-out and --inputs-out files"),
        .flag("json", "one JSON object instead of the text line"),
    ] + ConfigOptions.specs

    static let summary = """
        Times the CUDA block-sparse attention kernel on one GPU (device events, median of --repeat, data already
        on the device): real TFLOP/s over the blocks the mask computes, and dense-equivalent TFLOP/s, next to the
        tensor cores' measured mma.sync peak. --precision int8 times the kernel inside a whole resident pass on
        one GPU (Q and K are quantized on the device; the pass's time is reported beside). With --backend cpu: the CPU tiles' pass over every block on all
        cores (SPARGE_CPU_ISA picks the kernels), in GFLOP/s next to the FMA peak (int16 multiply-adds for
        int8), with the precision's error on sampled query blocks. For measuring the driver only:
        SPARGE_BF16_TILES=bookkeeping (kernels that compute nothing) or =emulated (AMX's kernels with the tiles
        emulated) runs --precision bf16 on bf16 tiles on any CPU with AVX2 (the error is then meaningless).
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
        BackendOptions.printHint(config: setup.config, device: device, options: options)
        let timing = precision == .int8
            ? try residentTiming(setup, device: device, options: options)
            : try hostFedTiming(setup, device: device, precision: precision, options: options)
        let peak = try TensorCorePeak.measure(device: device, precision: precision)
        report(timing, setup: setup, device: device, precision: precision, peak: peak, json: o.has("json"))
    }

    /// What one kernel benchmark measured: the kernel's device seconds per run, the host's preparation and
    /// the whole call per run, the setup, the counters, and the kernel's compile report.
    struct Timing {
        var kernel: [Double], preparation: [Double]?, total: [Double]
        var setupSeconds: Double
        var statistics: AttentionStatistics
        var kernelReport: [String] = []
    }

    /// The host-fed path (bf16, fp16): Q on the device once, every K/V block staged from the host each run.
    static func hostFedTiming(_ setup: Setup, device: CUDADevice, precision: CUDAPrecision,
                              options: CUDAOptions) throws -> Timing {
        let t = DispatchTime.now().uptimeNanoseconds
        let attention = try CUDABlockSparseAttention(queries: setup.q, mask: setup.mask, kvHeads: setup.kvHeads,
                                                     config: setup.config, seqLen: setup.seq, device: device,
                                                     precision: precision, options: options)
        let setupSeconds = Double(DispatchTime.now().uptimeNanoseconds - t) * 1e-9
        var table = KeyValueBlockTable(kvHeads: setup.kvHeads, keyBlocks: setup.mask.keyBlocks, blockK: setup.config.blockK,
                                       seqLen: setup.seq)
        let threads = ProcessInfo.processInfo.activeProcessorCount
        var kernel: [Double] = [], upload: [Double] = [], total: [Double] = []
        try setup.k.data.withUnsafeBufferPointer { kp in
            try setup.v.data.withUnsafeBufferPointer { vp in
                table.setAll(k: kp.baseAddress!, v: vp.baseAddress!, dim: setup.dim)
                for r in 0...setup.repeats {  // the first run warms up and is not counted
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
        return Timing(kernel: kernel, preparation: upload, total: total, setupSeconds: setupSeconds,
                      statistics: attention.attendStatistics, kernelReport: attention.kernelReport)
    }

    /// int8: the kernel reads Q and K as the resident pass quantizes them on the device (the host-fed path
    /// stages 16-bit blocks and does not quantize), so the whole pass runs on one rank and the attention
    /// kernel's own device time is taken from it. Its mask is predicted on the device: the same bits as
    /// `setup.mask`, which is checked.
    static func residentTiming(_ setup: Setup, device: CUDADevice, options: CUDAOptions) throws -> Timing {
        let t = DispatchTime.now().uptimeNanoseconds
        let engine = try CUDAAttentionEngine(device: device, precision: .int8, options: options)
        let (q, k, v) = (try engine.upload(Tensor(setup.q)), try engine.upload(Tensor(setup.k)), try engine.upload(Tensor(setup.v)))
        let layout = try ShardLayout(seqLen: setup.seq, ranks: 1, config: setup.config)
        let setupSeconds = Double(DispatchTime.now().uptimeNanoseconds - t) * 1e-9
        var kernel: [Double] = [], total: [Double] = []
        var statistics = AttentionStatistics()
        for r in 0...setup.repeats {  // the first run compiles the kernels and is not counted
            let result = try ShardedAttention.forwardResident(q: q, k: k, v: v, layout: layout, config: setup.config,
                                                              communicator: SingleProcessCommunicator(), engine: engine,
                                                              kvFormat: .bf16)
            guard result.mask == setup.mask else {
                throw CUDAError.unsupported("bench-kernel: the device predicted a mask other than the CPU's "
                    + "(\(result.mask.computedCount) against \(setup.mask.computedCount) blocks)")
            }
            statistics = result.statistics.attention
            if r > 0 {
                kernel.append(statistics.deviceSeconds ?? 0)
                total.append(result.statistics.totalSeconds)
            }
        }
        return Timing(kernel: kernel, preparation: nil, total: total, setupSeconds: setupSeconds, statistics: statistics)
    }

    static func report(_ timing: Timing, setup: Setup, device: CUDADevice, precision: CUDAPrecision, peak: Double, json: Bool) {
        let (config, seq, repeats) = (setup.config, setup.seq, setup.repeats)
        let seconds = Format.median(timing.kernel)
        let (dense, real) = setup.flops
        let density = MaskStatistics(mask: setup.mask, config: config).density
        let (minimum, maximum) = (timing.kernel.min() ?? 0, timing.kernel.max() ?? 0)
        if json {
            var j = JSONLine()
            j.add("device", device.name); j.add("workload", setup.workload.rawValue); j.add("seq", seq)
            j.add("heads", setup.heads); j.add("kv_heads", setup.kvHeads); j.add("head_dim", setup.dim)
            j.add("causal", config.causal)
            j.add("config", config.summary); j.add("precision", precision.rawValue)
            j.add("density", density); j.add("kernel_ms", seconds * 1e3)
            j.add("kernel_ms_min", minimum * 1e3); j.add("kernel_ms_max", maximum * 1e3)
            j.add("tflops_real", real / seconds / 1e12); j.add("tflops_dense_equiv", dense / seconds / 1e12)
            j.add("peak_tflops_mma_sync", peak)
            j.add("host_prep_ms", timing.preparation.map { Format.median($0) * 1e3 })
            j.add(precision == .int8 ? "pass_ms" : "attend_ms", Format.median(timing.total) * 1e3)
            j.add("mask_prediction_s", setup.maskSeconds)
            j.add("setup_s", timing.setupSeconds); j.add("blocks_visited", timing.statistics.keyBlocksVisited)
            j.add("pv_skipped", timing.statistics.pvBlocksSkipped)
            print(j.text)
        } else {
            print("bench-kernel: \(device.name), \(setup.workload.rawValue) N \(seq), heads \(setup.heads)/\(setup.kvHeads), "
                + "D \(setup.dim), \(config.summary), \(precision.rawValue)")
            print("  density \(Format.fixed(density, 4)); kernel \(Format.fixed(seconds * 1e3, 3)) ms (median of \(repeats); "
                + "min \(Format.fixed(minimum * 1e3, 3)), max \(Format.fixed(maximum * 1e3, 3)))")
            let around = timing.preparation.map {
                "host preparation \(Format.fixed(Format.median($0) * 1e3, 1)) ms, whole attend \(Format.fixed(Format.median(timing.total) * 1e3, 1)) ms"
            } ?? "whole resident pass (int8 quantizes on the device) \(Format.fixed(Format.median(timing.total) * 1e3, 1)) ms"
            print("  \(Format.fixed(real / seconds / 1e12, 1)) TFLOP/s real, \(Format.fixed(dense / seconds / 1e12, 1)) TFLOP/s dense-equivalent, "
                + "measured mma.sync peak \(Format.fixed(peak, 1)) TFLOP/s; \(around), "
                + "mask prediction (CPU) \(Format.fixed(setup.maskSeconds, 2)) s")
        }
        for line in timing.kernelReport { FileHandle.standardError.write(Data("kernel \(line)\n".utf8)) }
    }
}
