import Dispatch
import SpargeKernels

/// The result of a forward pass whose tensors stayed in a backend's memory: output and LSE are where they
/// were computed (device tensors for a GPU); the mask and counters are on the host.
public struct ResidentForwardResult {
    /// Output `[Hq, localRows, D]` (f32), rows in the order of the rank's token ranges.
    public var output: Tensor
    /// Row log-sum-exp `[Hq, localRows]` (f32, natural log of the scaled scores; `-inf` for a row that saw
    /// no key).
    public var lse: Tensor
    /// This rank's mask rows.
    public var mask: BlockMask
    /// Self-similarity flags of this rank's query blocks `[Hq][rows]` and of every key block `[Hkv][nk]`;
    /// empty for a dense selection, which pools no summaries.
    public var querySelfSimilar: [UInt8]
    public var keySelfSimilar: [UInt8]
    /// Counters and timings.
    public var statistics: ForwardStatistics
}

extension ResidentForwardResult {
    /// The same result with output and LSE copied to the host by `engine` (whose memory holds them).
    public func onHost(_ engine: any ResidentAttentionEngine) throws -> ForwardResult {
        let out = try engine.download(output).hostFloats()
        let lse = try engine.download(self.lse)
        let lseValues = [Float](UnsafeBufferPointer(start: lse.buffer.base.assumingMemoryBound(to: Float.self),
                                                    count: lse.shape.reduce(1, *)))
        return ForwardResult(output: out, lse: lseValues, mask: mask, querySelfSimilar: querySelfSimilar,
                             keySelfSimilar: keySelfSimilar, statistics: statistics)
    }
}

extension ShardedAttention {
    /// The forward pass of this rank's shard with every tensor kept in `engine`'s memory (DESIGN.md §6.1):
    /// Q, K, V enter once (host tensors are copied up once; device tensors are used where they are); the K
    /// mean, the summaries, the mask rows, the ring's packing and the attention run there. Through the host
    /// go only the K sums, the key summaries (with more than one rank), the need bits and the ring's
    /// payloads. Same arguments, same mask (bit for bit) and same errors on every rank as
    /// ``forward(q:k:v:layout:config:communicator:threads:engine:kvFormat:staging:progress:)``.
    public static func forwardResident(
        q: Tensor, k: Tensor, v: Tensor, layout: ShardLayout, config: SpargeConfig, communicator comm: Communicator,
        engine: any ResidentAttentionEngine, kvFormat: StorageFormat, progress: ((String, Double) -> Void)? = nil
    ) throws -> ResidentForwardResult {
        let start = DispatchTime.now().uptimeNanoseconds
        func seconds(since t: UInt64) -> Double { Double(DispatchTime.now().uptimeNanoseconds - t) * 1e-9 }
        let payload = engine.ringPayload(kvFormat: kvFormat, headDim: q.shape.last ?? 0)
        try checkAgreement(qShape: q.shape, kShape: k.shape, vShape: v.shape, layout: layout, config: config,
                           kvFormat: kvFormat, ringPayload: payload, comm: comm)
        let ranges = layout.tokenRanges[comm.rank]
        var stats = ForwardStatistics()

        // Summaries: the global K mean from every rank's sums, then this rank's blocks pooled in place. A dense
        // selection needs none: its mask is every block of the (causal) area, known without them.
        progress?("summaries", 0)
        var t = DispatchTime.now().uptimeNanoseconds
        let shard = try agreed(comm) {
            let shard = try engine.enter(q: q, k: k, v: v, kvFormat: kvFormat)
            try shard.beginPass(seqLen: layout.seqLen, tokenRanges: ranges, config: config)
            return shard
        }
        let dense = config.selection == .dense
        var gathered: PackedKeySummaries?
        if !dense {
            gathered = try summarize(shard, ranges: ranges, layout: layout, config: config, comm: comm, statistics: &stats)
        } else if shard.smoothsKeys {
            let mean = try keyMean(shard, layout: layout, comm: comm)
            try agreed(comm) { try shard.keepKeyMean(mean, config: config) }
        }
        stats.summarySeconds = seconds(since: t)

        // This rank's mask rows, the run-wide density, and who needs which key block.
        progress?("mask", 0)
        t = DispatchTime.now().uptimeNanoseconds
        let queryBlocks = layout.queryBlocks(rank: comm.rank)
        let mask = dense
            ? BlockMask.full(heads: shard.queryHeads, keyBlocks: layout.keyBlockCount, queryBlocks: queryBlocks,
                             causalShape: config.causal ? (config.blockQ, config.blockK) : nil)
            : try agreed(comm) {
                try shard.predictRows(queryBlocks: queryBlocks, keySummaries: gathered, config: config,
                                      seqLen: layout.seqLen)
            }
        let needs = exchangeNeeds(mask: mask, kvHeads: shard.kvHeads, layout: layout, config: config, comm: comm,
                                  statistics: &stats)
        stats.maskSeconds = seconds(since: t)

        // The ring, its payloads packed and placed by the engine.
        t = DispatchTime.now().uptimeNanoseconds
        let inPlace = comm.size > 1 && comm.allreduceMin(comm.movesDeviceMemory ? 1 : 0) == 1
        stats.messagesInPlace = inPlace
        let store = try agreed(comm) {
            try shard.makeRingStore(mask: mask, tokenRanges: ranges, config: config, seqLen: layout.seqLen,
                                    messagesInPlace: inPlace)
        }
        // Asked only now: the answer waits for V's conversion, which ran while the store was planned.
        let wideValues = comm.anyRank(try agreed(comm) { try shard.needsWideValues() })
        try agreed(comm) { try store.chooseValueType(wide: wideValues) }
        stats.setupSeconds = seconds(since: t)
        let ring = RingAttention(schedule: RingSchedule(layout: layout, needs: needs, payload: payload), comm: comm,
                                 threads: 1)
        stats.ring = try ring.run(store: store) { done in progress?("ring", done) }
        let finishing = DispatchTime.now().uptimeNanoseconds
        let (output, lse, attention) = try store.finish()
        stats.finishSeconds = seconds(since: finishing)
        stats.attention = attention
        stats.ringSeconds = seconds(since: t)
        let flags = dense ? (queries: [], keys: []) : try shard.selfSimilarFlags()
        stats.totalSeconds = seconds(since: start)
        progress?("done", 1)
        return ResidentForwardResult(output: output, lse: lse, mask: mask, querySelfSimilar: flags.queries,
                                     keySelfSimilar: gathered?.flags ?? flags.keys, statistics: stats)
    }

    /// How a key/value block lies in the ring's payloads of a forward pass on `engine` with K/V stored as
    /// `kvFormat`: the engine's own layout in a resident pass (the GPU's int8 sends K as int8 rows and the
    /// block's scale), else K and V rows in `kvFormat`. What `ring.bytesSent` counts blocks of.
    public static func ringPayload(engine: any AttentionEngine, kvFormat: StorageFormat, headDim: Int) -> PayloadFormat {
        if let resident = engine as? any ResidentAttentionEngine, resident.runsResident {
            return resident.ringPayload(kvFormat: kvFormat, headDim: headDim)
        }
        return .storage(kvFormat, headDim: headDim)
    }

    /// Collective: the whole sequence's K mean `[Hkv][D]`, from every rank's K sums.
    private static func keyMean(_ shard: any ResidentShard, layout: ShardLayout, comm: Communicator) throws -> [Float] {
        var sums = try agreed(comm) { try shard.keySums() }
        comm.allreduceSum(&sums)
        return KeyMean(heads: shard.kvHeads, dim: shard.dim, sums: sums, rowCount: layout.seqLen).mean()
    }

    /// The K mean from every rank's K sums, this rank's blocks pooled by the shard, and (with several ranks)
    /// every key block's summary gathered from all ranks; nil with one rank, whose own are all of them.
    private static func summarize(_ shard: any ResidentShard, ranges: [Range<Int>], layout: ShardLayout,
                                  config: SpargeConfig, comm: Communicator,
                                  statistics stats: inout ForwardStatistics) throws -> PackedKeySummaries? {
        try agreed(comm) { try shard.summarizeQueries(tokenRanges: ranges, config: config) }
        let keyMean = try keyMean(shard, layout: layout, comm: comm)
        try agreed(comm) { try shard.summarize(tokenRanges: ranges, config: config, keyMean: keyMean) }
        guard comm.size > 1 else { return nil }
        // From the shard's staging straight into the buffer it uploads from.
        let mine = try agreed(comm) { try shard.packKeySummaries() }
        stats.summaryBytes = mine.count
        return try SummaryExchange.allKeySummaries(packed: mine, heads: shard.kvHeads, dim: shard.dim, layout: layout,
                                                   blockK: config.blockK, on: comm)
    }
}
