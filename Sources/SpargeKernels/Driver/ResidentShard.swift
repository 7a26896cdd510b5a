/// A backend that keeps a rank's tensors in its own memory for the whole forward pass (a GPU): the pass
/// then moves through the host only what the collectives need — the K sums, the key summaries, the need
/// bits — and the ring's payloads.
public protocol ResidentAttentionEngine: AttentionEngine {
    /// This rank's Q `[Hq, rows, D]` and K, V `[Hkv, rows, D]` entered into the engine's memory, converted
    /// once: Q and K as fp32 for the summaries and in the kernel's type for the tiles, K and V in `kvFormat`
    /// for the ring. Tensors may be on the host or already on the engine's device.
    ///
    /// - Throws: `SpargeError.invalidArgument` for a tensor the engine cannot take (another device, a value
    ///   beyond `kvFormat`'s range), or the backend's error.
    func enter(q: Tensor, k: Tensor, v: Tensor, kvFormat: StorageFormat) throws -> any ResidentShard

    /// Whether `ShardedAttention.forward` runs its passes resident on this engine (else fed from the host).
    var runsResident: Bool { get }

    /// How a key/value block of this engine's resident passes lies in a ring payload, with K and V stored as
    /// `kvFormat`: what its ring stores pack and receive. Default: K and V rows in `kvFormat`
    /// (`PayloadFormat.storage`).
    func ringPayload(kvFormat: StorageFormat, headDim: Int) -> PayloadFormat

    /// A packed copy of host tensor `tensor` in the engine's memory.
    func upload(_ tensor: Tensor) throws -> Tensor

    /// A packed host copy of `tensor`, which lies in the engine's memory.
    func download(_ tensor: Tensor) throws -> Tensor

    /// Writes `source` (a packed f32 tensor of the engine's memory, such as a resident pass's output) into
    /// `destination` (a caller's tensor of the same shape in the engine's memory, any element type and
    /// strides), where they are.
    func write(_ source: Tensor, into destination: Tensor) throws
}

extension ResidentAttentionEngine {
    public func ringPayload(kvFormat: StorageFormat, headDim: Int) -> PayloadFormat {
        .storage(kvFormat, headDim: headDim)
    }
}

/// One rank's Q, K, V in a backend's memory, and the steps of a forward pass that run where they are.
public protocol ResidentShard: AnyObject {
    /// Query heads, key/value heads, this rank's rows, head dimension.
    var queryHeads: Int { get }
    var kvHeads: Int { get }
    var rows: Int { get }
    var dim: Int { get }

    /// Told first what the pass is: a backend may start the work that needs neither summaries nor mask,
    /// beside them (a GPU converts V for P·V while it pools the blocks). Default: nothing.
    ///
    /// - Parameter tokenRanges: the global token ranges this rank holds, in the order of its rows.
    func beginPass(seqLen: Int, tokenRanges: [Range<Int>], config: SpargeConfig) throws

    /// Whether V holds values that the backend's compact P·V type cannot carry (fp16 beyond ±65504); when
    /// any rank's does, every rank's ring store is told so (`ResidentRingStore.chooseValueType(wide:)`) and
    /// computes P·V in its wide type. May wait for the device's conversion of V.
    func needsWideValues() throws -> Bool

    /// The sums of K over this rank's rows `[Hkv][D]`, in ``KeyMean``'s order (so the same Doubles).
    func keySums() throws -> [Double]

    /// Whether the attention itself uses the sequence's K mean (int8 smooths K by it): then a pass that
    /// predicts no mask (dense), and so calls no `summarize`, gives it with ``keepKeyMean(_:config:)``.
    var smoothsKeys: Bool { get }

    /// Keeps the whole sequence's K mean `[Hkv][D]` for the attention, where `summarize` does not run.
    func keepKeyMean(_ keyMean: [Float], config: SpargeConfig) throws

    /// Starts pooling this rank's query blocks as `BlockSummaries.summarize` does, bit for bit: they need no
    /// K mean, so a pass asks for them before the K sums, and a device pools Q while the host waits for the
    /// sums. Called once before ``summarize(tokenRanges:config:keyMean:)``, with the same ranges and config.
    ///
    /// - Parameter tokenRanges: the global token ranges this rank holds, in the order of its rows.
    func summarizeQueries(tokenRanges: [Range<Int>], config: SpargeConfig) throws

    /// Pools this rank's key blocks (minus `keyMean`) as `BlockSummaries.summarize` does, bit for bit, and
    /// keeps them with the query blocks' for ``predictRows(queryBlocks:keySummaries:config:seqLen:)`` (and
    /// the mean as `keepKeyMean` does).
    ///
    /// - Parameter tokenRanges: the global token ranges this rank holds, in the order of its rows.
    func summarize(tokenRanges: [Range<Int>], config: SpargeConfig, keyMean: [Float]) throws

    /// The key summaries pooled by `summarize`, packed for the allgather one run per token range
    /// (`PackedKeySummaries`' layout), in host memory the shard owns until its next call.
    func packKeySummaries() throws -> UnsafeRawBufferPointer

    /// The self-similarity flags of this rank's query blocks `[Hq][blocks]` and key blocks `[Hkv][blocks]`.
    func selfSimilarFlags() throws -> (queries: [UInt8], keys: [UInt8])

    /// This rank's mask rows, as `MaskPredictor.predictRows` gives them — bit for bit.
    ///
    /// - Parameter keySummaries: every key block's summary, gathered from all ranks; nil when this rank's
    ///   own (from `summarize`) are all of them (one rank), which then never leave the backend.
    func predictRows(queryBlocks: [Int], keySummaries: PackedKeySummaries?, config: SpargeConfig,
                     seqLen: Int) throws -> BlockMask

    /// The ring's store for an attention of this rank's queries under `mask`, holding this rank's K/V; its
    /// P·V type is chosen afterwards (`ResidentRingStore.chooseValueType(wide:)`), so that the store's
    /// planning on the host overlaps the device's conversion of V that the choice waits for.
    ///
    /// - Parameter messagesInPlace: the transport takes the backend's own memory (a CUDA-aware MPI), so
    ///   `pack` and `receiveBuffer` may hand it device memory instead of staging through the host.
    func makeRingStore(mask: BlockMask, tokenRanges: [Range<Int>], config: SpargeConfig, seqLen: Int,
                       messagesInPlace: Bool) throws -> any ResidentRingStore
}

extension ResidentShard {
    public func beginPass(seqLen: Int, tokenRanges: [Range<Int>], config: SpargeConfig) throws {}
}

/// A ring store whose output stays where it was computed.
public protocol ResidentRingStore: RingBlockStore {
    /// Computes P·V in the backend's wide type (bf16) when `wide`, else in its compact one (fp16); called once,
    /// with the same `wide` on every rank, before the ring runs.
    ///
    /// - Throws: when `wide` and the pass's precision has no wide P·V type.
    func chooseValueType(wide: Bool) throws

    /// The output `[Hq, rows, D]` (f32) and row log-sum-exp `[Hq, rows]` (f32, natural log), in the
    /// backend's memory, and the counters of every `attend`.
    func finish() throws -> (output: Tensor, lse: Tensor, statistics: AttentionStatistics)
}
