/// Counters of a forward pass (or of one tile since its `begin`).
public struct AttentionStatistics: Sendable, Equatable {
    /// Key blocks whose scores were computed (blocks entirely above the causal diagonal are not counted).
    public var keyBlocksVisited: Int = 0
    /// Visited key blocks whose P·V was skipped by the λ rule.
    public var pvBlocksSkipped: Int = 0
    /// Seconds the attention kernels ran on the device, where the engine times them (a GPU's events around
    /// its launches); nil where it does not.
    public var deviceSeconds: Double? = nil
    /// CTAs of a launch's last wave whose lists were split into parts (a GPU's tail split); 0 where none.
    public var splitTailCTAs: Int = 0

    public init(keyBlocksVisited: Int = 0, pvBlocksSkipped: Int = 0, deviceSeconds: Double? = nil, splitTailCTAs: Int = 0) {
        self.keyBlocksVisited = keyBlocksVisited
        self.pvBlocksSkipped = pvBlocksSkipped
        self.deviceSeconds = deviceSeconds
        self.splitTailCTAs = splitTailCTAs
    }

    public static func + (a: Self, b: Self) -> Self {
        Self(keyBlocksVisited: a.keyBlocksVisited + b.keyBlocksVisited,
             pvBlocksSkipped: a.pvBlocksSkipped + b.pvBlocksSkipped,
             deviceSeconds: a.deviceSeconds.flatMap { x in b.deviceSeconds.map { x + $0 } } ?? a.deviceSeconds ?? b.deviceSeconds,
             splitTailCTAs: a.splitTailCTAs + b.splitTailCTAs)
    }
}

import CSpargeKernels

/// What the tiles of an arena multiply with.
public enum TileProducts: Sendable {
    /// fp32 vectors on fp32 rows (in a 16-bit precision, rows rounded beforehand).
    case fp32
    /// `AttentionPrecision.int8`'s integers: queries quantized as they are loaded, blocks visited as
    /// `QuantizedKeyValueBlock`s.
    case int8
    /// `AttentionPrecision.bf16` on bf16 operands (AMX tiles, or AVX512-BF16 dot products): queries packed
    /// in bf16 pairs as they are loaded, blocks visited as `Bf16KeyValueBlock`s, P rounded to bf16 before
    /// P·V.
    case bf16Tiles

    /// What tiles of `isa` multiply with in `precision` at head dimension `headDim`: int8's integers; bf16
    /// tiles where the set has them and D is a multiple of 32; else fp32 (on inputs rounded beforehand).
    public static func chosen(precision: AttentionPrecision, isa: CPUISA, headDim: Int) -> TileProducts {
        switch precision {
        case .int8: .int8
        case .bf16 where isa.hasBf16Tiles && headDim % 32 == 0: .bf16Tiles
        default: .fp32
        }
    }

    /// Keys a visit of bf16 tiles takes at once, over several key blocks: on AMX a visit loads and stores each
    /// 32 × 32 chunk of Oᵀ and drains the tiles around P·V once per call, which 64 keys alone left waiting on
    /// (BENCHMARKS.md, 2026-11-30). For measurement only (the `sparge` tool sets it from
    /// SPARGE_BF16_VISIT_KEYS), and only before any attention is made: arenas read it when they are made.
    nonisolated(unsafe) public static var bf16VisitKeys = 256

    /// Key blocks one visit of these products takes at once: bf16 tiles group whole blocks of a multiple of 32
    /// keys (no padding between them) up to `bf16VisitKeys` and at most 8 blocks, unless the λ rule runs (it
    /// decides block by block); every other product visits one block at a time.
    public func visitBlocks(config: SpargeConfig) -> Int {
        guard self == .bf16Tiles, !config.lambdaActive, config.blockK % 32 == 0 else { return 1 }
        return max(1, min(8, max(1, Self.bf16VisitKeys) / config.blockK))
    }
}

/// A key/value block that will be visited next: its first `bytes` bytes of keys and of values are asked
/// for while the current block computes (blocks chosen by a mask are scattered, and even adjacent ones
/// arrived from the L3 too late for the kernels: a quarter of their rate).
public struct UpcomingBlock {
    public let keys: UnsafeRawPointer
    public let values: UnsafeRawPointer
    public let bytes: Int

    public init(keys: UnsafeRawPointer, values: UnsafeRawPointer, bytes: Int) {
        (self.keys, self.values, self.bytes) = (keys, values, bytes)
    }
}

/// One aligned allocation holding the states of many attention compute tiles.
///
/// A distributed runtime keeps one tile per local query tile alive across ring steps while K/V blocks
/// arrive; a thread pool keeps one per worker. Creating an arena is one allocation; a tile handle is a few
/// pointers into it, so visiting never allocates.
///
/// Memory per tile, in floats: `D·R + D·L` (queries and output accumulator, transposed) `+ blockK·R` (the
/// score/probability block; for bf16 tiles blockK rounded up to 32, times the blocks a visit groups) `+ 4·L` (the block's row maxima, the running max and sum, and int8's lane
/// scales after the queries), with `L` = `computeTileQ` rounded up to 64 lanes and `R = L + 16` the
/// row stride of the queries and scores (a power-of-two stride put all D rows of a 16-lane column into 16
/// of the L1's 64 sets, where they evicted each other and the keys). For D = 128 and the defaults that is
/// 91 KB (bf16 tiles, four blocks a visit: 146 KB). An arena made with `holdsScratch: false` keeps only the running max and sum
/// (`2·L` floats, half a KB): its tiles borrow the packed queries and the score block from an
/// `AttentionScratch` while they compute, and keep their output accumulator (`D·L` floats) where the caller
/// says — a driver keeps it in the output's own rows, so a tile's state costs no memory beyond the output,
/// and computes on a copy in the scratch (`tile(_:scratch:slot:accumulator:)`, `VectorTileBank`).
public final class AttentionTileArena: @unchecked Sendable {
    /// Number of tiles.
    public let count: Int
    /// Head dimension D of every tile.
    public let headDim: Int
    /// Query rows a tile can hold (`config.computeTileQ`).
    public let tileRows: Int
    let lanes: Int
    /// Floats from one row of the packed queries or of the score block to the next (`lanes + 16`).
    let rowStride: Int
    let blockK: Int
    /// Rows of the score block: blockK, rounded up to 32 for bf16 tiles (the keys they pad a block to), times
    /// the blocks a visit takes (`visitBlocks`).
    let scoreRows: Int
    /// Key blocks one visit takes at once (`TileProducts.visitBlocks`).
    let visitBlocks: Int
    let causal: Bool
    let pvThreshold: Float
    /// Whether the λ rule runs (`SpargeConfig.lambdaActive`); when not, no Δ is formed.
    let lambdaActive: Bool
    let queryScale: Float
    let strideBytes: Int
    let base: UnsafeMutableRawPointer
    /// Whether each tile holds its packed queries and score block (else they come from an `AttentionScratch`).
    public let holdsScratch: Bool
    /// The instruction set of the micro-kernels its tiles compute with.
    public let isa: CPUISA
    let kernels: sparge_tile_kernels
    /// The bf16 tile kernels (`products` bf16Tiles).
    let bf16: sparge_bf16_tile_kernels
    /// What its tiles multiply with.
    public let products: TileProducts
    /// Whether its tiles compute `AttentionPrecision.int8`'s integer products.
    public var integerProducts: Bool { products == .int8 }
    /// Floats of one tile's packed queries: `D` rows of `rowStride`, then the lanes' int8 scales.
    var queryFloats: Int { headDim * rowStride + lanes }

    static let headerInts = 8
    static let alignment = 64

    /// Storage for `tiles` tile states of head dimension `headDim` under `config` (its `computeTileQ`,
    /// `blockK`, `causal`, `pvThreshold` and softmax scale). The memory is uninitialised until `begin`
    /// (or `reset`). With `holdsScratch: false` only the state that outlives a visit is kept per tile.
    /// `isa` (default: the best this CPU has) must be supported by this CPU. `products` says what the tiles
    /// multiply with (default fp32); bf16 tiles need a set that has them and D a multiple of 32
    /// (`TileProducts.chosen`). `bf16Kernels` replaces the set's bf16 tile kernels (tests:
    /// `sparge_bf16_emulated()`, which runs without AMX).
    public init(tiles: Int, headDim: Int, config: SpargeConfig, holdsScratch: Bool = true,
                isa: CPUISA = .detected, products: TileProducts = .fp32,
                bf16Kernels: sparge_bf16_tile_kernels? = nil) {
        precondition(tiles >= 0, "AttentionTileArena: negative tile count")
        precondition(headDim > 0, "AttentionTileArena: head dimension must be positive")
        precondition(config.computeTileQ > 0 && config.blockK > 0, "AttentionTileArena: empty tile shape")
        count = tiles
        self.headDim = headDim
        tileRows = config.computeTileQ
        lanes = (config.computeTileQ + 63) / 64 * 64
        rowStride = lanes + 16
        blockK = config.blockK
        causal = config.causal
        pvThreshold = config.pvThreshold
        lambdaActive = config.lambdaActive
        queryScale = config.softmaxScale(headDim: headDim) * 1.442_695_040_888_963_4
        self.holdsScratch = holdsScratch
        self.isa = isa
        kernels = isa.kernels
        self.products = products
        bf16 = bf16Kernels ?? kernels.bf16
        precondition(products != .bf16Tiles || (bf16.scores != nil && headDim % 32 == 0),
                     "AttentionTileArena: bf16 tiles need kernels for them (\(isa.rawValue) has none) and D a multiple of 32")
        visitBlocks = products.visitBlocks(config: config)
        scoreRows = (products == .bf16Tiles ? sparge_bf16_padded_keys(config.blockK) : config.blockK) * visitBlocks
        let floats = holdsScratch ? headDim * (rowStride + lanes) + scoreRows * rowStride + 4 * lanes : 2 * lanes
        let bytes = Self.headerInts * MemoryLayout<Int>.stride + floats * MemoryLayout<Float>.stride
        strideBytes = (bytes + Self.alignment - 1) / Self.alignment * Self.alignment
        base = .allocate(byteCount: Swift.max(1, strideBytes * tiles), alignment: Self.alignment)
    }

    deinit { base.deallocate() }

    /// The handle of tile `index` (an arena that holds its scratch).
    public subscript(index: Int) -> AttentionTile {
        precondition(index >= 0 && index < count, "AttentionTileArena: tile \(index) of \(count)")
        precondition(holdsScratch, "AttentionTileArena: this arena's tiles need an AttentionScratch")
        return AttentionTile(arena: self, base: base + index * strideBytes)
    }

    /// The handle of tile `index` computing with query slot `slot` and the score block of `scratch`, its
    /// output accumulator (`D·L` floats, transposed) at `accumulator` (an arena made with
    /// `holdsScratch: false`). Two tiles may share a scratch but not a slot while their queries are in use;
    /// the score block is reused by every visit. A tile must be given the same accumulator contents every time
    /// (the same buffer, or its contents moved between calls, as `VectorTileBank`'s load and unload do).
    @inline(__always)
    public func tile(_ index: Int, scratch: AttentionScratch, slot: Int,
                     accumulator: UnsafeMutablePointer<Float>) -> AttentionTile {
        tile(index, scratch: scratch, slot: slot, accumulator: accumulator, owned: true)
    }

    /// `tile(_:scratch:slot:accumulator:)` for a caller that keeps the arena alive while it uses the handle
    /// (a driver's tile bank): the handle does not hold the arena, so making and dropping it counts no
    /// reference (with every worker thread counting one arena's references at every visit, its count was a
    /// cache line that every core wrote).
    @inline(__always)
    func borrowedTile(_ index: Int, scratch: AttentionScratch, slot: Int,
                      accumulator: UnsafeMutablePointer<Float>) -> AttentionTile {
        tile(index, scratch: scratch, slot: slot, accumulator: accumulator, owned: false)
    }

    @inline(__always)
    private func tile(_ index: Int, scratch: AttentionScratch, slot: Int, accumulator: UnsafeMutablePointer<Float>,
                      owned: Bool) -> AttentionTile {
        precondition(index >= 0 && index < count && slot >= 0 && slot < scratch.slots,
                     "AttentionTileArena: tile \(index) of \(count), slot \(slot) of \(scratch.slots)")
        return AttentionTile(arena: self, state: base + index * strideBytes, scratch: scratch, slot: slot,
                             accumulator: accumulator, owned: owned)
    }
}

extension AttentionTileArena {
    /// Counters of tile `index` since its `begin` or `reset`.
    public func statistics(ofTile index: Int) -> AttentionStatistics {
        precondition(index >= 0 && index < count, "AttentionTileArena: tile \(index) of \(count)")
        let header = (base + index * strideBytes).assumingMemoryBound(to: Int.self)
        return AttentionStatistics(keyBlocksVisited: header[2], pvBlocksSkipped: header[4])
    }
}

/// Packed queries for `slots` tiles and one score block (rows `rowStride` floats apart), then the block's
/// row maxima, then an output accumulator (`D·L` floats) per slot: what a tile needs only while it
/// computes. One per worker thread; see `AttentionTileArena.tile(_:scratch:slot:)`. A query slot also holds
/// the `D·L` floats `finishInPlace` transposes through. Every part starts on a cache line (L is a multiple
/// of 64 and the row stride of 16 floats).
public final class AttentionScratch: @unchecked Sendable {
    /// Query slots.
    public let slots: Int
    let queries: UnsafeMutablePointer<Float>  // slots × [D][rowStride]
    let scores: UnsafeMutablePointer<Float>  // [scoreRows][rowStride], then rowMax [L]
    let accumulators: UnsafeMutablePointer<Float>  // slots × [D][L]
    let queryFloats: Int
    let accumulatorFloats: Int

    /// Scratch for tiles of `arena` with `slots` query slots.
    public init(for arena: AttentionTileArena, slots: Int) {
        self.slots = slots
        queryFloats = arena.queryFloats
        accumulatorFloats = arena.headDim * arena.lanes
        let scoreFloats = arena.scoreRows * arena.rowStride + arena.lanes
        let floats = slots * (queryFloats + accumulatorFloats) + scoreFloats
        let raw = UnsafeMutableRawPointer.allocate(byteCount: floats * MemoryLayout<Float>.stride,
                                                   alignment: AttentionTileArena.alignment)
        queries = raw.bindMemory(to: Float.self, capacity: floats)
        scores = queries + slots * queryFloats
        accumulators = scores + scoreFloats
    }

    /// The output accumulator of `slot` (`D·L` floats, on a cache line).
    func accumulator(_ slot: Int) -> UnsafeMutablePointer<Float> { accumulators + slot * accumulatorFloats }

    deinit { UnsafeMutableRawPointer(queries).deallocate() }
}

/// The state of one compute tile: up to `computeTileQ` query rows of one query head, against which key
/// blocks are visited one at a time (the kernel body of block-sparse FlashAttention, on the CPU).
///
/// Layout (DESIGN.md §5): queries are stored transposed, `Q̂ᵀ[D][L]`, pre-multiplied by `scale·log2(e)`, so
/// that the scores of a key block are computed as `Sᵀ = K·Q̂ᵀ` with consecutive *queries* in each vector
/// register; the running max `m`, sum `l`, the rescale and the exponentials are then vertical vector
/// operations, and the output accumulator `Oᵀ[D][L]` is updated as `Oᵀ = α·Oᵀ + Vᵀ·Pᵀ`. Scores are in log2
/// units. The three products (scores, softmax update, P·V) are the arena's ISA's micro-kernels
/// (CSpargeKernels); the tile does the bookkeeping around them (causal mask, the λ rule).
///
/// Use: `begin` once, `visit` each key block (in any order; the λ rule depends on the order), `finish`.
/// Any D is supported (D enters the micro-kernels only as a loop length, with tails for any remainder).
/// GQA is the caller's choice of which K/V head it passes.
///
/// The handle holds its arena, so the memory lives as long as any handle (except a handle from
/// `AttentionTileArena.borrowedTile`, whose caller keeps the arena alive). A tile may move between threads
/// (hence `Sendable`) but must be used by one thread at a time; different tiles of one arena are independent.
public struct AttentionTile: @unchecked Sendable {
    /// The arena, read without counting references; `owner` holds it, except in the handles of
    /// `AttentionTileArena.borrowedTile`, whose caller does.
    unowned(unsafe) let arena: AttentionTileArena
    let owner: AttentionTileArena?
    let header: UnsafeMutablePointer<Int>  // rowCount, queryStart, visited, pvComputed, pvSkipped, _, _, _
    let queriesT: UnsafeMutablePointer<Float>  // [D][rowStride] (int8: [⌈D/2⌉][rowStride] pairs), then laneScale
    let outputT: UnsafeMutablePointer<Float>  // [D][L]
    let scores: UnsafeMutablePointer<Float>  // [scoreRows][rowStride]: Sᵀ, then Pᵀ
    let rowMax: UnsafeMutablePointer<Float>  // [L]: max of the current block, then α
    let runningMax: UnsafeMutablePointer<Float>  // [L]
    let runningSum: UnsafeMutablePointer<Float>  // [L]

    init(arena: AttentionTileArena, state: UnsafeMutableRawPointer, scratch: AttentionScratch, slot: Int,
         accumulator: UnsafeMutablePointer<Float>, owned: Bool) {
        self.arena = arena
        owner = owned ? arena : nil
        let l = arena.lanes
        header = state.bindMemory(to: Int.self, capacity: AttentionTileArena.headerInts)
        runningMax = (state + AttentionTileArena.headerInts * MemoryLayout<Int>.stride)
            .bindMemory(to: Float.self, capacity: 2 * l)
        runningSum = runningMax + l
        outputT = accumulator
        queriesT = scratch.queries + slot * scratch.queryFloats
        scores = scratch.scores
        rowMax = scores + arena.scoreRows * arena.rowStride
    }

    init(arena: AttentionTileArena, base: UnsafeMutableRawPointer) {
        self.arena = arena
        owner = arena
        let d = arena.headDim, l = arena.lanes, stride = arena.rowStride
        header = base.bindMemory(to: Int.self, capacity: AttentionTileArena.headerInts)
        let floats = (base + AttentionTileArena.headerInts * MemoryLayout<Int>.stride)
            .bindMemory(to: Float.self, capacity: d * (stride + l) + arena.scoreRows * stride + 4 * l)
        queriesT = floats
        outputT = floats + arena.queryFloats
        scores = outputT + d * l
        rowMax = scores + arena.scoreRows * stride
        runningMax = rowMax + l
        runningSum = runningMax + l
    }

    /// Head dimension D.
    public var headDim: Int { arena.headDim }
    /// Rows given to the last `begin`.
    public var rowCount: Int { header[0] }
    /// Global token index of row 0, as given to the last `begin`.
    public var queryStart: Int { header[1] }
    /// Counters since the last `begin`.
    public var statistics: AttentionStatistics {
        AttentionStatistics(keyBlocksVisited: header[2], pvBlocksSkipped: header[4])
    }

    /// Starts the tile on `rowCount` query rows: packs them transposed and scaled, and empties the state.
    ///
    /// - Parameters:
    ///   - queries: `rowCount × D` row-major rows of one query head.
    ///   - rowCount: `0...computeTileQ`; a short last tile is allowed (the unused lanes are zero and never
    ///     take part in the λ rule or the output).
    ///   - queryStart: global token index of row 0 (for causal masking).
    public func begin(queries: UnsafePointer<Float>, rowCount: Int, queryStart: Int) {
        reset(rowCount: rowCount, queryStart: queryStart)
        load(queries: queries)
    }

    /// Starts the tile's state on `rowCount` rows from `queryStart` (the first half of `begin`): empties
    /// the accumulator, running max and sum and the counters.
    public func reset(rowCount: Int, queryStart: Int) {
        precondition(rowCount >= 0 && rowCount <= arena.tileRows,
                     "AttentionTile: \(rowCount) rows in a tile of \(arena.tileRows)")
        let d = arena.headDim, l = arena.lanes
        header[0] = rowCount
        header[1] = queryStart
        header[2] = 0
        header[3] = 0
        header[4] = 0
        outputT.update(repeating: 0, count: d * l)
        runningMax.update(repeating: -.infinity, count: l)
        runningSum.update(repeating: 0, count: l)
    }

    /// Packs the tile's `rowCount` query rows (`rowCount × D` row-major) transposed and scaled (the second
    /// half of `begin`); a tile borrowing its scratch does this before each run of visits.
    public func load(queries: UnsafePointer<Float>) {
        let d = arena.headDim, l = arena.lanes, stride = arena.rowStride, s = arena.queryScale, rowCount = header[0]
        if arena.integerProducts { return loadQuantized(queries: queries) }
        if arena.products == .bf16Tiles {
            let pairs = UnsafeMutableRawPointer(queriesT).bindMemory(to: UInt32.self, capacity: d / 2 * stride)
            return sparge_pack_bf16_queries(queries, rowCount, d, stride, l, pairs)
        }
        for r in 0..<rowCount {
            let q = queries + r * d
            for i in 0..<d { queriesT[i * stride + r] = q[i] * s }
        }
        if rowCount < l {
            for i in 0..<d { (queriesT + i * stride + rowCount).update(repeating: 0, count: l - rowCount) }
        }
    }

    /// The scale each lane's int8 query is multiplied by (`queryScale·s_q`; 0 for unused lanes).
    var laneScale: UnsafeMutablePointer<Float> { queriesT + arena.headDim * arena.rowStride }

    /// `load` for int8: each row quantized (`AttentionPrecision.int8`) and packed as int16 pairs along D.
    func loadQuantized(queries: UnsafePointer<Float>) {
        let d = arena.headDim, l = arena.lanes, stride = arena.rowStride, rowCount = header[0]
        let packed = UnsafeMutableRawPointer(queriesT).bindMemory(to: UInt32.self, capacity: (d + 1) / 2 * stride)
        var n = [Int16](repeating: 0, count: d + 1)
        for r in 0..<l {
            if r < rowCount {
                laneScale[r] = sparge_quantize(queries + r * d, d, d, nil, 127, &n) * arena.queryScale
            } else {
                laneScale[r] = 0
                for i in 0..<d { n[i] = 0 }
            }
            n[d] = 0
            for j in 0..<((d + 1) / 2) {
                packed[j * stride + r] = UInt32(UInt16(bitPattern: n[2 * j])) | UInt32(UInt16(bitPattern: n[2 * j + 1])) << 16
            }
        }
    }

    /// Like `finish(output:lse:)` for a tile whose accumulator lies in its own output rows: the `D·L`
    /// floats at the accumulator become the `rowCount × D` output rows (`temp` holds `D·L` floats).
    public func finishInPlace(lse: UnsafeMutablePointer<Float>, temp: UnsafeMutablePointer<Float>) {
        temp.update(from: outputT, count: arena.headDim * arena.lanes)
        finish(accumulator: temp, output: outputT, lse: lse)
    }

    /// Writes `O = acc / l` and the row log-sum-exp.
    ///
    /// Rows that saw no unmasked key get output 0 and `lse = -inf`.
    ///
    /// - Parameters:
    ///   - output: `rowCount × D` row-major.
    ///   - lse: `rowCount` values, `ln Σ_j exp(scale·q·k_j)` in natural-log units of the scaled scores.
    public func finish(output: UnsafeMutablePointer<Float>, lse: UnsafeMutablePointer<Float>) {
        finish(accumulator: outputT, output: output, lse: lse)
    }

    private func finish(accumulator outputT: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                        lse: UnsafeMutablePointer<Float>) {
        let d = arena.headDim, l = arena.lanes, rows = header[0]
        let ln2: Float = 0.693_147_180_559_945_3
        arena.kernels.finishRows(outputT, l, d, rows, runningSum, output)
        for r in 0..<rows {
            let sum = runningSum[r]
            lse[r] = sum > 0 ? (runningMax[r] + libmLog2(sum)) * ln2 : -.infinity
        }
    }
}
