import Foundation
import SpargeCUDA
import SpargeFormats
import SpargeRing

/// `sparge run`: attention over Q/K/V files; each rank reads its own shard, all ranks write the output.
enum RunCommand {
    static let specs: [OptionSpec] = [
        .value("q", "FILE", "queries: FILE.npy or FILE.safetensors:TENSOR (required)"),
        .value("k", "FILE", "keys (required)"),
        .value("v", "FILE", "values (required)"),
        .value("layout", "hnd|nhd", "[H, N, D] (default) or [N, H, D], for inputs and outputs"),
        .value("output", "FILE.npy", "attention output, float32, in the input layout (required)"),
        .value("mask-output", "FILE.npy", "block mask, uint8 [Hq, nq, nk], 1 = computed"),
        .value("hilbert", "T,H,W", "tokens form a T×H×W grid: attend in 3-D Hilbert order (non-causal only)"),
        .value("mask-image", "FILE.png", "draw the block mask of one head"),
        .value("mask-head", "H", "head drawn by --mask-image (default 0)"),
        .flag("force", "overwrite existing output files"),
        .flag("json", "print one JSON object with the run's numbers"),
    ] + ConfigOptions.specs + BackendOptions.specs

    static let summary = """
        Runs SpargeAttn on Q [Hq, N, D], K and V [Hkv, N, D] (.npy float32/float16/bfloat16, or tensors of a
        .safetensors file). Under mpirun each rank reads only its own rows and the ranks write --output together.
        Outputs are created as OUT.partial-* before the inputs are read and renamed into place together at the
        end, all or nothing; a failure, SIGINT, SIGTERM or SIGHUP leaves none behind (SIGKILL can: see README).
        Outputs are refused if they exist, unless --force, which replaces only regular files.
        """

    static func main(_ arguments: [String]) -> Int32 {
        Command.main(name: "run", usage: "--q FILE --k FILE --v FILE --output FILE [options]", summary: summary,
                     specs: specs, arguments: arguments, body: run)
    }

    static func run(_ o: ParsedOptions, _ ctx: CommandContext) throws {
        let config = try ConfigOptions.config(o)
        let threads = try ConfigOptions.threads(o)
        let engine = try BackendOptions.engine(o, ctx: ctx)
        let kvFormat = try BackendOptions.kvFormat(o, engine: engine)
        BackendOptions.hint(engine, config: config, ctx: ctx)
        let layoutName = try o.choice("layout", TensorLayout.allCases.map(\.rawValue)) ?? "hnd"
        let fileLayout = TensorLayout(rawValue: layoutName)!
        let (qSpec, kSpec, vSpec) = (try o.required("q", command: "run"), try o.required("k", command: "run"),
                                     try o.required("v", command: "run"))
        let outputPath = try o.required("output", command: "run")
        let maskPath = o.string("mask-output"), imagePath = o.string("mask-image")
        let maskHead = try o.int("mask-head", range: 0...4095) ?? 0
        let grid = try o.string("hilbert").map(parseGrid)
        if grid != nil && config.causal { throw UsageError("--hilbert reorders tokens, which only non-causal attention allows") }
        let force = o.has("force")
        let comm = ctx.comm
        let progress = ProgressReporter(enabled: ctx.isRoot && !o.has("json"))

        // Open and check every input and output path on every rank, then agree.
        let inputs = ctx.collectively { () throws -> InputSet in
            let inputs = try InputSet(q: qSpec, k: kSpec, v: vSpec, layout: fileLayout)
            let inputPaths = Set([inputs.q.path, inputs.k.path, inputs.v.path].map(canonical))
            var outputPaths: [String: String] = [:]  // canonical → as given
            for (option, path) in [("output", outputPath), ("mask-output", maskPath), ("mask-image", imagePath)] {
                guard let path else { continue }
                guard !inputPaths.contains(canonical(path)) else {
                    throw OutputPathError("\(path): is also an input; refusing to overwrite an input")
                }
                // Two outputs on one path: the second would replace the first, or fail after it was written.
                if let other = outputPaths[canonical(path)] {
                    throw OutputPathError("\(path): given for two outputs (--\(other) and --\(option)); give each its own file")
                }
                outputPaths[canonical(path)] = option
                try StagedFile.checkDestination(path, overwrite: force)
            }
            if let grid, grid.0 * grid.1 * grid.2 != inputs.seqLen {
                throw UsageError("--hilbert \(grid.0),\(grid.1),\(grid.2) has \(grid.0 * grid.1 * grid.2) tokens but the inputs have N = \(inputs.seqLen)")
            }
            if maskHead >= inputs.queryHeads, imagePath != nil {
                throw UsageError("--mask-head \(maskHead) but the inputs have \(inputs.queryHeads) query heads")
            }
            return inputs
        }
        let n = inputs.seqLen
        ctx.collectively {
            try MemoryBudget.forward(rows: MemoryBudget.rowsPerRank(seqLen: n, ranks: comm.size), seqLen: n,
                                     queryHeads: inputs.queryHeads, kvHeads: inputs.kvHeads, dim: inputs.headDim, blockQ: config.blockQ,
                                     blockK: config.blockK).check(ranksOnNode: MemoryBudget.ranksOnNode)
        }
        let layout = try ShardLayout(seqLen: n, ranks: comm.size, config: config)
        // Token order: positions along the Hilbert curve map to tokens; otherwise the identity.
        let order = grid.map { HilbertPermutation(frames: $0.0, height: $0.1, width: $0.2).order }
        let myTokens: [Range<Int>] = order.map { order in
            layout.tokenRanges[comm.rank].flatMap { $0.map { order[$0] } }.map { $0..<($0 + 1) }
        } ?? layout.tokenRanges[comm.rank]

        // Every output exists under its temporary name before the computation, so that a path that cannot
        // be written fails now; they are committed together, all or nothing, at the end.
        let outputs = PendingOutputs(ctx: ctx)
        let outputShape = fileLayout.fileShape(TensorShape(heads: inputs.queryHeads, seqLen: n, headDim: inputs.headDim))
        let outputFile = outputs.addArray(path: outputPath, shape: outputShape, type: .float32, layout: fileLayout,
                                          overwrite: force)
        let maskFile = maskPath.map {
            outputs.addArray(path: $0, shape: [inputs.queryHeads, layout.queryBlockCount, layout.keyBlockCount],
                             type: .uint8, layout: .hnd, overwrite: force)
        }
        if let imagePath { outputs.addPicture(path: imagePath, overwrite: force) }

        progress.update("read", 0)
        let onProgress = { (phase: String, f: Double) in progress.update(phase, f) }
        let result: ForwardResult
        if let cuda = engine as? CUDAAttentionEngine, cuda.runsResident {
            // The files land on the device in pinned chunks; the pass stays there.
            let (q, k, v) = ctx.collectively { try inputs.read(myTokens, onto: cuda.device) }
            result = try ShardedAttention.forward(q: q, k: k, v: v, layout: layout, config: config, communicator: comm,
                                                  threads: threads, engine: engine, kvFormat: kvFormat, progress: onProgress)
        } else {
            let (q, k, v) = ctx.collectively { try inputs.read(myTokens) }
            result = try ShardedAttention.forward(q: q, k: k, v: v, layout: layout, config: config, communicator: comm,
                                                  threads: threads, engine: engine, kvFormat: kvFormat, progress: onProgress)
        }
        progress.update("write", 0)
        outputs.write(outputFile) { try $0.writeRows(myTokens, values: result.output.data) }
        if let maskFile {
            outputs.write(maskFile) { try $0.writeRows(layout.queryBlocks(rank: comm.rank).runs, bytes: result.mask.denseBits()) }
        }
        let note = imagePath == nil ? nil : outputs.writePicture {
            try MaskPicture.png(result: result, layout: layout, head: maskHead, comm: comm)
        }
        outputs.commit()
        if let note, let imagePath { printNote("\(note) \(imagePath)") }
        progress.finish()
        let report = RunReport(result: result, seconds: comm.allreduceMax(result.statistics.totalSeconds),
                               layout: layout, heads: inputs.queryHeads, kvHeads: inputs.kvHeads, dim: inputs.headDim,
                               config: config, threads: threads, kvFormat: kvFormat, comm: comm)
        guard ctx.isRoot else { return }
        if o.has("json") {
            var json = report.json
            json.add("output", outputPath)
            print(json.text)
        } else {
            print("sparge run: N \(n), heads \(inputs.queryHeads)/\(inputs.kvHeads), D \(inputs.headDim), \(comm.size) rank(s) × \(threads) thread(s), "
                + "backend \(BackendOptions.describe(engine)): "
                + "density \(Format.fixed(report.density, 4)), \(Format.fixed(report.seconds, 3)) s, "
                + "\(Format.fixed(report.gflopsDenseEquivalent, 1)) GFLOP/s dense-equivalent; output written to \(outputPath)")
            print(report.phaseLine)
        }
    }

    static func parseGrid(_ text: String) throws -> (Int, Int, Int) {
        let parts = text.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard parts.count == 3, let t = parts[0], let h = parts[1], let w = parts[2], t > 0, h > 0, w > 0 else {
            throw UsageError("--hilbert: expected T,H,W (three positive integers), got '\(text)'")
        }
        return (t, h, w)
    }

    static func printNote(_ text: String) {
        FileHandle.standardError.write(Data("\(text)\n".utf8))
    }

    static func canonical(_ path: String) -> String {
        URL(fileURLWithPath: path).standardizedFileURL.resolvingSymlinksInPath().path
    }
}

/// The collective `.npy` write protocol of `NPYWriter`, with the barriers and agreements it leaves to us.
