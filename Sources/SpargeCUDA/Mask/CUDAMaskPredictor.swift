import SpargeKernels

/// Mask prediction on a CUDA device: the GPU twin of `BlockSummaries.summarize` and
/// `MaskPredictor.predictRows`, equal to them bit for bit (see `MaskKernelSource` for how).
///
/// Each call copies its inputs up, runs the kernels and copies the result back; nothing stays on the device
/// between calls. The K mean stays on the host: it is a sum the ranks allreduce anyway.
public struct CUDAMaskPredictor {
    /// The device the kernels run on.
    public let device: CUDADevice

    /// The largest head dimension the kernels take (any D up to it is exact; the limit only keeps the
    /// kernels' unrolled loops a sensible size).
    public static let maxHeadDim = 512

    /// Bytes of scratch (scores and heap keys) one batch of mask rows may use; rows go in batches below it.
    static let scratchBudget = 1 << 30

    public init(device: CUDADevice) {
        self.device = device
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
            func kernel(_ name: String) throws -> CUDAFunction {
                try device.function(source: MaskKernelSource.source, program: MaskKernelSource.program, name: name,
                                    defines: [("HEAD_DIM", d)])
            }
            let (rowNorms, blockSums, blockFlags) = (try kernel("sparge_row_norms"), try kernel("sparge_block_sums"),
                                                     try kernel("sparge_block_flags"))
            // Heads go in groups whose rows fit the staging budget: one upload and one set of launches a group.
            let group = max(1, min(heads, Self.scratchBudget / max(1, n * d * 4)))
            let input = try DeviceBuffer(device: device, bytes: group * n * d * 4, label: "rows to summarize")
            let meanBuffer = try DeviceBuffer(device: device, bytes: heads * d * 4, zeroed: mean == nil, label: "K mean")
            if let mean { try meanBuffer.upload(mean) }
            let norms = try DeviceBuffer(device: device, bytes: group * n * 8, label: "row norms")
            let directions = try DeviceBuffer(device: device, bytes: group * count * d * 8, label: "direction sums")
            let meansOut = try DeviceBuffer(device: device, bytes: means.count * 4, label: "block means")
            let flagsOut = try DeviceBuffer(device: device, bytes: flags.count, label: "self-similarity flags")
            let theta = BlockSummaries.thresholdValue(threshold)
            let block = 128
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
                let groupMean = KernelArgument.pointer(meanBuffer.address + UInt64(h0 * d * 4))
                try device.launch(rowNorms, grid: (g * n + block - 1) / block, block: block, [
                    .pointer(input.address), .int(Int32(n)), .int(Int32(g)), groupMean, .pointer(norms.address),
                ])
                try device.launch(blockSums, grid: (g * count * d + block - 1) / block, block: block, [
                    .pointer(input.address), .int(Int32(n)), .int(Int32(g)), .int(Int32(count)), .int(Int32(blockSize)),
                    groupMean, .pointer(norms.address), .pointer(meansOut.address + UInt64(h0 * count * d * 4)),
                    .pointer(directions.address),
                ])
                try device.launch(blockFlags, grid: (g * count + block - 1) / block, block: block, [
                    .int(Int32(n)), .int(Int32(g)), .int(Int32(count)), .int(Int32(blockSize)), .pointer(norms.address),
                    .pointer(directions.address), .double(theta), .pointer(flagsOut.address + UInt64(h0 * count)),
                ])
                try device.synchronize()  // the next group's upload overwrites the input
                t = CUDATrace.note("summaries: heads \(h0)..<\(h0 + g), \(n) rows up and summarized", since: t)
            }
            try means.withUnsafeMutableBytes { try meansOut.download(into: $0.baseAddress!, count: $0.count) }
            try flags.withUnsafeMutableBytes { try flagsOut.download(into: $0.baseAddress!, count: $0.count) }
        }
        return BlockSummaries(heads: heads, dim: d, blockSize: blockSize, firstBlock: firstBlock, count: count,
                              means: means, flags: flags)
    }

    /// What `MaskPredictor.predictRows(querySummaries:queryBlocks:keySummaries:config:headDim:queryHeads:kvHeads:seqLen:)`
    /// returns, computed on the device.
    public func predictRows(querySummaries: BlockSummaries, queryBlocks: [Int], keySummaries: BlockSummaries,
                            config: SpargeConfig, headDim d: Int, queryHeads: Int, kvHeads: Int,
                            seqLen: Int) throws -> BlockMask {
        try MaskPredictor.checkRowArguments(querySummaries: querySummaries, queryBlocks: queryBlocks, keySummaries: keySummaries,
                                        config: config, headDim: d, queryHeads: queryHeads, kvHeads: kvHeads, seqLen: seqLen)
        let nk = (seqLen + config.blockK - 1) / config.blockK
        try Self.checkHeadDim(d)
        let rowsPerHead = queryBlocks.count
        guard rowsPerHead > 0, nk > 0 else { return BlockMask(heads: queryHeads, keyBlocks: nk, queryBlocks: queryBlocks) }
        try device.makeCurrent()

        let rule = RowRule(config: config, queryBlocks: queryBlocks, keyBlocks: nk, headDim: d)
        let (limits, diagonals, mode, tau, keep, scale) = (rule.limits, rule.diagonals, rule.mode, rule.tau, rule.keep, rule.scale)

        let queryMeans = try DeviceBuffer(device: device, bytes: querySummaries.means.count * 4, label: "query means")
        let keyMeans = try DeviceBuffer(device: device, bytes: keySummaries.means.count * 8, label: "key means")
        let keyFlags = try DeviceBuffer(device: device, bytes: keySummaries.flags.count, label: "key flags")
        let queryFlags = try DeviceBuffer(device: device, bytes: querySummaries.flags.count, label: "query flags")
        let limitBuffer = try DeviceBuffer(device: device, bytes: limits.count * 4, label: "causal limits")
        let diagonalBuffer = try DeviceBuffer(device: device, bytes: diagonals.count * 4, label: "diagonals")
        let bits = try DeviceBuffer(device: device, bytes: queryHeads * rowsPerHead * nk, zeroed: true, label: "mask bits")
        var t = CUDATrace.now()
        try queryMeans.upload(querySummaries.means)
        try keyMeans.upload(keySummaries.means.map(Double.init))  // widened once, as the CPU does
        try keyFlags.upload(keySummaries.flags)
        try queryFlags.upload(querySummaries.flags)
        try limitBuffer.upload(limits)
        try diagonalBuffer.upload(diagonals)

        func kernel(_ name: String) throws -> CUDAFunction {
            try device.function(source: MaskKernelSource.source, program: MaskKernelSource.program, name: name,
                                defines: [("HEAD_DIM", d)])
        }
        let (transpose, scores, select, rules) = (try kernel("sparge_transpose"), try kernel("sparge_scores"),
                                                  try kernel("sparge_select_rows"), try kernel("sparge_mask_rules"))
        let items = queryHeads * rowsPerHead
        let queryT = try DeviceBuffer(device: device, bytes: items * d * 4, label: "transposed query means")
        try device.launch(transpose, grid: (items * d + 255) / 256, block: 256, [
            .pointer(queryMeans.address), .int64(Int64(items)), .pointer(queryT.address),
        ])
        // Rows go in batches whose scores and heap keys (12 bytes per key block) fit the scratch budget.
        t = CUDATrace.note("mask: summaries up, buffers", since: t)
        // A quarter of the free memory (at least the fixed budget): at tens of thousands of key blocks a
        // batch must still hold enough rows to fill the GPU.
        let budget = max(Self.scratchBudget, (try? device.memoryInfo().free / 4) ?? 0)
        let perLaunch = max(1, min(items, budget / (nk * 12)))
        let scoreScratch = try DeviceBuffer(device: device, bytes: perLaunch * nk * 4, label: "scores")
        let keyScratch = try DeviceBuffer(device: device, bytes: perLaunch * nk * 8, label: "selection heap")
        for first in stride(from: 0, to: items, by: perLaunch) {
            let count = min(perLaunch, items - first)
            if mode != 0 {
                try device.launch(scores, grid: ((count + 31) / 32) * ((nk + 7) / 8), block: 256, [
                    .pointer(queryT.address), .int64(Int64(items)), .pointer(keyMeans.address),
                    .pointer(keyFlags.address), .pointer(limitBuffer.address), .int(Int32(rowsPerHead)),
                    .int(Int32(nk)), .int(Int32(queryHeads / kvHeads)), .int64(Int64(first)), .int(Int32(count)),
                    .float(scale), .pointer(scoreScratch.address),
                ])
            }
            try device.launch(select, grid: (count + 127) / 128, block: 128, [
                .pointer(limitBuffer.address), .int(Int32(rowsPerHead)), .int(Int32(nk)), .int64(Int64(first)),
                .int(Int32(count)), .int(mode), .float(tau), .int(keep), .pointer(scoreScratch.address),
                .pointer(keyScratch.address), .pointer(bits.address),
            ])
        }
        try device.launch(rules, grid: items, block: 256, [
            .pointer(bits.address), .pointer(keyFlags.address), .pointer(queryFlags.address),
            .pointer(limitBuffer.address), .pointer(diagonalBuffer.address), .int(Int32(queryHeads)),
            .int(Int32(rowsPerHead)), .int(Int32(nk)), .int(Int32(queryHeads / kvHeads)),
            .int(config.causal ? 1 : 0), .int(config.sink ? 1 : 0), .int(config.keepDiagonal ? 1 : 0),
        ])
        try device.synchronize()
        t = CUDATrace.note("mask: kernels for \(items) rows × \(nk) key blocks", since: t)
        let mask = try Self.download(bits, rows: items, keyBlocks: nk, device: device, queryHeads: queryHeads,
                                     queryBlocks: queryBlocks)
        CUDATrace.note("mask: bits down and compacted (\(mask.computedCount) computed blocks)", since: t)
        return mask
    }

    /// The sparse mask of dense device bits `[rows][nk]`, streamed down through the pinned chunks and
    /// compacted as they arrive, so that the host never holds the dense bits.
    static func download(_ bits: DeviceBuffer, rows: Int, keyBlocks nk: Int, device: CUDADevice, queryHeads: Int,
                         queryBlocks: [Int]) throws -> BlockMask {
        var builder = BlockMask.Builder(heads: queryHeads, keyBlocks: nk, queryBlocks: queryBlocks)
        var row: [Int32] = []
        var column = 0
        try device.stagedTransfer().download(from: bits, count: rows * nk) { _, length, chunk in
            var i = 0
            while i < length {
                let run = min(length - i, nk - column)
                var c = 0
                // Eight bytes at a time past the zeros, which are most of a sparse row.
                while c + 8 <= run {
                    if chunk.loadUnaligned(fromByteOffset: i + c, as: UInt64.self) == 0 { c += 8; continue }
                    for b in c..<(c + 8) where chunk.load(fromByteOffset: i + b, as: UInt8.self) != 0 {
                        row.append(Int32(column + b))
                    }
                    c += 8
                }
                for b in c..<run where chunk.load(fromByteOffset: i + b, as: UInt8.self) != 0 { row.append(Int32(column + b)) }
                i += run
                column += run
                if column == nk {
                    builder.appendRow(row)
                    row.removeAll(keepingCapacity: true)
                    column = 0
                }
            }
        }
        return builder.mask
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
