import SpargeKernels

/// The attention kernel of `AttentionKernelSource` specialised for one shape, and its launches: what the
/// host-fed and the resident attention share.
struct AttentionKernel {
    let device: CUDADevice
    let headDim: Int
    let config: SpargeConfig
    let precision: CUDAPrecision
    /// Warps per CTA and 16-row m-tiles per warp (1 or 2): see `AttentionKernelSource`.
    let warps: Int, mTiles: Int

    init(device: CUDADevice, headDim: Int, config: SpargeConfig, precision: CUDAPrecision, options: CUDAOptions) {
        self.device = device
        self.headDim = headDim
        self.config = config
        self.precision = precision
        mTiles = options.mTiles == 2 && config.computeTileQ % 32 == 0 ? 2 : 1
        warps = config.computeTileQ / (16 * mTiles)
    }

    private var defines: [(String, Int)] {
        [("HEAD_DIM", headDim), ("BLOCK_K", config.blockK), ("NWARPS", warps), ("MT", mTiles),
         ("QK_BF16", precision == .bf16 ? 1 : 0)]
    }

    var sharedBytes: Int {
        AttentionKernelSource.sharedBytes(headDim: headDim, blockK: config.blockK, warps: warps, mTiles: mTiles)
    }

    /// The attention kernel, P·V in bf16 or in fp16.
    func function(valuesInBF16: Bool) throws -> CUDAFunction {
        try device.function(source: AttentionKernelSource.source, program: AttentionKernelSource.program,
                            name: "sparge_attention", defines: defines + [("PV_BF16", valuesInBF16 ? 1 : 0)],
                            sharedBytes: sharedBytes)
    }

    /// Another kernel of the same source and shape (`sparge_scatter`, `sparge_finish`).
    func auxiliary(_ name: String) throws -> CUDAFunction {
        try device.function(source: AttentionKernelSource.source, program: AttentionKernelSource.program,
                            name: name, defines: defines + [("PV_BF16", 0)])
    }

    /// Where the kernel's operands lie on the device.
    struct Operands {
        /// Q `[Hq][rows][D]`, K and V `[Hkv][kvRows][D]` (16-bit), the fp32 accumulator and the softmax state
        /// kept between launches, the tile counters and the tile table.
        let q: UInt64, k: UInt64, v: UInt64, oacc: UInt64, ml: UInt64
        /// Where the launch's CTAs write their tiles' normalised output `[Hq][rows][D]` (f32) and LSE
        /// `[Hq][rows]` when they are the tiles' last (then the state is neither read nor kept); 0 otherwise.
        var output: UInt64 = 0, lse: UInt64 = 0
        let counters: UInt64, tiles: UInt64
        /// Query rows, rows of K/V per head.
        let rows: Int, kvRows: Int
    }

    /// `SpargeAttentionParams` of sparge_attention.cu, field by field (device addresses as UInt64): one
    /// launch's whole argument. `AttentionParametersLayoutTests` compiles the C++ struct on the host and
    /// compares every offset with this one's.
    struct Parameters: BitwiseCopyable {
        var q: UInt64, k: UInt64, v: UInt64
        var oacc: UInt64, ml: UInt64, output: UInt64, lse: UInt64
        var counters: UInt64, tiles: UInt64, work: UInt64, blocks: UInt64
        var rows: Int32, seqLen: Int32, kvRows: Int32, group: Int32
        var qScale: Float, pvThreshold: Float
        var causal: Int32, unused: Int32 = 0
    }

    /// Enqueues one CTA per work item (tile, first list entry, entries) of `work`, whose lists index
    /// `blocks`.
    func launch(_ operands: Operands, work: UInt64, blocks: UInt64, items: Int, seqLen: Int, group: Int,
                valuesInBF16: Bool) throws {
        let log2e: Float = 1.442_695_040_888_963_4
        let parameters = Parameters(
            q: operands.q, k: operands.k, v: operands.v, oacc: operands.oacc, ml: operands.ml,
            output: operands.output, lse: operands.lse, counters: operands.counters, tiles: operands.tiles,
            work: work, blocks: blocks, rows: Int32(operands.rows), seqLen: Int32(seqLen),
            kvRows: Int32(operands.kvRows), group: Int32(group),
            qScale: config.softmaxScale(headDim: headDim) * log2e, pvThreshold: config.pvThreshold,
            causal: config.causal ? 1 : 0)
        try device.launch(function(valuesInBF16: valuesInBF16), grid: items, block: warps * 32, sharedBytes: sharedBytes,
                          [.value(parameters)])
    }

    /// Enqueues `O / l` into `output` (`[rows][D]` f32) and the LSE into `lse` for `totalRows` rows.
    func normalize(oacc: UInt64, ml: UInt64, output: UInt64, lse: UInt64, totalRows: Int) throws {
        let elements = totalRows * headDim  // four a thread
        try device.launch(auxiliary("sparge_finish"), grid: (elements / 4 + 255) / 256, block: 256,
                          [.pointer(oacc), .pointer(ml), .pointer(output), .pointer(lse), .int64(Int64(totalRows))])
    }

    /// Blocks visited and P·V blocks skipped, from the per-tile counters (`TileCounters`) of `tiles` tiles.
    static func statistics(counters: DeviceBuffer, tiles: Int) throws -> AttentionStatistics {
        var counts = [Int32](repeating: 0, count: tiles * 4)
        try counts.withUnsafeMutableBytes { try counters.download(into: $0.baseAddress!, count: $0.count) }
        var stats = AttentionStatistics()
        for i in 0..<tiles {
            stats.keyBlocksVisited += Int(counts[4 * i])
            stats.pvBlocksSkipped += Int(counts[4 * i + 2])
        }
        return stats
    }
}
