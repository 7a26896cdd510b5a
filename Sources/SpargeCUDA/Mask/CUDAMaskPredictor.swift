import SpargeKernels

/// Mask prediction on a CUDA device: the GPU twin of `BlockSummaries.summarize` and
/// `MaskPredictor.predictRows`, equal to them bit for bit (see `MaskKernelSource` for how).
///
/// Each call copies its inputs up, runs the kernels and copies the result back; nothing stays on the device
/// between calls. The K mean stays on the host: it is a sum the ranks allreduce anyway.
public struct CUDAMaskPredictor {
    /// The device the kernels run on.
    public let device: CUDADevice
    /// Whether TopK rows too long for the sort take the radix select (`CUDAOptions.radixTopK`).
    public let radixTopK: Bool

    /// The largest head dimension the kernels take (any D up to it is exact; the limit only keeps the
    /// kernels' unrolled loops a sensible size).
    public static let maxHeadDim = 512

    /// Bytes of scratch (scores and heap keys) one batch of mask rows may use; rows go in batches below it.
    static let scratchBudget = 1 << 30

    public init(device: CUDADevice, radixTopK: Bool = true) {
        self.device = device
        self.radixTopK = radixTopK
    }

    /// What `BlockSummaries.summarize(_:rows:firstBlock:blockSize:threshold:subtracting:)` returns, computed
    /// on the device a group of heads at a time.
    public func summarize(_ x: Tensor3, rows: Range<Int>, firstBlock: Int, blockSize: Int, threshold: Float,
                          subtracting mean: [Float]? = nil) throws -> BlockSummaries {
        precondition(rows.lowerBound >= 0 && rows.upperBound <= x.rows, "summarize: rows \(rows) outside 0..<\(x.rows)")
        precondition(blockSize > 0 && (mean == nil || mean!.count == x.heads * x.dim), "summarize: bad block size or mean")
        try Self.checkHeadDim(x.dim)
        let (heads, d, n) = (x.heads, x.dim, rows.count)
        let count = (n + blockSize - 1) / blockSize
        var means = [Float](repeating: 0, count: heads * count * d)
        var flags = [UInt8](repeating: 0, count: heads * count)
        if count > 0 {
            try device.makeCurrent()
            // Heads go in groups whose rows fit the staging budget: one upload and one set of launches a group.
            let group = max(1, min(heads, Self.scratchBudget / max(1, n * d * 4)))
            let input = try DeviceBuffer(device: device, bytes: group * n * d * 4, label: "rows to summarize")
            let meanBuffer = try DeviceBuffer(device: device, bytes: heads * d * 4, zeroed: mean == nil, label: "K mean")
            if let mean { try meanBuffer.upload(mean) }
            let meansOut = try DeviceBuffer(device: device, bytes: means.count * 4, label: "block means")
            let flagsOut = try DeviceBuffer(device: device, bytes: flags.count, label: "self-similarity flags")
            var t = CUDATrace.now()
            for h0 in stride(from: 0, to: heads, by: group) {
                let g = min(group, heads - h0)
                try x.data.withUnsafeBytes { raw in
                    for i in 0..<g {
                        try device.stagedTransfer().upload(
                            to: input, offset: i * n * d * 4,
                            from: raw.baseAddress! + (((h0 + i) * x.rows + rows.lowerBound) * d) * 4, count: n * d * 4)
                    }
                }
                try summarizeOnDevice(
                    rows: input.address, headStride: n * d, count: n, heads: g, dim: d, blockSize: blockSize,
                    threshold: threshold, mean: meanBuffer.address + UInt64(h0 * d * 4),
                    meansOut: meansOut.address + UInt64(h0 * count * d * 4), flagsOut: flagsOut.address + UInt64(h0 * count),
                    outBlocks: count)
                try device.synchronize()  // the next group's upload overwrites the input
                t = CUDATrace.note("summaries: heads \(h0)..<\(h0 + g), \(n) rows up and summarized", since: t)
            }
            try means.withUnsafeMutableBytes { try meansOut.download(into: $0.baseAddress!, count: $0.count) }
            try flags.withUnsafeMutableBytes { try flagsOut.download(into: $0.baseAddress!, count: $0.count) }
        }
        return BlockSummaries(heads: heads, dim: d, blockSize: blockSize, firstBlock: firstBlock, count: count,
                              means: means, flags: flags)
    }

    /// Pools `count` rows of `heads` heads at device address `rows` (row `r` of head `h` at element
    /// `h·headStride + r·dim`) into block means and self-similarity flags, as the CPU does bit for bit: block
    /// `b` of head `h` goes to `[h·outBlocks + b]` of `meansOut` (f32, `dim` each) and `flagsOut` (bytes).
    /// `mean` (`[heads][dim]` f32) is subtracted first. The rows are f32, or bf16 with `rowsInBF16` (widened as
    /// they are loaded: the same Floats). Enqueued on the device's stream.
    func summarizeOnDevice(rows x: UInt64, rowsInBF16: Bool = false, headStride: Int, count n: Int, heads: Int, dim d: Int,
                           blockSize: Int, threshold: Float, mean: UInt64, meansOut: UInt64, flagsOut: UInt64,
                           outBlocks: Int) throws {
        let count = (n + blockSize - 1) / blockSize
        guard count > 0 && heads > 0 else { return }
        try device.launch(try kernel("sparge_summarize_blocks", dim: d), grid: heads * count, block: 128, [
            .pointer(x), .int(rowsInBF16 ? 1 : 0), .int64(Int64(headStride)), .int(Int32(n)), .int(Int32(count)), .int(Int32(blockSize)),
            .pointer(mean), .double(BlockSummaries.thresholdValue(threshold)), .pointer(meansOut), .pointer(flagsOut),
            .int(Int32(outBlocks)),
        ])
    }

    private func kernel(_ name: String, dim: Int, sharedBytes: Int = 0) throws -> CUDAFunction {
        try device.function(source: MaskKernelSource.source, program: MaskKernelSource.program, name: name,
                            defines: [("HEAD_DIM", dim)], sharedBytes: sharedBytes)
    }

    /// What `MaskPredictor.predictRows(querySummaries:queryBlocks:keySummaries:config:headDim:queryHeads:kvHeads:seqLen:)`
    /// returns, computed on the device.
    public func predictRows(querySummaries: BlockSummaries, queryBlocks: [Int], keySummaries: BlockSummaries,
                            config: SpargeConfig, headDim d: Int, queryHeads: Int, kvHeads: Int,
                            seqLen: Int) throws -> BlockMask {
        try MaskPredictor.checkRowArguments(querySummaries: querySummaries, queryBlocks: queryBlocks, keySummaries: keySummaries,
                                        config: config, headDim: d, queryHeads: queryHeads, kvHeads: kvHeads, seqLen: seqLen)
        try device.makeCurrent()
        let t = CUDATrace.now()
        let queryMeans = try DeviceBuffer(device: device, bytes: querySummaries.means.count * 4, label: "query means")
        let keyFloats = try DeviceBuffer(device: device, bytes: keySummaries.means.count * 4, label: "key means")
        let keyFlags = try DeviceBuffer(device: device, bytes: keySummaries.flags.count, label: "key flags")
        let queryFlags = try DeviceBuffer(device: device, bytes: querySummaries.flags.count, label: "query flags")
        try queryMeans.upload(querySummaries.means)
        try keyFloats.upload(Array(keySummaries.means))
        let keyMeans = try widened(keyFloats, count: keySummaries.means.count)
        try keyFlags.upload(Array(keySummaries.flags))
        try queryFlags.upload(Array(querySummaries.flags))
        CUDATrace.note("mask: summaries up", since: t)
        return try predictRows(on: MaskInputs(queryMeans: queryMeans.address, queryFlags: queryFlags.address,
                                              keyMeans: keyMeans.address, keyFlags: keyFlags.address),
                               queryBlocks: queryBlocks, config: config, headDim: d, queryHeads: queryHeads,
                               kvHeads: kvHeads, seqLen: seqLen).mask
    }

    /// A mask predicted on the device: the host rows, and the same lists left on the device (nil when there
    /// are no rows or no key blocks).
    struct DeviceMask {
        let mask: BlockMask
        let lists: MaskCompaction.DeviceLists?
    }

    /// Where the summaries a mask is predicted from lie on the device.
    struct MaskInputs {
        /// Query block means `[Hq][rows][D]` (f32) and flags `[Hq][rows]`.
        let queryMeans: UInt64, queryFlags: UInt64
        /// Every key block's mean widened to Double `[Hkv][nk][D]`, and flags `[Hkv][nk]`.
        let keyMeans: UInt64, keyFlags: UInt64
    }

    /// `count` Float key means at `floats` widened to Double on the device, as the CPU widens them once for
    /// the scores.
    func widened(_ floats: DeviceBuffer, count: Int) throws -> DeviceBuffer {
        let doubles = try DeviceBuffer(device: device, bytes: count * 8, label: "key means (Double)")
        try device.launch(device.residentKernel("sparge_widen"), grid: (count + 255) / 256, block: 256, [
            .pointer(floats.address), .int64(Int64(count)), .pointer(doubles.address),
        ])
        return doubles
    }

    /// Mask rows from summaries on the device; only the sparse rows come back.
    func predictRows(on inputs: MaskInputs, queryBlocks: [Int], config: SpargeConfig, headDim d: Int,
                     queryHeads: Int, kvHeads: Int, seqLen: Int) throws -> DeviceMask {
        try Self.checkHeadDim(d)
        let nk = (seqLen + config.blockK - 1) / config.blockK
        let rowsPerHead = queryBlocks.count
        guard rowsPerHead > 0, nk > 0 else {
            return DeviceMask(mask: BlockMask(heads: queryHeads, keyBlocks: nk, queryBlocks: queryBlocks), lists: nil)
        }
        var t = CUDATrace.now()
        let rule = RowRule(config: config, queryBlocks: queryBlocks, keyBlocks: nk, headDim: d)
        let (limits, diagonals, mode, scale) = (rule.limits, rule.diagonals, rule.mode, rule.scale)
        let limitBuffer = try DeviceBuffer(device: device, bytes: limits.count * 4, label: "causal limits")
        let diagonalBuffer = try DeviceBuffer(device: device, bytes: diagonals.count * 4, label: "diagonals")
        let bits = try DeviceBuffer(device: device, bytes: queryHeads * rowsPerHead * nk, zeroed: true, label: "mask bits")
        try limitBuffer.upload(limits)
        try diagonalBuffer.upload(diagonals)
        let (transpose, scores, rules) = (try kernel("sparge_transpose", dim: d), try kernel("sparge_scores", dim: d),
                                          try kernel("sparge_mask_rules", dim: d))
        let items = queryHeads * rowsPerHead
        // Quads of dimensions, the last padded (sparge_quad_index in sparge_mask.cu).
        let queryT = try DeviceBuffer(device: device, bytes: items * ((d + 3) / 4 * 4) * 4, label: "query means as quads")
        try device.launch(transpose, grid: (items * d + 255) / 256, block: 256, [
            .pointer(inputs.queryMeans), .int64(Int64(items)), .pointer(queryT.address),
        ])
        t = CUDATrace.note("mask: buffers", since: t)
        let selection = RowSelection(keyBlocks: nk, mode: mode, sharedLimit: device.sharedMemoryPerBlock, radixTopK: radixTopK)
        // Rows go in batches whose scratch fits the budget: a quarter of the free memory (at least the fixed
        // budget), so that at tens of thousands of key blocks a batch still holds enough rows to fill the GPU.
        let budget = max(Self.scratchBudget, (try? device.memoryInfo().free / 4) ?? 0)
        let perLaunch = max(1, min(items, budget / selection.scratchBytesPerRow(keyBlocks: nk)))
        let scratch = try SelectionScratch(device: device, selection: selection, rows: perLaunch, keyBlocks: nk)
        for first in stride(from: 0, to: items, by: perLaunch) {
            let count = min(perLaunch, items - first)
            if mode != 0 {
                try device.launch(scores, grid: ((count + 31) / 32) * ((nk + 7) / 8), block: 256, [
                    .pointer(queryT.address), .int64(Int64(items)), .pointer(inputs.keyMeans),
                    .pointer(inputs.keyFlags), .pointer(limitBuffer.address), .int(Int32(rowsPerHead)),
                    .int(Int32(nk)), .int(Int32(queryHeads / kvHeads)), .int64(Int64(first)), .int(Int32(count)),
                    .float(scale), .int(selection.octets ? 1 : 0), .pointer(scratch.scores.address),
                ])
                t = try CUDATrace.step("mask: scores of rows \(first)..<\(first + count)", since: t, on: device)
            }
            try select(selection, rows: first..<(first + count), scratch: scratch, limits: limitBuffer.address,
                       rowsPerHead: rowsPerHead, keyBlocks: nk, rule: rule, dim: d, into: bits.address)
            t = try CUDATrace.step("mask: selection (\(selection.name)) of rows \(first)..<\(first + count)", since: t, on: device)
        }
        try device.launch(rules, grid: items, block: 256, [
            .pointer(bits.address), .pointer(inputs.keyFlags), .pointer(inputs.queryFlags),
            .pointer(limitBuffer.address), .pointer(diagonalBuffer.address), .int(Int32(queryHeads)),
            .int(Int32(rowsPerHead)), .int(Int32(nk)), .int(Int32(queryHeads / kvHeads)),
            .int(config.causal ? 1 : 0), .int(config.sink ? 1 : 0), .int(config.keepDiagonal ? 1 : 0),
        ])
        // No wait here: the compaction's kernels queue behind the rules, and it waits once for its lists.
        t = try CUDATrace.step("mask: rules for \(items) rows × \(nk) key blocks", since: t, on: device)
        let compacted = try MaskCompaction(device: device).compact(bits, rows: items, keyBlocks: nk)
        CUDATrace.note("mask: compacted on the device, lists down (\(compacted.keys.count) computed blocks)", since: t)
        return DeviceMask(mask: BlockMask(heads: queryHeads, keyBlocks: nk, queryBlocks: queryBlocks,
                                          rowStarts: compacted.rowStarts, keys: compacted.keys),
                          lists: compacted.device)
    }

    /// The scores and whatever else a batch of rows needs on the device to be selected.
    struct SelectionScratch {
        let scores: DeviceBuffer
        /// The heap's keys (`.heap`) or the rows' 1/sum (`.radix`).
        let extra: DeviceBuffer?

        init(device: CUDADevice, selection: RowSelection, rows: Int, keyBlocks nk: Int) throws {
            scores = try DeviceBuffer(device: device, bytes: selection.scoreBytes(rows: rows, keyBlocks: nk), label: "scores")
            switch selection {
            case .sorted: extra = nil
            case .radix: extra = try DeviceBuffer(device: device, bytes: rows * 4, label: "softmax 1/sum")
            case .heap: extra = try DeviceBuffer(device: device, bytes: rows * nk * 8, label: "selection heap")
            }
        }
    }

    /// Enqueues the selection of the launch's items `rows` (whose scores are in `scratch`) into `bits`.
    private func select(_ selection: RowSelection, rows: Range<Int>, scratch: SelectionScratch, limits: UInt64,
                        rowsPerHead: Int, keyBlocks nk: Int, rule: RowRule, dim d: Int, into bits: UInt64) throws {
        let (first, count) = (Int64(rows.lowerBound), Int32(rows.count))
        let head: [KernelArgument] = [.pointer(limits), .int(Int32(rowsPerHead))]
        switch selection {
        case .sorted(let threads, let bytes):
            try device.launch(try kernel("sparge_select_rows_sorted", dim: d, sharedBytes: bytes),
                              grid: rows.count, block: threads, sharedBytes: bytes, head + [
                .int(Int32(nk)), .int64(first), .int(count), .int(rule.mode), .float(rule.tau), .int(rule.keep),
                .pointer(scratch.scores.address), .pointer(bits),
            ])
        case .radix(let launch):
            let inverses = scratch.extra!.address
            try device.launch(try kernel("sparge_softmax_rows", dim: d), grid: (rows.count + 31) / 32, block: 32, head + [
                .int64(first), .int(count), .pointer(scratch.scores.address), .pointer(inverses),
            ])
            try device.launch(try kernel("sparge_topk_rows", dim: d, sharedBytes: launch.sharedBytes),
                              grid: rows.count, block: launch.threads, sharedBytes: launch.sharedBytes, head + [
                .int(Int32(nk)), .int64(first), .int(count), .int(rule.keep), .pointer(scratch.scores.address),
                .pointer(inverses), .int(Int32(launch.cachedKeys)), .pointer(bits),
            ])
        case .heap:
            try device.launch(try kernel("sparge_select_rows", dim: d), grid: (rows.count + 127) / 128, block: 128, head + [
                .int(Int32(nk)), .int64(first), .int(count), .int(rule.mode), .float(rule.tau), .int(rule.keep),
                .pointer(scratch.scores.address), .pointer(scratch.extra!.address), .pointer(bits),
            ])
        }
    }

    /// What the row kernels are told about each mask row and the selection, derived from the configuration
    /// as the CPU derives it (the host emulation in the tests passes the same values).
    struct RowRule {
        /// Per row: key blocks `0..<limit` are in the block-causal area (all `nk` when not causal).
        let limits: [Int32]
        /// Per row: the first key block of its own diagonal (`i·blockQ/blockK`), for `keepDiagonal`.
        let diagonals: [Int32]
        /// 0 dense, 1 TopCdf, 2 TopK.
        let mode: Int32
        /// TopCdf's τ (0 otherwise).
        let tau: Float
        /// TopK's blocks per row, at most `nk` (0 otherwise).
        let keep: Int32
        /// The scores' `Float(1/sqrt(D))`.
        let scale: Float

        init(config: SpargeConfig, queryBlocks: [Int], keyBlocks nk: Int, headDim d: Int) {
            limits = queryBlocks.map {
                Int32(config.causal
                      ? MaskPredictor.blockCausalLimit(queryBlock: $0, blockQ: config.blockQ, blockK: config.blockK, keyBlocks: nk)
                      : nk)
            }
            diagonals = queryBlocks.map { Int32($0 * config.blockQ / config.blockK) }
            switch config.selection {
            case .dense: (mode, tau, keep) = (0, 0, 0)
            case .cdf(let t): (mode, tau, keep) = (1, t, 0)
            case .topK(let f): (mode, tau, keep) = (2, 0, Int32(min(MaskPredictor.topKCount(fraction: f, keyBlocks: nk), nk)))
            }
            scale = Float(1 / Double(d).squareRoot())
        }
    }

    static func checkHeadDim(_ d: Int) throws {
        guard d > 0 && d <= maxHeadDim else {
            throw CUDAError.unsupported("mask prediction for head dimension \(d) (the kernels take 1…\(maxHeadDim))")
        }
    }
}
