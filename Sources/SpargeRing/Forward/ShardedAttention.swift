import Dispatch
import SpargeKernels

/// SpargeAttn over a sequence sharded across the ranks of a communicator (DESIGN.md §2).
public enum ShardedAttention {
    /// The forward pass of this rank's shard; every rank of `communicator` calls it together.
    ///
    /// The ranks agree on the K mean and on all key-block summaries, each predicts the mask rows of its own
    /// query blocks (identical to the single-process mask), and the K/V blocks travel the ring carrying only
    /// what a later rank still needs.
    ///
    /// A configuration or shape that differs between ranks, or a shard that does not match `layout`, is a
    /// `ForwardError` on every rank (never a hang on some).
    ///
    /// - Parameters:
    ///   - q: this rank's query rows `[Hq, rows, D]`, in the order of `layout.tokenRanges[rank]`.
    ///   - k, v: this rank's key and value rows `[Hkv, rows, D]`.
    ///   - layout: the shard layout (the same on every rank).
    ///   - config: the SpargeAttn parameters (the same on every rank).
    ///   - communicator: the ranks; `SingleProcessCommunicator()` for plain use.
    ///   - threads: worker threads on this rank (default 1).
    ///   - engine: who does the tile and mask arithmetic (default the CPU); the mask (bit for bit) and the ring
    ///     are the same for all.
    ///   - kvFormat: the element type K/V blocks are stored and sent in (default f32, exact). bf16 halves
    ///     the ring's bytes at a relative rounding of at most 2⁻⁸ per element; each rank converts its own
    ///     blocks once, before the ring — or, when the engine converts fp32 rows to `kvFormat`'s values itself
    ///     (bf16 on the CPU's bf16 tiles), keeps them in fp32 and converts only the blocks it sends.
    ///   - progress: called on this thread with a phase name and a fraction done.
    public static func forward(
        q: Tensor3, k: Tensor3, v: Tensor3, layout: ShardLayout, config: SpargeConfig,
        communicator comm: Communicator, threads: Int = 1, engine: any AttentionEngine = CPUAttentionEngine(),
        kvFormat: StorageFormat = .f32, progress: ((String, Double) -> Void)? = nil
    ) throws -> ForwardResult {
        if let resident = engine as? any ResidentAttentionEngine, resident.runsResident {
            // Views of the arrays (no host copy): the engine reads them once, where they enter.
            return try q.withBorrowedTensor { q in
                try k.withBorrowedTensor { k in
                    try v.withBorrowedTensor { v in
                        try forward(q: q, k: k, v: v, layout: layout, config: config, communicator: comm,
                                    threads: threads, engine: engine, kvFormat: kvFormat, progress: progress)
                    }
                }
            }
        }
        return try forward(q: q, k: k, vShape: v.shape, local: {
            try LocalBlocks(keys: k, values: v, format: kvFormat,
                            roundedByAttention: engine.computesFromFloatRows(storedAs: kvFormat, headDim: k.dim))
        },
                    layout: layout, config: config, communicator: comm, threads: threads, engine: engine,
                    kvFormat: kvFormat, progress: progress)
    }

    /// The forward pass of this rank's shard given as tensors of any element type and strides (`[H, rows, D]`
    /// views; `permuted([1, 0, 2])` of an `[rows, H, D]` tensor is one), in host memory.
    ///
    /// With an engine that keeps passes resident (a GPU), the pass is
    /// ``forwardResident(q:k:v:layout:config:communicator:engine:kvFormat:progress:)`` and the output comes
    /// down to the host at the end. Otherwise each tensor is converted once, where it enters: Q and K to fp32
    /// for the summaries and the tiles, K and V to `kvFormat` for the ring — not at all when they already are
    /// packed in it (bf16 K/V with bf16 storage travel from the caller's buffer), nor when they are packed
    /// fp32 and the engine rounds fp32 rows to `kvFormat` itself (bf16 storage on bf16 tiles: only the blocks
    /// sent are converted). A tensor that cannot be converted (wrong rank, device memory, an f16 overflow) is
    /// a `ForwardError` on every rank.
    ///
    /// - Parameter staging: where the fp32 copies of Q and K are made, kept for the next call of the same
    ///   shape (nil: fresh arrays each call, whose pages are faulted in again).
    public static func forward(
        q: Tensor, k: Tensor, v: Tensor, layout: ShardLayout, config: SpargeConfig,
        communicator comm: Communicator, threads: Int = 1, engine: any AttentionEngine = CPUAttentionEngine(),
        kvFormat: StorageFormat = .f32, staging: HostStaging? = nil, progress: ((String, Double) -> Void)? = nil
    ) throws -> ForwardResult {
        // The host's conversions (the tensors' on entry, a resident pass's output) keep to `threads` too.
        try HostParallelism.$threads.withValue(threads) {
            if let resident = engine as? any ResidentAttentionEngine, resident.runsResident {
                let result = try forwardResident(q: q, k: k, v: v, layout: layout, config: config, communicator: comm,
                                                 engine: resident, kvFormat: kvFormat, progress: progress)
                return try agreed(comm) { try result.onHost(resident) }
            }
            let entered = try agreed(comm) { () -> (q: Tensor3, k: Tensor3, local: LocalBlocks) in
                guard k.shape == v.shape else {
                    throw SpargeError.invalidArgument("K \(k.shape) and V \(v.shape) differ in shape")
                }
                let rounded = engine.computesFromFloatRows(storedAs: kvFormat, headDim: k.shape.last ?? 0)
                let staging = staging ?? HostStaging()
                return (try q.hostFloats(reusing: &staging.queries), try k.hostFloats(reusing: &staging.keys),
                        try LocalBlocks(keys: k, values: v, format: kvFormat, roundedByAttention: rounded))
            }
            return try forward(q: entered.q, k: entered.k, vShape: v.shape, local: { entered.local }, layout: layout,
                               config: config, communicator: comm, threads: threads, engine: engine, kvFormat: kvFormat,
                               progress: progress)
        }
    }

    /// The pass itself: `k` feeds the K mean and the key summaries, `local` the ring. Every CPU loop of the
    /// pass keeps to `threads` (`HostParallelism`), the summaries and the mask rows as well as the tiles (a GPU
    /// engine's host staging does not).
    static func forward(
        q: Tensor3, k: Tensor3, vShape: [Int], local makeLocal: () throws -> LocalBlocks, layout: ShardLayout,
        config: SpargeConfig, communicator comm: Communicator, threads: Int, engine: any AttentionEngine,
        kvFormat: StorageFormat, progress: ((String, Double) -> Void)?
    ) throws -> ForwardResult {
        try HostParallelism.$threads.withValue(threads) {
            try pass(q: q, k: k, vShape: vShape, local: makeLocal, layout: layout, config: config, communicator: comm,
                     threads: threads, engine: engine, kvFormat: kvFormat, progress: progress)
        }
    }

    private static func pass(
        q: Tensor3, k: Tensor3, vShape: [Int], local makeLocal: () throws -> LocalBlocks, layout: ShardLayout,
        config: SpargeConfig, communicator comm: Communicator, threads: Int, engine: any AttentionEngine,
        kvFormat: StorageFormat, progress: ((String, Double) -> Void)?
    ) throws -> ForwardResult {
        let start = DispatchTime.now().uptimeNanoseconds
        func seconds(since t: UInt64) -> Double { Double(DispatchTime.now().uptimeNanoseconds - t) * 1e-9 }
        try checkAgreement(qShape: q.shape, kShape: k.shape, vShape: vShape, layout: layout, config: config,
                           kvFormat: kvFormat, comm: comm)
        let ranges = layout.tokenRanges[comm.rank]
        var stats = ForwardStatistics()

        // Summaries: global K mean, this rank's query summaries, every key summary. A dense selection needs
        // none: its mask is every block of the (causal) area, known without them (as on the resident path).
        PhaseTrace.mark("pass-start")
        progress?("summaries", 0)
        var t = DispatchTime.now().uptimeNanoseconds
        let dense = config.selection == .dense
        let summaries = dense ? nil : try exchangeSummaries(q: q, k: k, ranges: ranges, layout: layout, config: config,
                                                            engine: engine, comm: comm, statistics: &stats)
        stats.summarySeconds = seconds(since: t)

        // This rank's mask rows, the run-wide density, and who needs which key block.
        progress?("mask", 0)
        t = DispatchTime.now().uptimeNanoseconds
        let queryBlocks = layout.queryBlocks(rank: comm.rank)
        let mask = try summaries.map {
            try engine.predictRows(querySummaries: $0.queries, queryBlocks: queryBlocks, keySummaries: $0.keys,
                                   config: config, headDim: q.dim, queryHeads: q.heads, kvHeads: k.heads,
                                   seqLen: layout.seqLen)
        } ?? BlockMask.full(heads: q.heads, keyBlocks: layout.keyBlockCount, queryBlocks: queryBlocks,
                            causalShape: config.causal ? (config.blockQ, config.blockK) : nil)
        let needs = exchangeNeeds(mask: mask, kvHeads: k.heads, layout: layout, config: config, comm: comm,
                                  statistics: &stats)
        stats.maskSeconds = seconds(since: t)
        PhaseTrace.mark("mask-needs")

        // The ring.
        t = DispatchTime.now().uptimeNanoseconds
        let attention = try engine.makeAttention(queries: q, mask: mask, kvHeads: k.heads, config: config,
                                                 seqLen: layout.seqLen, threads: threads)
        stats.setupSeconds = seconds(since: t)
        let ring = RingAttention(schedule: RingSchedule(layout: layout, needs: needs, headDim: q.dim, format: kvFormat),
                                 comm: comm, threads: threads)
        PhaseTrace.mark("make-attention")
        let local = try agreed(comm, makeLocal)
        PhaseTrace.mark("local-rows")
        let store = HostRingStore(local: local, tokenRanges: ranges, attention: attention, kvHeads: k.heads,
                                  layout: layout, headDim: q.dim)
        stats.ring = try ring.run(store: store) { done in
            progress?("ring", done)
        }
        PhaseTrace.mark("ring-steps")
        let finishing = DispatchTime.now().uptimeNanoseconds
        let (output, lse) = try attention.finish(threads: threads)
        stats.finishSeconds = seconds(since: finishing)
        stats.attention = attention.attendStatistics
        stats.ringSeconds = seconds(since: t)
        stats.totalSeconds = seconds(since: start)
        PhaseTrace.mark("finish")
        progress?("done", 1)
        return ForwardResult(output: output, lse: lse, mask: mask, querySelfSimilar: summaries?.queries.flags ?? [],
                             keySelfSimilar: summaries?.keys.flags ?? [], statistics: stats)
    }

    /// The global K mean, this rank's query summaries and every rank's key summaries (a collective).
    static func exchangeSummaries(q: Tensor3, k: Tensor3, ranges: [Range<Int>], layout: ShardLayout, config: SpargeConfig,
                                  engine: any AttentionEngine, comm: Communicator,
                                  statistics stats: inout ForwardStatistics) throws
        -> (queries: BlockSummaries, keys: BlockSummaries) {
        let keyMean = SummaryExchange.keyMean(k: k, seqLen: layout.seqLen, on: comm)
        PhaseTrace.mark("key-mean")
        let queryRuns = try SummaryExchange.localSummaries(q, ranges: ranges, blockSize: config.blockQ,
                                                           threshold: config.simThreshold, engine: engine)
        PhaseTrace.mark("query-summaries")
        let keyRuns = try SummaryExchange.localSummaries(k, ranges: ranges, blockSize: config.blockK,
                                                         threshold: config.simThreshold, subtracting: keyMean,
                                                         engine: engine)
        PhaseTrace.mark("key-summaries")
        let allKeys: BlockSummaries
        if comm.size == 1, keyRuns.count == 1, keyRuns[0].firstBlock == 0, keyRuns[0].count == layout.keyBlockCount {
            // One rank holding every key block in one run: the exchange would hand back the same summaries.
            stats.summaryBytes = PackedKeySummaries.byteCount(blocks: keyRuns[0].count, heads: k.heads, dim: k.dim)
            allKeys = keyRuns[0]
        } else {
            let packed = PackedKeySummaries.pack(keyRuns)
            stats.summaryBytes = packed.count
            allKeys = try packed.withUnsafeBytes {
                try SummaryExchange.allKeySummaries(packed: $0, heads: k.heads, dim: k.dim, layout: layout,
                                                    blockK: config.blockK, on: comm)
            }.summaries
        }
        let queries = queryRuns.isEmpty
            ? BlockSummaries(heads: q.heads, dim: q.dim, blockSize: config.blockQ, firstBlock: 0, count: 0,
                             means: [Float](), flags: [UInt8]())
            : BlockSummaries(concatenating: queryRuns, requireConsecutive: false)
        PhaseTrace.mark("summary-exchange")
        return (queries, allKeys)
    }

    /// The run-wide mask statistics (into `statistics`) and the need table: who needs which key block.
    static func exchangeNeeds(mask: BlockMask, kvHeads: Int, layout: ShardLayout, config: SpargeConfig,
                              comm: Communicator, statistics stats: inout ForwardStatistics) -> NeedTable {
        let counts = MaskStatistics(mask: mask, config: config)
        var sums = [Double(counts.computed), Double(counts.area)]
        comm.allreduceSum(&sums)
        stats.mask = MaskStatistics(computed: Int(sums[0]), area: Int(sums[1]))
        // One rank sends nothing, so nobody's needs are read (RingSchedule asks only about later ranks): its
        // table is left empty rather than filled from every key of the mask on a GPU pass's critical path.
        let localNeeds = comm.size == 1
            ? [UInt8](repeating: 0, count: NeedTable.byteCount(kvHeads: kvHeads, keyBlocks: layout.keyBlockCount))
            : NeedTable.localBits(mask: mask, kvHeads: kvHeads)
        stats.summaryBytes += localNeeds.count
        return NeedTable(ranks: comm.size, kvHeads: kvHeads, keyBlocks: layout.keyBlockCount,
                         packed: comm.allgather(bytes: localNeeds))
    }

    /// Ends the call on every rank with the same error when the configuration or shapes differ between
    /// ranks, or when any rank's shard does not fit the layout; with `ringPayload` (a resident pass, whose
    /// engine lays out the ring's blocks), also when the ranks' layouts differ (one rank in int8).
    static func checkAgreement(qShape: [Int], kShape: [Int], vShape: [Int], layout: ShardLayout, config: SpargeConfig,
                               kvFormat: StorageFormat, ringPayload: PayloadFormat? = nil, comm: Communicator) throws {
        func localProblem() -> String? {
            guard qShape.count == 3, kShape.count == 3, vShape.count == 3 else {
                return "Q \(qShape), K \(kShape), V \(vShape) must each be [heads, rows, head_dim]"
            }
            let q = (heads: qShape[0], rows: qShape[1], dim: qShape[2])
            let k = (heads: kShape[0], rows: kShape[1], dim: kShape[2], shape: kShape)
            let rows = layout.rowCount(rank: comm.rank)
            do { try config.validate() } catch { return "\(error)" }
            if layout.blockQ != config.blockQ || layout.blockK != config.blockK {
                return "the layout's blocks \(layout.blockQ)×\(layout.blockK) differ from the configuration's "
                    + "\(config.blockQ)×\(config.blockK)"
            }
            if layout.ranks != comm.size { return "the layout is for \(layout.ranks) ranks but the run has \(comm.size)" }
            if q.rows != rows || k.rows != rows || vShape[1] != rows {
                return "shard rows q \(q.rows), k \(k.rows), v \(vShape[1]); the layout gives this rank \(rows)"
            }
            if k.shape != vShape || q.dim != k.dim { return "shapes disagree: q \(qShape), k \(kShape), v \(vShape)" }
            if k.heads == 0 || q.heads % k.heads != 0 {
                return "query heads \(q.heads) are not a multiple of kv heads \(k.heads)"
            }
            return nil
        }
        let problem = localProblem()
        if comm.anyRank(problem != nil) {
            throw ForwardError(problem ?? "another rank's shard does not fit the layout")
        }
        let fingerprint = "\(config.summary), N=\(layout.seqLen), Hq=\(qShape[0]), Hkv=\(kShape[0]), D=\(qShape[2]), "
            + "K/V \(kvFormat.rawValue)" + (ringPayload.map { ", ring blocks \($0)" } ?? "")
        let all = comm.allgather(bytes: Array(fingerprint.utf8)).map { String(decoding: $0, as: UTF8.self) }
        if let other = all.firstIndex(where: { $0 != all[0] }) {
            throw ForwardError("the ranks were given different configurations or shapes: rank 0 has \(all[0]); "
                + "rank \(other) has \(all[other])")
        }
    }

    /// `body`'s value on every rank, or the first failing rank's error thrown on every rank (a collective).
    static func agreed<T>(_ comm: Communicator, _ body: () throws -> T) throws -> T {
        var value: T?
        var problem = ""
        do { value = try body() } catch { problem = "\(error)" }
        let all = comm.allgather(bytes: Array(problem.utf8)).map { String(decoding: $0, as: UTF8.self) }
        if let rank = all.firstIndex(where: { !$0.isEmpty }) {
            throw ForwardError(comm.size > 1 ? "rank \(rank): \(all[rank])" : all[rank])
        }
        return value!
    }
}

/// Where the `Tensor` entry of ``ShardedAttention`` makes its fp32 copies of Q and K: kept between calls by a
/// caller that passes tensors of one shape call after call (a model's layers), so that the copies reuse
/// their arrays and pages instead of faulting in fresh ones (a 32K × 8-head pass's Q and K are 268 MB).
/// Not for two calls at once.
public final class HostStaging: @unchecked Sendable {
    var queries: [Float] = []
    var keys: [Float] = []

    /// Empty staging: the first call makes its arrays.
    public init() {}
}
