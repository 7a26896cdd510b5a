import Foundation
import SpargeFormats
import SpargeCUDA
import SpargeRing
import SpargeWorkloads

/// `sparge verify`: the distributed result against a single process and against dense attention.
enum VerifyCommand {
    static let specs: [OptionSpec] = [
        .value("workload", "llm|video|random", "generated inputs (default llm, unless --q/--k/--v are given)"),
        .value("seq", "N", "tokens, for a generated workload (default 4096)"),
        .value("heads", "H", "query heads, for a generated workload (default 2)"),
        .value("kv-heads", "H", "key/value heads, for a generated workload (default: --heads)"),
        .value("head-dim", "D", "head dimension, for a generated workload (default 64)"),
        .value("seed", "S", "workload seed (default 1)"),
        .value("q", "FILE", "queries from a file instead (.npy or .safetensors:TENSOR)"),
        .value("k", "FILE", "keys from a file"),
        .value("v", "FILE", "values from a file"),
        .value("layout", "hnd|nhd", "layout of the files (default hnd)"),
        .flag("no-reference", "skip the Double references (for large N): check against one process only"),
        .value("tolerance", "X", "largest relative L1 allowed against one process (default 1e-5; 2e-4 for --precision int8, 3e-3 for bf16 on AVX512-BF16 or AMX)"),
        .flag("json", "print one JSON object"),
    ] + ConfigOptions.specs + BackendOptions.specs

    static let summary = """
        Runs the forward pass sharded over the ranks of this launch and checks each rank's rows against one
        process computing the whole sequence: masks must be identical, outputs within --tolerance (relative L1).
        Also reports the error against dense attention and against attention restricted to the mask, both in
        Double. With the λ rule on (--pv-threshold below 50) the skips depend on the order in which blocks arrive,
        which differs between layouts (a rank sees its own blocks first), so the check is instead that the
        distributed error to dense stays within twice the single-process error to dense.
        Every rank holds the whole input here: for moderate N. Exits 1 when a check fails.
        """

    static func main(_ arguments: [String]) -> Int32 {
        Command.main(name: "verify", usage: "[--workload W --seq N | --q F --k F --v F] [options]", summary: summary,
                     specs: specs, arguments: arguments, body: run)
    }

    static func run(_ o: ParsedOptions, _ ctx: CommandContext) throws {
        let config = try ConfigOptions.config(o)
        let threads = try ConfigOptions.threads(o)
        let engine = try BackendOptions.engine(o, ctx: ctx)
        let kvFormat = try BackendOptions.kvFormat(o, engine: engine)
        BackendOptions.hint(engine, config: config, ctx: ctx)
        // int8 rounds P to 14 bits against the running max of the moment, which depends on the order in which
        // blocks arrive (a rank sees its own first): two orders differ by that rounding, ~2e-5 relative L1.
        let int8 = (engine as? CPUAttentionEngine)?.precision == .int8
        // The GPU's int8 (SageAttention's: K smoothed by its head's mean, P·V in 16 bits) costs ~9e-3 relative
        // L1 on random inputs, whose near-uniform attention leaves the output small against the quantization's
        // noise, and 1.8–2.1e-2 on llm inputs, whose keys' mean drifts along the sequence so that the head's
        // mean leaves each block an offset that int8 spends its range on (benchmarks/int8-smoothing.py repeats
        // it in NumPy: 1.76e-2; the upstream kernel costs 2.27e-2 there): bounded by 3e-2.
        let gpuInt8 = (engine as? CUDAAttentionEngine)?.precision == .int8
        // bf16 on bf16 products (AVX512-BF16, AMX) rounds P to bf16 against the running max of the moment as well (2⁻⁹ relative per p
        // at most): two orders differ by that rounding, and the Double reference, which cannot repeat it, by
        // ~1e-3 relative L1 on random inputs (Bf16TileTests: 1.1–1.4e-3, bounded there by 3e-3).
        let givenTolerance = try o.float("tolerance", range: 0...1).map(Double.init)
        let withReferences = !o.has("no-reference")
        if !withReferences && config.lambdaActive {
            throw UsageError("with the λ rule on, verify judges by the error to the dense reference: drop --no-reference")
        }
        let comm = ctx.comm
        var (q, k, v) = try inputs(o, ctx: ctx, blockQ: config.blockQ)
        let bf16Tiles = (engine as? CPUAttentionEngine).map {
            TileProducts.chosen(precision: $0.precision, isa: $0.isa, headDim: q.dim) == .bf16Tiles
        } ?? false
        let tolerance = givenTolerance ?? (int8 ? 2e-4 : bf16Tiles ? 3e-3 : 1e-5)
        if let cuda = engine as? CUDAAttentionEngine {
            // The GPU takes 16-bit inputs: round them here, so that the references see what the GPU sees.
            (q, k, v) = (cuda.precision.rounded(q), cuda.precision.rounded(k), cuda.precision.rounded(v))
        }
        if let cpu = engine as? CPUAttentionEngine {
            // The same for a 16-bit precision on the CPU (rounding again inside is then exact).
            (q, k, v) = (cpu.precision.rounded(q), cpu.precision.rounded(k), cpu.precision.rounded(v))
        }
        if kvFormat != .f32 {
            // K/V are stored in 16 bits for the ring: the references see the same rounded values (the CPU
            // widens them exactly, so its arithmetic is then that of f32 on these inputs).
            (k, v) = (k.rounded(to: kvFormat), v.rounded(to: kvFormat))
        }
        let n = q.rows
        let layout = try ShardLayout(seqLen: n, ranks: comm.size, config: config)
        let mine = layout.tokenRanges[comm.rank]
        let distributed = try ShardedAttention.forward(
            q: q.rows(mine), k: k.rows(mine), v: v.rows(mine), layout: layout, config: config,
            communicator: comm, threads: threads, engine: engine, kvFormat: kvFormat)

        // One process, whole sequence: the same library with a single-process communicator.
        let single = try ShardedAttention.forward(
            q: q, k: k, v: v, layout: try ShardLayout(seqLen: n, ranks: 1, config: config),
            config: config, communicator: SingleProcessCommunicator(), threads: threads, engine: engine,
            kvFormat: kvFormat)
        let myBlocks = layout.queryBlocks(rank: comm.rank)
        var mismatches = 0
        for h in 0..<q.heads {
            for (row, block) in myBlocks.enumerated() {
                for j in 0..<layout.keyBlockCount where distributed.mask[h, row, j] != single.mask[h, block, j] {
                    mismatches += 1
                }
            }
        }
        let singleRows = single.output.rows(mine)
        // sums of |a − b| and |b| for: vs single, vs masked reference, vs dense; single vs dense; mismatches
        var sums = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, Double(mismatches)]
        let out = distributed.output.data
        for i in out.indices {
            let s = Double(singleRows.data[i])
            sums[0] += abs(Double(out[i]) - s); sums[1] += abs(s)
        }
        if withReferences {
            let denseRef = ReferenceAttention.compute(q: q, k: k, v: v, mask: nil, config: config, queryBlocks: myBlocks)
            let maskedRef = ReferenceAttention.compute(q: q, k: k, v: v, mask: single.mask, config: config, queryBlocks: myBlocks)
            for i in out.indices {
                let s = Double(singleRows.data[i])
                sums[2] += abs(Double(out[i]) - maskedRef.output[i]); sums[3] += abs(maskedRef.output[i])
                sums[4] += abs(Double(out[i]) - denseRef.output[i]); sums[5] += abs(denseRef.output[i])
                sums[6] += abs(s - denseRef.output[i]); sums[7] += abs(denseRef.output[i])
            }
        }
        comm.allreduceSum(&sums)
        let vsSingle = sums[0] / sums[1]
        let vsMasked = withReferences ? sums[2] / sums[3] : Double.nan
        let vsDense = withReferences ? sums[4] / sums[5] : Double.nan
        let singleVsDense = withReferences ? sums[6] / sums[7] : Double.nan
        let totalMismatches = Int(sums[8])
        let payload = ShardedAttention.ringPayload(engine: engine, kvFormat: kvFormat, headDim: q.dim)
        let traffic = ExpectedTraffic(mask: single.mask, layout: layout, kvHeads: k.heads, payload: payload)
        var counted = [Double(distributed.statistics.ring.bytesSent), Double(distributed.statistics.ring.messagesSent),
                       Double(distributed.statistics.ring.denseRingBytes), Double(distributed.statistics.attention.pvBlocksSkipped)]
        comm.allreduceSum(&counted)
        let lambdaOn = config.lambdaActive
        var failures: [String] = []
        if totalMismatches > 0 { failures.append("\(totalMismatches) mask blocks differ from the single-process mask") }
        if Int(counted[0]) != traffic.bytes || Int(counted[1]) != traffic.messages {
            failures.append("the ring sent \(Int(counted[0])) bytes in \(Int(counted[1])) messages; the mask says \(traffic.bytes) bytes in \(traffic.messages)")
        }
        if lambdaOn {
            if vsDense > 2 * singleVsDense + tolerance {
                failures.append("with the λ rule on, rel L1 to dense \(vsDense) exceeds twice single-process's \(singleVsDense)")
            }
        } else {
            // Written as !(x <= t) so that a NaN fails too.
            if !(vsSingle <= tolerance) { failures.append("rel L1 to the single-process output \(vsSingle) > \(tolerance)") }
            // int8 quantizes by rows and blocks, which the reference cannot repeat on its inputs (requantizing
            // a smoothed block moves its grid): it sees the unquantized inputs, and the check is int8's bound.
            let referenceTolerance = int8 ? 1e-2 : gpuInt8 ? 3e-2 : bf16Tiles ? 4e-3 : tolerance
            if withReferences && !(vsMasked <= referenceTolerance) {
                failures.append("rel L1 to the masked Double reference \(vsMasked) > \(referenceTolerance)")
            }
        }
        if ctx.isRoot {
            if o.has("json") {
                var json = JSONLine()
                json.add("backend", BackendOptions.describe(engine))
                json.add("seq", n); json.add("ranks", comm.size); json.add("heads", q.heads); json.add("kv_heads", k.heads)
                json.add("head_dim", q.dim); json.add("causal", config.causal)
                json.add("density", distributed.statistics.mask.density)
                json.add("mask_mismatches", totalMismatches)
                json.add("rel_l1_vs_single", vsSingle); json.add("rel_l1_vs_masked_reference", vsMasked)
                json.add("rel_l1_vs_dense", vsDense); json.add("single_rel_l1_vs_dense", singleVsDense)
                json.add("bytes_sent", Int(counted[0])); json.add("bytes_expected", traffic.bytes)
                json.add("messages", Int(counted[1])); json.add("messages_expected", traffic.messages)
                json.add("bytes_dense_ring", Int(counted[2])); json.add("pv_skipped", Int(counted[3]))
                json.add("passed", failures.isEmpty)
                print(json.text)
            } else {
                print("sparge verify: N \(n), heads \(q.heads)/\(k.heads), D \(q.dim), \(comm.size) rank(s), "
                    + "\(config.causal ? "causal" : "non-causal"), density \(Format.fixed(distributed.statistics.mask.density, 4)), "
                    + "backend \(BackendOptions.describe(engine))")
                print("  mask blocks differing from one process: \(totalMismatches)")
                print("  rel L1 vs one process:            \(Format.scientific(vsSingle))")
                if withReferences {
                    print("  rel L1 vs masked Double reference: \(Format.scientific(vsMasked))")
                    print("  rel L1 vs dense Double reference:  \(Format.scientific(vsDense)) (one process: \(Format.scientific(singleVsDense)))")
                } else {
                    print("  Double references: skipped (--no-reference)")
                }
                print("  ring traffic: \(Format.bytes(Int(counted[0]))) in \(Int(counted[1])) messages (the mask predicts \(Format.bytes(traffic.bytes)) in \(traffic.messages); a dense ring: \(Format.bytes(Int(counted[2]))))")
                print(failures.isEmpty ? "PASSED" : "FAILED: " + failures.joined(separator: "; "))
            }
        }
        if !failures.isEmpty { ctx.exit(1) }
    }

    /// The whole Q, K, V on every rank: from files, or generated.
    static func inputs(_ o: ParsedOptions, ctx: CommandContext, blockQ: Int) throws -> (Tensor3, Tensor3, Tensor3) {
        let files = ["q", "k", "v"].filter { o.string($0) != nil }
        if !files.isEmpty {
            guard files.count == 3 else { throw UsageError("give all of --q, --k and --v, or none") }
            for flag in ["workload", "seq", "heads", "kv-heads", "head-dim", "seed"] where o.string(flag) != nil {
                throw UsageError("--\(flag) describes a generated workload; it cannot be combined with --q/--k/--v")
            }
            let layout = TensorLayout(rawValue: try o.choice("layout", TensorLayout.allCases.map(\.rawValue)) ?? "hnd")!
            return ctx.collectively {
                let set = try InputSet(q: o.string("q")!, k: o.string("k")!, v: o.string("v")!, layout: layout)
                try MemoryBudget.forward(rows: set.seqLen, seqLen: set.seqLen, queryHeads: set.queryHeads,
                                         kvHeads: set.kvHeads, dim: set.headDim, blockQ: blockQ, blockK: 16)
                    .check(ranksOnNode: MemoryBudget.ranksOnNode)
                return try set.read([0..<set.seqLen])
            }
        }
        let workload = try o.choice("workload", Workload.allCases.map(\.rawValue)).flatMap(Workload.init) ?? .llm
        let seq = try o.int("seq") ?? 4096
        let heads = try o.int("heads", range: 1...4096) ?? 2
        let kvHeads = try o.int("kv-heads", range: 1...4096) ?? heads
        guard heads % kvHeads == 0 else { throw UsageError("--heads \(heads) is not a multiple of --kv-heads \(kvHeads)") }
        let dim = try o.int("head-dim", range: 1...1024) ?? 64
        let seed = UInt64(try o.int("seed", range: 0...Int.max) ?? 1)
        // Every rank holds the whole sequence here.
        ctx.collectively {
            try MemoryBudget.forward(rows: seq, seqLen: seq, queryHeads: heads, kvHeads: kvHeads, dim: dim,
                                     blockQ: blockQ, blockK: 16).check(ranksOnNode: MemoryBudget.ranksOnNode)
        }
        let generator = ctx.collectively {
            try WorkloadGenerator(workload, shape: WorkloadShape(queryHeads: heads, kvHeads: kvHeads, seqLen: seq, headDim: dim), seed: seed)
        }
        return generator.generate(rows: [0..<seq])
    }
}
