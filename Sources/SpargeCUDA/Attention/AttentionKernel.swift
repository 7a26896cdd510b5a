import SpargeKernels

/// The attention kernel of `AttentionKernelSource` specialised for one shape, and its launches: what the
/// host-fed and the resident attention share. On Hopper GPUs (sm_90) with a driver that encodes tensor maps,
/// 64-row compute tiles and 64- or 128-key blocks (in int8 at D = 128), it is the `wgmma`/TMA kernel (two
/// tiles a CTA); elsewhere, or with `CUDAOptions.hopperKernel` off, the `mma.sync` kernel (one tile a CTA).
struct AttentionKernel {
    let device: CUDADevice
    let headDim: Int
    let config: SpargeConfig
    let precision: CUDAPrecision
    /// Which kernel, and its shape.
    let variant: Variant
    /// Whether the Hopper kernel's consumers take turns at issuing (`CUDAOptions.consumerTurns`).
    let consumerTurns: Bool

    enum Variant: Equatable {
        /// `mma.sync`: warps per CTA and 16-row m-tiles per warp (1 or 2).
        case mma(warps: Int, mTiles: Int)
        /// `wgmma` with TMA (`AttentionKernelSource.hopperStages(int8:)` K/V stages in shared memory).
        case hopper
    }

    init(device: CUDADevice, headDim: Int, config: SpargeConfig, precision: CUDAPrecision, options: CUDAOptions) {
        self.device = device
        self.headDim = headDim
        self.config = config
        self.precision = precision
        consumerTurns = options.consumerTurns
        if Self.hopperApplies(device: device, headDim: headDim, config: config, precision: precision, options: options) {
            variant = .hopper
        } else {
            let mTiles = options.mTiles == 2 && config.computeTileQ % 32 == 0 ? 2 : 1
            variant = .mma(warps: config.computeTileQ / (16 * mTiles), mTiles: mTiles)
        }
    }

    /// Whether `device` runs the Hopper kernel for the shapes it takes: sm_90, a driver that encodes tensor
    /// maps, and `options` not asking for `mma.sync`.
    static func hopperAvailable(device: CUDADevice, options: CUDAOptions) -> Bool {
        options.hopperKernel && device.computeCapability == (9, 0) && device.api.cuTensorMapEncodeTiled != nil
    }

    /// Whether the Hopper kernel takes this shape: 64-row compute tiles, 64- or 128-key blocks, D 64 or 128
    /// (in int8 D 128 only: its int8 rows are one 128-byte swizzle row; the `mma.sync` kernel takes D 64).
    static func hopperTakes(headDim: Int, config: SpargeConfig, precision: CUDAPrecision) -> Bool {
        config.computeTileQ == 64 && [64, 128].contains(config.blockK) && [64, 128].contains(headDim)
            && (precision != .int8 || headDim == 128)
    }

    /// Whether the Hopper kernel runs this shape on `device`.
    static func hopperApplies(device: CUDADevice, headDim: Int, config: SpargeConfig, precision: CUDAPrecision,
                              options: CUDAOptions) -> Bool {
        hopperAvailable(device: device, options: options) && hopperTakes(headDim: headDim, config: config, precision: precision)
    }

    /// Throws unless `precision` runs on `device`: int8's Q·Kᵀ takes the tensor cores' int8 `mma.sync`
    /// (m16n8k32) of sm_80 and later, or the Hopper kernel's `wgmma`; every shape the kernels take runs on one.
    static func checkPrecision(_ precision: CUDAPrecision, device: CUDADevice) throws {
        guard precision == .int8, device.computeCapability.major < 8 else { return }
        throw CUDAError.unsupported("--precision int8 takes the int8 tensor-core instructions of sm_80 and later; here: "
            + "\(device.name) (sm_\(device.computeCapability.major)\(device.computeCapability.minor)); use --precision bf16")
    }

    /// Compute tiles one CTA takes: the entries of the work list per CTA.
    var tilesPerCTA: Int { if case .hopper = variant { 2 } else { 1 } }

    private var defines: [(String, Int)] {
        switch variant {
        case .mma(let warps, let mTiles):
            [("HEAD_DIM", headDim), ("BLOCK_K", config.blockK), ("NWARPS", warps), ("MT", mTiles),
             ("QK_BF16", precision == .bf16 ? 1 : 0), ("QK_INT8", precision == .int8 ? 1 : 0)]
        case .hopper:
            [("HEAD_DIM", headDim), ("BLOCK_K", config.blockK), ("KV_STAGES", AttentionKernelSource.hopperStages(int8: precision == .int8)),
             ("QK_BF16", precision == .fp16 ? 0 : 1), ("QK_INT8", precision == .int8 ? 1 : 0),
             ("TURNS", consumerTurns ? 1 : 0)]
        }
    }

    var sharedBytes: Int {
        switch variant {
        case .mma(let warps, let mTiles):
            AttentionKernelSource.sharedBytes(headDim: headDim, blockK: config.blockK, warps: warps, mTiles: mTiles,
                                              int8: precision == .int8)
        case .hopper:
            AttentionKernelSource.hopperSharedBytes(headDim: headDim, int8: precision == .int8)
        }
    }

    private var threadsPerCTA: Int {
        switch variant {
        case .mma(let warps, _): warps * 32
        case .hopper: 384
        }
    }

    /// The attention kernel, P·V in bf16 or in fp16; with `tailParts` the Hopper kernel's variant whose CTAs
    /// are the parts of split tiles (`TailSplit`: each leaves its state in its slot).
    func function(valuesInBF16: Bool, tailParts: Bool = false) throws -> CUDAFunction {
        let defines = defines + [("PV_BF16", valuesInBF16 ? 1 : 0)] + (tailParts ? [("TAIL_PARTS", 1)] : [])
        if case .hopper = variant {
            return try device.function(source: AttentionKernelSource.hopperSource, program: AttentionKernelSource.hopperProgram,
                                       name: "sparge_attention_sm90", defines: defines, sharedBytes: sharedBytes,
                                       architectureSuffix: "a")
        }
        return try device.function(source: AttentionKernelSource.source, program: AttentionKernelSource.program,
                                   name: "sparge_attention", defines: defines, sharedBytes: sharedBytes)
    }

    /// Another kernel of the `mma.sync` source, of the same head dimension and block (`sparge_scatter`,
    /// `sparge_finish`): from the attention kernel's own module where that is the `mma.sync` one.
    func auxiliary(_ name: String) throws -> CUDAFunction {
        let shape: [(String, Int)] = if case .mma = variant { defines } else {
            [("HEAD_DIM", headDim), ("BLOCK_K", config.blockK), ("NWARPS", 4), ("MT", 1), ("QK_BF16", 1)]
        }
        return try device.function(source: AttentionKernelSource.source, program: AttentionKernelSource.program,
                                   name: name, defines: shape + [("PV_BF16", 0)])
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
        /// Query heads and key/value heads (the tensor maps' extents).
        let queryHeads: Int, kvHeads: Int
        /// int8 (Q and K one byte an element): Q's row scales and row shifts `[Hq][rows]` and K's block
        /// scales `[Hkv][kvRows / blockK]`; nil in 16 bits.
        var quantization: (queryScales: UInt64, keyScales: UInt64, rowShifts: UInt64)? = nil
    }

    /// `SpargeAttentionParams` of sparge_attention_common.cu, field by field (device addresses as UInt64):
    /// one launch's whole argument. `AttentionParametersLayoutTests` compiles the C++ struct on the host and
    /// compares every offset with this one's.
    struct Parameters: BitwiseCopyable {
        var q: UInt64, k: UInt64, v: UInt64
        var oacc: UInt64, ml: UInt64, output: UInt64, lse: UInt64
        var counters: UInt64, tiles: UInt64, work: UInt64, blocks: UInt64
        var rows: Int32, seqLen: Int32, kvRows: Int32, group: Int32
        var qScale: Float, pvThreshold: Float
        var causal: Int32, lambda: Int32
    }

    /// One compute tile's share of a launch: the tile, where its list starts among the launch's block lists,
    /// and its entries.
    struct WorkItem: Equatable {
        var tile: Int32, first: Int32, count: Int32
        static let none = WorkItem(tile: -1, first: 0, count: 0)
    }

    /// A launch's work list, 4 × Int32 an entry (tile, first, count, 0), `tilesPerCTA` entries a CTA, the CTAs
    /// with the longest lists first (the last CTAs to start are then short ones, which evens out the end).
    /// For the Hopper kernel, neighbours in `items` (plan order) that can share their K/V blocks go in one
    /// CTA: tiles of one K/V head whose lists agree on the shorter one's length (one mask row cut at two
    /// causal diagonals); the rest go with an empty partner (tile −1).
    /// - Parameters:
    ///   - kvHead: the K/V head of a tile.
    ///   - block: the key block at an index of the launch's block lists.
    func arrange(_ items: [WorkItem], kvHead: (Int32) -> Int, block: (Int32) -> Int32) -> [Int32] {
        Self.arrange(items, tilesPerCTA: tilesPerCTA, kvHead: kvHead, block: block)
    }

    /// `arrange` for a kernel of `tilesPerCTA` tiles a CTA (1 or 2). O(items + entries compared + longest
    /// list), no allocation per item: it runs on the host before every launch, on the pass's critical path
    /// (4096 tiles at 32K tokens and 8 heads), so the CTAs are ordered by a counting sort on their longest
    /// list — stable, so equal lengths keep plan order — rather than a comparison sort.
    static func arrange(_ items: [WorkItem], tilesPerCTA: Int, kvHead: (Int32) -> Int, block: (Int32) -> Int32) -> [Int32] {
        let ctas = pairs(items, tilesPerCTA: tilesPerCTA, kvHead: kvHead, block: block)
        let entriesPerCTA = 4 * tilesPerCTA
        let at = orderByLongest(ctas)
        return [Int32](unsafeUninitializedCapacity: entriesPerCTA * ctas.count) { work, initialized in
            func put(_ item: WorkItem, at i: Int) {
                (work[i], work[i + 1], work[i + 2], work[i + 3]) = (item.tile, item.first, item.count, 0)
            }
            for (c, cta) in ctas.enumerated() {
                put(items[Int(cta.first)], at: at[c] * entriesPerCTA)
                if tilesPerCTA == 2 { put(cta.second < 0 ? .none : items[Int(cta.second)], at: at[c] * entriesPerCTA + 4) }
            }
            initialized = entriesPerCTA * ctas.count
        }
    }

    /// One CTA of `arrange`: its first item's index, its second's (−1: none), and its longest list.
    struct CTAPair { var first: Int32, second: Int32, longest: Int32 }

    /// The CTAs of `items` in plan order: with two tiles a CTA, neighbours of one K/V head whose lists agree
    /// on the shorter one's length share one.
    private static func pairs(_ items: [WorkItem], tilesPerCTA: Int, kvHead: (Int32) -> Int,
                              block: (Int32) -> Int32) -> [CTAPair] {
        var ctas: [CTAPair] = []
        ctas.reserveCapacity(items.count)
        var i = 0
        while i < items.count {
            let a = items[i]
            var partner = -1
            if tilesPerCTA == 2 && i + 1 < items.count {
                let next = items[i + 1]
                // Lists that start at the same entry are one list; others are compared on the shorter's length.
                let agree = next.first == a.first
                    || (0..<min(a.count, next.count)).allSatisfy { block(a.first + $0) == block(next.first + $0) }
                if agree && kvHead(a.tile) == kvHead(next.tile) { partner = i + 1 }
            }
            ctas.append(CTAPair(first: Int32(i), second: Int32(partner),
                                longest: max(a.count, partner < 0 ? 0 : items[partner].count)))
            i += partner < 0 ? 1 : 2
        }
        return ctas
    }

    /// Each CTA's place in the launch, longest lists first and plan order among equals: a counting sort.
    private static func orderByLongest(_ ctas: [CTAPair]) -> [Int] {
        let longest = Int(ctas.lazy.map(\.longest).max() ?? 0)
        // `starts[L]`: where the CTAs whose longest list has `longest − L` entries begin.
        var starts = [Int](repeating: 0, count: longest + 2)
        for cta in ctas { starts[longest - Int(cta.longest) + 1] += 1 }
        for l in 1..<starts.count { starts[l] += starts[l - 1] }
        return ctas.map { cta in
            let slot = longest - Int(cta.longest)
            defer { starts[slot] += 1 }
            return starts[slot]
        }
    }

    /// Enqueues the work list `work` (`arrange`'s entries, `tilesPerCTA` a CTA), whose lists index `blocks`,
    /// on `stream` (default: the main stream). With `tailParts`, the entries are a split tail's parts and the
    /// Hopper kernel's parts variant runs them, leaving their states in its slots.
    func launch(_ operands: Operands, work: UInt64, blocks: UInt64, entries: Int, seqLen: Int, group: Int,
                valuesInBF16: Bool, tailParts: TailParts? = nil, on stream: UnsafeMutableRawPointer? = nil) throws {
        let log2e: Float = 1.442_695_040_888_963_4
        let parameters = Parameters(
            q: operands.q, k: operands.k, v: operands.v, oacc: operands.oacc, ml: operands.ml,
            output: operands.output, lse: operands.lse, counters: operands.counters, tiles: operands.tiles,
            work: work, blocks: blocks, rows: Int32(operands.rows), seqLen: Int32(seqLen),
            kvRows: Int32(operands.kvRows), group: Int32(group),
            qScale: config.softmaxScale(headDim: headDim) * log2e, pvThreshold: config.pvThreshold,
            causal: config.causal ? 1 : 0, lambda: config.lambdaActive ? 1 : 0)
        // SpargeMmaParams: the parameters, in int8 the scale pointers. SpargeHopperParams: the tensor maps
        // before them, padded to the struct's 64-byte alignment.
        var argument = withUnsafeBytes(of: parameters) { Array($0) }
        if let scales = operands.quantization {
            for pointer in [scales.queryScales, scales.keyScales, scales.rowShifts] {
                withUnsafeBytes(of: pointer) { argument += $0 }
            }
        }
        if case .hopper = variant {
            let maps = try TensorMaps(device: device, operands: operands, headDim: headDim, blockK: config.blockK)
            argument = maps.bytes + argument
            // The parts' variant: then where they leave their state (SpargeHopperParams' TAIL_PARTS fields).
            if let tailParts {
                for pointer in [tailParts.partialO.address, tailParts.partialML.address] {
                    withUnsafeBytes(of: pointer) { argument += $0 }
                }
            }
            argument += [UInt8](repeating: 0, count: (64 - argument.count % 64) % 64)
        }
        try device.launch(function(valuesInBF16: valuesInBF16, tailParts: tailParts != nil), grid: entries / tilesPerCTA,
                          block: threadsPerCTA, sharedBytes: sharedBytes, on: stream, [.bytes(argument)])
    }

    /// Enqueues `O / l` into `output` (`[rows][D]` f32) and the LSE into `lse` for `totalRows` rows, adding
    /// `rowShifts` (int8's `q·μ`, 0: none) to the LSE.
    func normalize(oacc: UInt64, ml: UInt64, output: UInt64, lse: UInt64, totalRows: Int, rowShifts: UInt64 = 0) throws {
        let elements = totalRows * headDim  // four a thread
        try device.launch(auxiliary("sparge_finish"), grid: (elements / 4 + 255) / 256, block: 256,
                          [.pointer(oacc), .pointer(ml), .pointer(output), .pointer(lse), .int64(Int64(totalRows)),
                           .pointer(rowShifts)])
    }

    /// Blocks visited and P·V blocks skipped, from the per-tile counters (`TileCounters`) of `tiles` tiles.
    static func statistics(counters: DeviceBuffer, tiles: Int) throws -> AttentionStatistics {
        var counts = [Int32](repeating: 0, count: tiles * 4)
        try counts.withUnsafeMutableBytes { try counters.download(into: $0.baseAddress!, count: $0.count) }
        return counts.withUnsafeBytes { statistics(counters: $0, tiles: tiles) }
    }

    /// The same from the counters already on the host (`tiles · 16` bytes).
    static func statistics(counters: UnsafeRawBufferPointer, tiles: Int) -> AttentionStatistics {
        let counts = counters.bindMemory(to: Int32.self)
        var stats = AttentionStatistics()
        for i in 0..<tiles {
            stats.keyBlocksVisited += Int(counts[4 * i])
            stats.pvBlocksSkipped += Int(counts[4 * i + 2])
        }
        return stats
    }
}
