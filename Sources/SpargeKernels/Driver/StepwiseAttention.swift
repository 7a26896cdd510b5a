/// Attention of one process's query rows, fed with key/value blocks over several calls: the seam between
/// whoever moves blocks (a ring of ranks, or one process with every block) and whatever does the tile
/// arithmetic (the CPU tiles of `BlockSparseAttention`, or a GPU).
///
/// The caller never sees tiles. It hands over, per call, a `KeyValueBlockTable` of the blocks it holds; the
/// implementation visits, for every compute tile of its query rows, the blocks of the tile's mask row that
/// the table holds, in ascending block order, carrying the online-softmax state from call to call.
///
/// Edge cases every implementation keeps: a query row that never sees a key gets output 0 and `lse = -inf`;
/// causal masking inside diagonal blocks is the implementation's; a block offered twice is visited twice.
public protocol StepwiseAttention: AnyObject {
    /// Visits, for every compute tile, the blocks of its mask row that `table` holds.
    ///
    /// - Parameters:
    ///   - table: the key/value blocks available in this call; the pointers need stay valid only until
    ///     the call returns.
    ///   - threads: host worker threads the implementation may use (the calling thread is one of them).
    ///   - poll: called on the calling thread while the work runs, with the share of this call's work done
    ///     (0…1, as well as the implementation knows it); a ring progresses its messages with it. Nil when
    ///     there is nothing to progress.
    func attend(_ table: KeyValueBlockTable, threads: Int, poll: ((Double) -> Void)?) throws

    /// Counters of every `attend` so far (an implementation on a device may only have them after `finish`).
    var attendStatistics: AttentionStatistics { get }

    /// The output `[Hq, rows, D]` and row log-sum-exp `[Hq][rows]` (natural log of the scaled scores).
    ///
    /// - Parameter threads: host threads the implementation may use.
    func finish(threads: Int) throws -> (output: Tensor3, lse: [Float])
}

/// What makes a `StepwiseAttention` for a set of query rows, and who does the arithmetic of mask prediction:
/// the choice of backend, made once per run.
public protocol AttentionEngine {
    /// A short name for logs and tables (`cpu`, `cuda`).
    var name: String { get }

    /// Prepares the attention of `queries` (`[Hq, rows, D]`, the rows of `mask.queryBlocks` concatenated).
    ///
    /// - Parameters:
    ///   - queries: this process's query rows.
    ///   - mask: the mask rows of exactly those query blocks, for every query head.
    ///   - kvHeads: key/value heads (`Hq % kvHeads == 0`; query head `h` uses kv head `h / (Hq / kvHeads)`).
    ///   - config: block sizes, compute tile, causal, λ, scale.
    ///   - seqLen: tokens in the whole sequence.
    ///   - threads: host threads the preparation may use.
    func makeAttention(queries: Tensor3, mask: BlockMask, kvHeads: Int, config: SpargeConfig,
                       seqLen: Int, threads: Int) throws -> any StepwiseAttention

    /// Block summaries of rows `rows` of `x`, as `BlockSummaries.summarize` gives them — bit for bit: a
    /// backend may compute them itself, but a mask must not depend on who predicted it. Default: the CPU.
    func summarize(_ x: Tensor3, rows: Range<Int>, firstBlock: Int, blockSize: Int, threshold: Float,
                   subtracting mean: [Float]?) throws -> BlockSummaries

    /// Whether this engine's attention, handed K/V rows of `headDim` in fp32, computes the same bits as from
    /// those rows stored in `format` at no extra cost (it converts every block once anyway, to `format`'s
    /// values): a rank then keeps its own K/V in fp32 and converts only the blocks it sends. Default: false.
    func computesFromFloatRows(storedAs format: StorageFormat, headDim: Int) -> Bool

    /// Mask rows, as `MaskPredictor.predictRows` gives them — bit for bit. Default: the CPU.
    func predictRows(querySummaries: BlockSummaries, queryBlocks: [Int], keySummaries: BlockSummaries,
                     config: SpargeConfig, headDim: Int, queryHeads: Int, kvHeads: Int,
                     seqLen: Int) throws -> BlockMask
}

extension AttentionEngine {
    public func computesFromFloatRows(storedAs format: StorageFormat, headDim: Int) -> Bool { false }

    public func summarize(_ x: Tensor3, rows: Range<Int>, firstBlock: Int, blockSize: Int, threshold: Float,
                          subtracting mean: [Float]?) throws -> BlockSummaries {
        BlockSummaries.summarize(x, rows: rows, firstBlock: firstBlock, blockSize: blockSize, threshold: threshold,
                                 subtracting: mean)
    }

    public func predictRows(querySummaries: BlockSummaries, queryBlocks: [Int], keySummaries: BlockSummaries,
                            config: SpargeConfig, headDim: Int, queryHeads: Int, kvHeads: Int,
                            seqLen: Int) throws -> BlockMask {
        try MaskPredictor.predictRows(querySummaries: querySummaries, queryBlocks: queryBlocks, keySummaries: keySummaries,
                                  config: config, headDim: headDim, queryHeads: queryHeads, kvHeads: kvHeads,
                                  seqLen: seqLen)
    }
}

/// The CPU backend: `BlockSparseAttention`'s SIMD tiles over host threads.
public struct CPUAttentionEngine: AttentionEngine {
    /// The instruction set of the tiles' micro-kernels.
    public let isa: CPUISA
    /// What Q, K, V are rounded to before the fp32 products.
    public let precision: AttentionPrecision

    /// The CPU backend computing with `isa`'s micro-kernels (default: the best this CPU has) in `precision`
    /// (default fp32). A set this CPU cannot run is refused by `makeAttention`
    /// (`SpargeError.invalidArgument`); `CPUISA.named` checks a name up front.
    public init(isa: CPUISA = .detected, precision: AttentionPrecision = .fp32) {
        self.isa = isa
        self.precision = precision
    }

    public var name: String { "cpu" }

    /// True for bf16 storage on bf16 tiles (AMX, AVX512-BF16; D a multiple of 32): they convert every block
    /// once a call, rounding fp32 rows to the bits bf16 storage holds (`sparge_pack_bf16_block`). Not on
    /// tiles with fp32 products, which would round the block again at every visit (+7–19% on AVX2 and
    /// AVX-512); not f16, whose storage refuses values beyond ±65504; not int8, which quantizes what it is
    /// given.
    public func computesFromFloatRows(storedAs format: StorageFormat, headDim: Int) -> Bool {
        format == .bf16 && TileProducts.chosen(precision: precision, isa: isa, headDim: headDim) == .bf16Tiles
    }

    public func makeAttention(queries: Tensor3, mask: BlockMask, kvHeads: Int, config: SpargeConfig,
                              seqLen: Int, threads: Int) throws -> any StepwiseAttention {
        try BlockSparseAttention(queries: queries, mask: mask, kvHeads: kvHeads, config: config, seqLen: seqLen,
                                 threads: threads, backend: .isa(isa), precision: precision)
    }
}

extension BlockSparseAttention: StepwiseAttention {}
