import Foundation
import SpargeFormats
import SpargeRing
import SpargeWorkloads

/// `sparge bench`: a generated workload, timed; one table row (or JSON line) per configuration.
enum BenchCommand {
    static let specs: [OptionSpec] = [
        .value("workload", "llm|video|random", "generated inputs (default llm)"),
        .value("seq", "N", "tokens in the sequence (required)"),
        .value("heads", "H", "query heads (default 1)"),
        .value("kv-heads", "H", "key/value heads (default: --heads; GQA when fewer)"),
        .value("head-dim", "D", "head dimension (default 128)"),
        .value("seed", "S", "workload seed (default 1)"),
        .value("repeat", "R", "timed repetitions; the median time is reported, with the phases of the median pass (the lower middle one for an even count) (default 1)"),
        .flag("hilbert", "video workload: attend in 3-D Hilbert order of its T×H×W grid (non-causal)"),
        .flag("compare-dense", "also time dense mode on the same input, for the speed-up column"),
        .value("verify-sample", "K", "check K sampled query blocks against exact dense attention"),
        .value("mask-image", "FILE.png", "draw the block mask of one head"),
        .value("mask-head", "H", "head drawn by --mask-image (default 0)"),
        .flag("force", "overwrite an existing --mask-image file"),
        .flag("json", "one JSON object per line instead of the table"),
        .value("dtype", "f32|bf16|f16", "the element type a GPU pass is handed Q, K, V in, as a model's tensors "
            + "(default f32; the inputs are rounded to it, and --verify-sample compares with the f32 workload)"),
    ] + ConfigOptions.specs + BackendOptions.specs

    static let summary = """
        Times SpargeAttn on a generated workload (each rank generates only its own shard) and prints: N, ranks,
        density, time, dense-equivalent GFLOP/s next to the measured peak of what computes the tiles (the CPU
        threads' FMA peak — their int16 multiply-add peak for --precision int8 —, or the GPUs' tensor-core
        mma.sync rate), speed-up over dense mode (with
        --compare-dense), error (with --verify-sample), and bytes moved against a dense ring.
        Run under mpirun for several ranks: mpirun -np 2 sparge bench --workload llm --seq 65536 --causal
        """

    static func main(_ arguments: [String]) -> Int32 {
        Command.main(name: "bench", usage: "--seq N [options]", summary: summary, specs: specs,
                     arguments: arguments, body: run)
    }

    static func run(_ o: ParsedOptions, _ ctx: CommandContext) throws {
        let config = try ConfigOptions.config(o)
        let threads = try ConfigOptions.threads(o)
        let engine = try BackendOptions.engine(o, ctx: ctx)
        let kvFormat = try BackendOptions.kvFormat(o, engine: engine)
        BackendOptions.hint(engine, config: config, ctx: ctx)
        let workload = try o.choice("workload", Workload.allCases.map(\.rawValue)).flatMap(Workload.init) ?? .llm
        guard let seq = try o.int("seq") else { throw UsageError("bench: missing required option '--seq'") }
        let heads = try o.int("heads", range: 1...4096) ?? 1
        let kvHeads = try o.int("kv-heads", range: 1...4096) ?? heads
        guard heads % kvHeads == 0 else { throw UsageError("--heads \(heads) is not a multiple of --kv-heads \(kvHeads)") }
        let dim = try o.int("head-dim", range: 1...1024) ?? 128
        let seed = UInt64(try o.int("seed", range: 0...Int.max) ?? 1)
        let repeats = try o.int("repeat", range: 1...1000) ?? 1
        let samples = try o.int("verify-sample", range: 0...1_000_000) ?? 0
        let maskHead = try o.int("mask-head", range: 0...4095) ?? 0
        guard maskHead < heads else { throw UsageError("--mask-head \(maskHead) but there are \(heads) heads") }
        let imagePath = o.string("mask-image")
        let dtype = try o.choice("dtype", StorageFormat.allCases.map(\.rawValue)).flatMap(StorageFormat.init) ?? .f32
        let comm = ctx.comm
        ctx.collectively {
            try MemoryBudget.forward(rows: MemoryBudget.rowsPerRank(seqLen: seq, ranks: comm.size), seqLen: seq,
                                     queryHeads: heads, kvHeads: kvHeads, dim: dim, blockQ: config.blockQ, blockK: config.blockK)
                .check(ranksOnNode: MemoryBudget.ranksOnNode)
        }
        // The picture's file exists before the computation, so that a path that cannot be written fails now.
        let outputs = imagePath.map { path -> PendingOutputs in
            let outputs = PendingOutputs(ctx: ctx)
            outputs.addPicture(path: path, overwrite: o.has("force"))
            return outputs
        }

        let progress = ProgressReporter(enabled: ctx.isRoot && !o.has("json"))
        let shape = WorkloadShape(queryHeads: heads, kvHeads: kvHeads, seqLen: seq, headDim: dim)
        let generator = ctx.collectively { try WorkloadGenerator(workload, shape: shape, seed: seed) }
        let layout = try ShardLayout(seqLen: seq, ranks: comm.size, config: config)
        // With --hilbert, position p of the sequence holds token order[p] of the row-major grid.
        var order: [Int]?
        if o.has("hilbert") {
            guard workload == .video, !config.causal else {
                throw UsageError("--hilbert reorders the tokens of a video grid: it needs --workload video and no --causal")
            }
            let grid = VideoGrid.default(for: seq)
            order = HilbertPermutation(frames: grid.frames, height: grid.height, width: grid.width).order
        }
        progress.update("generate", 0)
        let tokenOrder = order
        func tokens(_ positions: [Range<Int>]) -> [Range<Int>] {
            guard let tokenOrder else { return positions }
            return positions.flatMap { $0.map { tokenOrder[$0]..<(tokenOrder[$0] + 1) } }
        }
        let (q, k, v) = generator.generate(rows: tokens(layout.tokenRanges[comm.rank]))

        // The yardstick: the measured peak of what computes the tiles (all ranks' CPU threads, or the GPUs).
        let peak = [try BackendOptions.peakGFLOPs(engine, threads: threads, headDim: dim, ctx: ctx)]

        // A resident engine (a GPU) gets the tensors once, before the timing, as a model's tensors would be.
        let resident = (engine as? any ResidentAttentionEngine).flatMap { $0.runsResident ? $0 : nil }
        guard dtype == .f32 || resident != nil else {
            throw UsageError("--dtype \(dtype.rawValue) hands the inputs to a GPU pass; the \(BackendOptions.describe(engine)) "
                + "backend takes f32 inputs (its arithmetic is --precision)")
        }
        let entered = resident.map { r in
            ctx.collectively {
                try zip(["Q", "K", "V"], [q, k, v]).map { name, x in
                    guard dtype != .f32 else { return try r.upload(Tensor(x)) }
                    let (converted, overflowed) = Tensor.converting(x, to: dtype)
                    if overflowed { throw UsageError("--dtype \(dtype.rawValue): \(name) \(converted.shape) holds values beyond its range") }
                    return try r.upload(converted)
                }
            }
        }
        /// The last pass's result carrying the statistics (phases, bytes) of the median pass — of the lower
        /// of the middle two for an even count — and the median of the passes' times.
        func timed(_ config: SpargeConfig, _ label: String) throws -> (ForwardResult, Double) {
            var times: [Double] = []
            var statistics: [ForwardStatistics] = []
            var last: ForwardResult?
            var lastResident: ResidentForwardResult?
            var pass = 0, paused = false
            let report = { (phase: String, f: Double) in
                progress.update("\(label) \(phase)", f)
                if phase == "ring" && pass == repeats - 1 && !paused {
                    paused = true
                    TestPause.at(.benchLastRing, rank: comm.rank)
                }
            }
            let profiledFrom = VisitProfile.totals
            defer { if VisitProfile.enabled { printVisitProfile(VisitProfile.totals.since(profiledFrom), label, comm) } }
            for p in 0..<repeats {
                pass = p
                // The last pass's result goes before the next pass begins, as a model's layer output does
                // once it is consumed: the next pass then reuses its memory instead of faulting in fresh
                // pages (with it kept, the second of three passes paid the first's allocations again).
                (last, lastResident) = (nil, nil)
                comm.barrier()
                if let resident, let entered {
                    let result = try ShardedAttention.forwardResident(
                        q: entered[0], k: entered[1], v: entered[2], layout: layout, config: config, communicator: comm, engine: resident,
                        kvFormat: kvFormat, progress: report)
                    times.append(comm.allreduceMax(result.statistics.totalSeconds))
                    statistics.append(result.statistics)
                    lastResident = result
                } else {
                    let result = try ShardedAttention.forward(q: q, k: k, v: v, layout: layout, config: config,
                                                              communicator: comm, threads: threads, engine: engine,
                                                              kvFormat: kvFormat, progress: report)
                    times.append(comm.allreduceMax(result.statistics.totalSeconds))
                    statistics.append(result.statistics)
                    last = result
                }
            }
            // The output comes down once, after the timing, for the checks and the report.
            if let lastResident, let resident { last = ctx.collectively { try lastResident.onHost(resident) } }
            // Every rank picks the same pass: the times are each pass's slowest rank's.
            let median = times.indices.sorted { times[$0] < times[$1] }[(times.count - 1) / 2]
            last!.statistics = statistics[median]
            return (last!, Format.median(times))
        }
        let (result, seconds) = try timed(config, "sparse")
        var denseSeconds: Double?
        if o.has("compare-dense") {
            var dense = config
            dense.selection = .dense
            denseSeconds = try timed(dense, "dense").1
        }
        var error: ErrorSums?
        if samples > 0 {
            progress.update("verify", 0)
            error = try SampledVerification.relativeL1(
                result: result, layout: layout, generator: generator, config: config, samples: samples,
                threads: threads, comm: comm, tokens: tokens)
        }
        if let outputs, let imagePath {
            let note = outputs.writePicture { try MaskPicture.png(result: result, layout: layout, head: maskHead, comm: comm) }
            outputs.commit()
            if let note { RunCommand.printNote("\(note) \(imagePath)") }
        }
        progress.finish()

        let report = RunReport(result: result, seconds: seconds, layout: layout, heads: heads, kvHeads: kvHeads,
                               dim: dim, config: config, threads: threads, kvFormat: kvFormat, comm: comm)
        guard ctx.isRoot else { return }
        if o.has("json") {
            var json = report.json
            json.add("workload", workload.rawValue)
            json.add("hilbert", order != nil)
            json.add("backend", BackendOptions.describe(engine))
            json.add("isa", BackendOptions.isa(engine))
            json.add("precision", BackendOptions.precision(engine))
            json.add("dtype", dtype.rawValue)
            json.add("peak_gflops", peak[0])
            json.add("dense_seconds", denseSeconds)
            json.add("speedup_over_dense", denseSeconds.map { $0 / seconds })
            json.add("rel_l1", error?.relativeL1)
            json.add("verified_blocks", error?.blocks ?? 0)
            print(json.text)
        } else {
            var table = TextTable(["N", "ranks", "thr", "density", "time s", "GFLOP/s (dense-eq)", "peak", "vs dense",
                                   "rel L1", "bytes moved", "dense ring", "hidden"])
            table.add([String(seq), String(comm.size), String(threads), Format.fixed(report.density, 4),
                       Format.fixed(seconds, 3), Format.fixed(report.gflopsDenseEquivalent, 1),
                       Format.fixed(peak[0], 0),
                       denseSeconds.map { Format.fixed($0 / seconds, 2) + "x" } ?? "-",
                       Format.scientific(error?.relativeL1), Format.bytes(report.bytesSent),
                       Format.bytes(report.denseRingBytes), Format.fixed(report.hiddenShare * 100, 0) + "%"])
            print("sparge bench: workload \(workload.rawValue)\(order != nil ? " in Hilbert order" : ""), heads \(heads)/\(kvHeads), D \(dim), "
                + "\(config.summary), repeat \(repeats) (median), backend \(BackendOptions.describe(engine))")
            print(table.text)
            print(report.phaseLine)
        }
    }

    /// `SPARGE_PROFILE_VISITS=1`: where this rank's bf16 visits of one mode's passes went (`VisitProfile`),
    /// summed over its workers, per visit.
    static func printVisitProfile(_ t: VisitProfile.Totals, _ label: String, _ comm: Communicator) {
        guard t.visits > 0 else { return RunCommand.printNote("visit profile, \(label), rank \(comm.rank): no bf16 visits") }
        func perVisit(_ ns: Int) -> String { Format.fixed(Double(ns) / Double(t.visits) / 1e3, 2) }
        let seconds = Double(t.scoresNanoseconds + t.softmaxNanoseconds + t.pvNanoseconds) * 1e-9
        RunCommand.printNote("visit profile, \(label), rank \(comm.rank): \(t.visits) visits of \(t.keys / t.visits) keys on "
            + "average; per visit scores \(perVisit(t.scoresNanoseconds)) µs, softmax \(perVisit(t.softmaxNanoseconds)) µs, "
            + "P·V \(perVisit(t.pvNanoseconds)) µs; \(Format.fixed(seconds, 3)) s in the kernels over all workers")
    }
}
