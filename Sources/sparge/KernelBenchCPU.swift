import Foundation
import SpargeRing

/// `sparge bench-kernel --backend cpu`: the CPU tiles' pass alone — `BlockSparseAttention.attend` over every
/// block of the mask, in one process, with the K/V blocks already in memory (for int8 their quantization,
/// once per block, is part of it) — timed on the wall clock, median of `--repeat`, next to the ceiling of
/// what the tiles compute with (the FMA probe, or the int16 multiply-add probe for int8) and the error the
/// precision costs on a sample of query blocks against Double attention with the same mask.
///
/// For measuring the driver on any CPU with AVX2 (not for results): SPARGE_BF16_TILES=emulated or
/// =bookkeeping runs `--precision bf16` on bf16 tiles whose kernels are a `Bf16TileStandIn` — the AMX kernels
/// with emulated tiles, or kernels that compute nothing, so that the pass costs what the driver costs around
/// the kernels (its error is then meaningless).
enum KernelBenchCPU {
    static func run(_ o: ParsedOptions, _ ctx: CommandContext) throws {
        let precision = try BackendOptions.precision(o) ?? .fp32
        let engine = try BackendOptions.cpuEngine(precision: precision, ctx: ctx)
        let standIn = try bf16StandIn(precision: precision)
        let setup = try KernelBenchCommand.Setup(o)
        let (config, q, k, v, mask) = (setup.config, setup.q, setup.k, setup.v, setup.mask)
        let threads = try ConfigOptions.threads(o)
        var table = KeyValueBlockTable(kvHeads: setup.kvHeads, keyBlocks: mask.keyBlocks, blockK: config.blockK,
                                       seqLen: setup.seq)
        var seconds: [Double] = []
        var output = Tensor3(heads: 0, rows: 0, dim: 0)
        try k.data.withUnsafeBufferPointer { kp in
            try v.data.withUnsafeBufferPointer { vp in
                table.setAll(k: kp.baseAddress!, v: vp.baseAddress!, dim: setup.dim)
                for r in 0...setup.repeats {  // the first run warms up and is not counted
                    let attention = try standIn.map {
                        try BlockSparseAttention(queries: q, mask: mask, kvHeads: setup.kvHeads, config: config,
                                                 seqLen: setup.seq, threads: threads, bf16StandIn: $0)
                    } ?? BlockSparseAttention(queries: q, mask: mask, kvHeads: setup.kvHeads, config: config,
                                              seqLen: setup.seq, threads: threads, backend: .isa(engine.isa),
                                              precision: precision)
                    let t0 = DispatchTime.now().uptimeNanoseconds
                    attention.attend(table, threads: threads)
                    if r > 0 { seconds.append(Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9) }
                    output = attention.finish(threads: threads).output
                }
            }
        }
        let time = Format.median(seconds)
        let products = standIn == nil ? TileProducts.chosen(precision: precision, isa: engine.isa, headDim: setup.dim)
            : .fp32  // the stand-ins run on any CPU: the FMA is the yardstick there
        let peak = PeakFlops.measure(threads: threads, seconds: 0.3, isa: engine.isa, products: products)
        let (dense, real) = setup.flops
        let error = sampledError(output: output, setup: setup)
        let density = MaskStatistics(mask: mask, config: config).density
        let kernels = standIn.map { "bf16 tiles: \($0.rawValue)" } ?? engine.isa.rawValue
        if o.has("json") {
            var j = JSONLine()
            j.add("device", "cpu"); j.add("isa", kernels); j.add("threads", threads)
            j.add("workload", setup.workload.rawValue); j.add("seq", setup.seq); j.add("heads", setup.heads)
            j.add("kv_heads", setup.kvHeads); j.add("head_dim", setup.dim); j.add("causal", config.causal)
            j.add("config", config.summary); j.add("precision", precision.rawValue); j.add("density", density)
            j.add("kernel_ms", time * 1e3); j.add("kernel_ms_min", (seconds.min() ?? 0) * 1e3)
            j.add("kernel_ms_max", (seconds.max() ?? 0) * 1e3)
            j.add("gflops_real", real / time / 1e9); j.add("gflops_dense_equiv", dense / time / 1e9)
            j.add("peak_gflops", peak); j.add("rel_l1_sampled", error); j.add("mask_prediction_s", setup.maskSeconds)
            print(j.text)
        } else {
            print("bench-kernel: cpu \(kernels), \(threads) threads, \(setup.workload.rawValue) N \(setup.seq), "
                + "heads \(setup.heads)/\(setup.kvHeads), D \(setup.dim), \(config.summary), \(precision.rawValue)")
            print("  density \(Format.fixed(density, 4)); pass \(Format.fixed(time * 1e3, 1)) ms (median of \(setup.repeats)); "
                + "\(Format.fixed(real / time / 1e9, 1)) GFLOP/s real, \(Format.fixed(dense / time / 1e9, 1)) dense-equivalent, "
                + "peak \(Format.fixed(peak, 0)) (\(precision == .int8 ? "int16 multiply-adds" : "FMA")); "
                + "rel L1 \(String(format: "%.2e", error)) against Double on sampled query blocks")
        }
    }

    /// The stand-in SPARGE_BF16_TILES names (`emulated`, `bookkeeping`), or nil when it is unset or empty.
    static func bf16StandIn(precision: AttentionPrecision) throws -> Bf16TileStandIn? {
        guard let name = ProcessInfo.processInfo.environment["SPARGE_BF16_TILES"], !name.isEmpty else { return nil }
        guard let standIn = Bf16TileStandIn(rawValue: name) else {
            throw UsageError("SPARGE_BF16_TILES=\(name): one of "
                + Bf16TileStandIn.allCases.map(\.rawValue).joined(separator: ", "))
        }
        guard precision == .bf16 else { throw UsageError("SPARGE_BF16_TILES needs --precision bf16, not \(precision.rawValue)") }
        return standIn
    }

    /// Relative L1 of up to 4 evenly spread query blocks against Double attention with the same mask on the
    /// unrounded inputs: what the precision costs (fp32: its rounding only).
    static func sampledError(output: Tensor3, setup: KernelBenchCommand.Setup) -> Double {
        let blocks = (setup.seq + setup.config.blockQ - 1) / setup.config.blockQ
        let sample = Array(Set((0..<4).map { $0 * blocks / 4 })).sorted()
        let reference = ReferenceAttention.compute(q: setup.q, k: setup.k, v: setup.v, mask: setup.mask,
                                                   config: setup.config, queryBlocks: sample).output
        var got: [Float] = []
        for h in 0..<setup.heads {
            for i in sample {
                let rows = (i * setup.config.blockQ)..<min(setup.seq, (i + 1) * setup.config.blockQ)
                got += output.data[((h * setup.seq + rows.lowerBound) * setup.dim)..<((h * setup.seq + rows.upperBound) * setup.dim)]
            }
        }
        return ErrorMetrics(output: got, reference: reference).relativeL1
    }
}
