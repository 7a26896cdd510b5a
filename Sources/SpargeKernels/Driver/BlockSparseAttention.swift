import CSpargeKernels
import Dispatch

/// Block-sparse attention of some query blocks, fed with key/value blocks over several calls: the one CPU
/// driver of an `AttentionPlan`.
///
/// It holds one tile per compute tile of the plan for its whole life, so the online-softmax state carries
/// over from one `attend` call to the next: a ring of ranks calls `attend` once per step with the blocks
/// that step brought, a single process once with every block. A tile visits, in each call, the blocks of
/// its visit list that the call's table holds, in ascending block order.
///
/// Blocks stored as bf16 or f16 are widened to fp32 once per (query block, key block) in a worker's
/// scratch, and every tile of the query block computes on that copy (a tile that groups several blocks into
/// one visit, the scalar twin of bf16 tiles, copies them one after the other). In a precision other than fp32 the
/// queries are rounded once, and key/value blocks not already stored in the precision's type are rounded in
/// that copy. In int8 (and in bf16 on bf16 products) the vector tiles convert their queries as they load them and
/// take every block of an `attend` call converted once, by the first worker that needs it (`PackedBlockTable`).
///
/// Edge cases: a partial last query block has fewer rows; a row that never sees a key gets output 0 and
/// `lse = -inf`; causal masking inside diagonal blocks is the tile's.
public final class BlockSparseAttention {
    /// The work: tiles, visit lists, order.
    public let plan: AttentionPlan
    /// Head dimension.
    public let headDim: Int
    /// The configuration (block sizes, compute tile, causal, λ, scale).
    public var config: SpargeConfig { plan.config }
    /// Query rows held (the rows of `plan.mask.queryBlocks`, in that order).
    public var rows: Int { plan.rows }

    private let bank: any TileBank
    /// What Q, K, V are rounded to before the products.
    private let precision: AttentionPrecision
    /// This process's query rows, packed into a worker's scratch each time a tile computes.
    private let queries: Tensor3
    /// The output `[Hq, rows, D]`, allocated once and never zero-filled by the host: until `finish` the
    /// vector tiles keep their accumulators in their own rows of it (no tile state beyond the output).
    private var output: [Float]
    /// Whether every tile's state has been started in `output` (`resetTiles`: by the first call unless it
    /// holds every block, which ends every tile itself and sets `finishedLSE`).
    private var tilesReset = false
    /// The LSE, where one call held every block and its tiles wrote their rows as they ended (`finish`
    /// then only hands them over).
    private var finishedLSE: [Float]?

    /// Whether a first `attend` call that holds every block of every list (one rank's) runs each tile from
    /// start to end in a worker's slot (`TileBank.begin`/`end`): without it the tiles' accumulators are
    /// zeroed in the output, copied in and out of the slot, and finished in a pass of their own. For
    /// measurement and tests; the results are the same bits.
    nonisolated(unsafe) public static var finishesWholeCalls = true

    /// Prepares the tiles of `queries` (`[Hq, rows, D]`, the rows of `mask.queryBlocks` concatenated).
    ///
    /// - Parameters:
    ///   - queries: this process's query rows.
    ///   - mask: the rows of exactly those query blocks, for every query head.
    ///   - kvHeads: key/value heads (`Hq % kvHeads == 0`).
    ///   - config: `blockQ`, `blockK`, `computeTileQ` (divides `blockQ`), causal, λ, scale.
    ///   - seqLen: tokens in the whole sequence.
    ///   - threads: threads that prepare the tiles (default 1).
    ///   - backend: `.vector` (default: the best kernels of this CPU), one kernel set, or the scalar twin (the
    ///     reference in tests).
    ///   - precision: what Q, K, V are rounded to (default fp32: not at all); the products are fp32.
    /// - Throws: `SpargeError.invalidArgument` when the shapes do not fit together.
    public convenience init(queries: Tensor3, mask: BlockMask, kvHeads: Int, config: SpargeConfig, seqLen: Int,
                            threads: Int = 1, backend: AttentionBackend = .vector,
                            precision: AttentionPrecision = .fp32) throws {
        let plan = try AttentionPlan(mask: mask, queryHeads: queries.heads, queryRows: queries.rows, kvHeads: kvHeads,
                                     config: config, seqLen: seqLen)
        let bank: any TileBank
        switch backend {
        case .vector: bank = VectorTileBank(plan: plan, headDim: queries.dim, isa: .detected, precision: precision)
        case .isa(let isa):
            guard isa.isSupported else {
                throw SpargeError.invalidArgument("this CPU cannot run the \(isa.rawValue) kernels (it has \(CPUISA.detected.rawValue))")
            }
            bank = VectorTileBank(plan: plan, headDim: queries.dim, isa: isa, precision: precision)
        case .scalar: bank = ScalarTileBank(plan: plan, headDim: queries.dim, precision: precision)
        case .scalarTwin(let isa):
            bank = ScalarTileBank(plan: plan, headDim: queries.dim, precision: precision,
                                  products: TileProducts.chosen(precision: precision, isa: isa, headDim: queries.dim))
        }
        self.init(queries: queries, plan: plan, bank: bank, threads: threads, precision: precision)
    }

    /// The driver in `AttentionPrecision.bf16` on vector tiles whose bf16 tile kernels are `bf16Kernels` (D a
    /// multiple of 32): tests drive it with `sparge_bf16_emulated()`, the AMX kernels' loops without AMX.
    convenience init(queries: Tensor3, mask: BlockMask, kvHeads: Int, config: SpargeConfig, seqLen: Int, threads: Int,
                     bf16Kernels: sparge_bf16_tile_kernels) throws {
        let plan = try AttentionPlan(mask: mask, queryHeads: queries.heads, queryRows: queries.rows, kvHeads: kvHeads,
                                     config: config, seqLen: seqLen)
        let bank = VectorTileBank(plan: plan, headDim: queries.dim, isa: .portable, precision: .bf16,
                                  bf16Kernels: bf16Kernels)
        self.init(queries: queries, plan: plan, bank: bank, threads: threads, precision: .bf16)
    }

    /// For measurement only: the driver in `AttentionPrecision.bf16` on bf16 tiles whose kernels are a
    /// stand-in (`sparge bench-kernel` with SPARGE_BF16_TILES), on any CPU with AVX2. `bookkeeping` computes
    /// nothing, so the pass costs what the driver costs around the kernels; its output is meaningless.
    package convenience init(queries: Tensor3, mask: BlockMask, kvHeads: Int, config: SpargeConfig, seqLen: Int,
                             threads: Int, bf16StandIn: Bf16TileStandIn) throws {
        guard CPUISA.avx2.isSupported, queries.dim % 32 == 0 else {
            throw SpargeError.invalidArgument("bf16 tile stand-ins need AVX2 (this CPU has \(CPUISA.detected.rawValue)) "
                + "and D a multiple of 32 (D = \(queries.dim))")
        }
        try self.init(queries: queries, mask: mask, kvHeads: kvHeads, config: config, seqLen: seqLen, threads: threads,
                      bf16Kernels: bf16StandIn.kernels)
    }

    private init(queries: Tensor3, plan: AttentionPlan, bank: any TileBank, threads: Int, precision: AttentionPrecision) {
        (self.plan, self.bank, headDim) = (plan, bank, queries.dim)
        // int8 and bf16 tiles round their queries as they pack them (bf16: the same rounding), so only fp32
        // products on a 16-bit precision need a rounded copy; it is made by every thread (one thread took
        // 0.18 s of a 32K pass, as long as the whole sparse pass's tiles at density 0.1).
        var rounded = queries
        if precision != .fp32 && bank.products == .fp32 {
            let (tiles, dim) = (plan.tiles, queries.dim)
            rounded.data.withUnsafeMutableBufferPointer { q in
                let base = q.baseAddress!
                let next = WorkCounter()
                DispatchQueue.concurrentPerform(iterations: max(1, min(threads, tiles.count))) { _ in
                    while true {
                        let t = next.claim()
                        if t >= tiles.count { break }
                        precision.roundQueries(base + plan.firstRow(ofTile: t) * dim,
                                               rows: tiles[t].rowCount, dim: dim)
                    }
                }
            }
        }
        self.queries = rounded
        self.precision = precision
        let count = queries.heads * queries.rows * queries.dim
        output = [Float](unsafeUninitializedCapacity: count) { _, initialized in initialized = count }
    }

    /// Starts every tile's state in `output` (the accumulators zeroed in their rows).
    private func resetTiles(threads: Int) {
        let (plan, bank) = (plan, bank)
        output.withUnsafeMutableBufferPointer { out in
            let base = out.baseAddress ?? UnsafeMutablePointer(bitPattern: 64)!
            Self.forEachBlock(of: plan, bank: bank, threads: threads) { block, _ in
                for t in block.tileRange { bank.reset(tile: t, output: base) }
            }
        }
        tilesReset = true
    }

    /// Visits, for every tile, the blocks of its visit list that `table` holds.
    ///
    /// Each key block is visited by all compute tiles of a query block in turn, so it is read from the
    /// cache once per query block; the next block is asked for while it computes (`UpcomingBlock`).
    ///
    /// - Parameters:
    ///   - table: the key/value blocks available in this call.
    ///   - threads: worker threads; the calling thread is one of them.
    ///   - poll: called on the calling thread between its work items and while it waits for the other
    ///     workers, with the share of work items claimed so far (a ring progresses its messages and reports
    ///     progress there); nil when there is nothing to do.
    public func attend(_ table: KeyValueBlockTable, threads: Int, poll: ((Double) -> Void)? = nil) {
        precondition(table.kvHeads == plan.kvHeads && threads >= 1, "attend: table or thread count does not fit")
        // After a call that held every block (and ended every tile), a later call holds nothing new: a ring
        // step of one rank's, or an empty table.
        guard !plan.blocks.isEmpty, finishedLSE == nil else { poll?(1); return }
        // (A first call is one before which no tile's state was started: `finishedLSE` is nil here.)
        let whole = !tilesReset && Self.finishesWholeCalls && table.holdsEveryBlock
        if !whole && !tilesReset { resetTiles(threads: threads) }
        let (plan, bank, headDim, precision) = (plan, bank, headDim, precision)
        PhaseTrace.mark("attend-start")
        let packed = Self.packedBlocks(table, products: bank.products, headDim: headDim)
        PhaseTrace.mark("block-table")
        var lse = whole ? [Float](repeating: -.infinity, count: plan.queryHeads * plan.rows) : []
        queries.data.withUnsafeBufferPointer { q in
          output.withUnsafeMutableBufferPointer { out in
            plan.mask.keys.withUnsafeBufferPointer { keys in
              lse.withUnsafeMutableBufferPointer { rowLSE in
                let job = AttendJob(plan: plan, bank: bank, table: table, queries: q.baseAddress!, output: out.baseAddress!,
                                    keys: keys.baseAddress ?? UnsafePointer(bitPattern: 8)!, headDim: headDim,
                                    precision: precision, packed: packed, lse: whole ? rowLSE.baseAddress : nil)
                let workers = DispatchGroup()
                for _ in 1..<max(1, threads) {
                    DispatchQueue.global().async(group: workers) { job.work(poll: nil) }
                }
                job.work(poll: poll)
                PhaseTrace.mark("calling-worker")
                if let poll {
                    while workers.wait(timeout: .now() + .microseconds(200)) == .timedOut { poll(1) }
                } else {
                    workers.wait()
                }
              }
            }
          }
        }
        PhaseTrace.mark("other-workers")
        if whole { finishedLSE = lse }
    }

    /// A table that converts each block of `table` once, as the workers first need it, for tiles whose
    /// products take blocks so (nil for fp32 products).
    static func packedBlocks(_ table: KeyValueBlockTable, products: TileProducts, headDim: Int) -> PackedBlockTable? {
        switch products {
        case .fp32: nil
        case .int8: PackedBlockTable(table, as: QuantizedKeyValueBlock.self, headDim: headDim)
        case .bf16Tiles: PackedBlockTable(table, as: Bf16KeyValueBlock.self, headDim: headDim)
        }
    }

    /// Counters of every `attend` so far (each tile keeps its own).
    public var attendStatistics: AttentionStatistics {
        plan.tiles.indices.reduce(AttentionStatistics()) { $0 + bank.statistics(tile: $1) }
    }

    /// The output `[Hq, rows, D]` and row log-sum-exp `[Hq][rows]` (natural log of the scaled scores).
    ///
    /// Call it once, after the last `attend`: the output is handed over, not copied (the tiles' state
    /// was kept in it), and the attention holds no output afterwards.
    public func finish(threads: Int = 1) -> (output: Tensor3, lse: [Float]) {
        let (rows, d, heads) = (plan.rows, headDim, plan.queryHeads)
        if let finishedLSE {
            // One call ended every tile (its rows written as it ended).
            let data = output
            output = []
            return (Tensor3(heads: heads, rows: rows, dim: d, data: data), finishedLSE)
        }
        var lse = [Float](repeating: -.infinity, count: heads * rows)
        let (plan, bank) = (plan, bank)
        if !plan.blocks.isEmpty {
            if !tilesReset { resetTiles(threads: threads) }  // no call came: every tile finishes empty
            output.withUnsafeMutableBufferPointer { o in
                lse.withUnsafeMutableBufferPointer { l in
                    let (out, rowLSE) = (o.baseAddress!, l.baseAddress!)
                    Self.forEachBlock(of: plan, bank: bank, threads: threads) { block, worker in
                        for t in block.tileRange {
                            bank.finish(tile: t, worker: worker, output: out, lse: rowLSE + plan.firstRow(ofTile: t))
                        }
                    }
                }
            }
        }
        let data = output
        output = []
        return (Tensor3(heads: heads, rows: rows, dim: d, data: data), lse)
    }

    /// Runs `body` for every block of `plan`, spread over `threads` threads, each with its own worker
    /// scratch (packing and unpacking tiles touches fresh memory, which is worth sharing out).
    static func forEachBlock(of plan: AttentionPlan, bank: any TileBank, threads: Int,
                             _ body: (AttentionPlan.Block, AnyObject?) -> Void) {
        let next = WorkCounter()
        DispatchQueue.concurrentPerform(iterations: max(1, threads)) { _ in
            let worker = bank.makeWorker(slots: 1)
            while true {
                let i = next.claim()
                if i >= plan.blocks.count { break }
                body(plan.blocks[i], worker)
            }
        }
    }
}

/// Stand-ins for the AMX bf16 tile kernels that run on any CPU with AVX2, for measuring the driver
/// (`BlockSparseAttention.init(queries:mask:kvHeads:config:seqLen:threads:bf16StandIn:)`).
package enum Bf16TileStandIn: String, CaseIterable, Sendable {
    /// The AMX kernels' source with the tile instructions emulated in C: their results, far more slowly.
    case emulated
    /// No products, only a valid online-softmax state (`sparge_bf16_bookkeeping`).
    case bookkeeping

    var kernels: sparge_bf16_tile_kernels {
        switch self {
        case .emulated:
            #if arch(x86_64)
            sparge_bf16_emulated()
            #else
            preconditionFailure("Bf16TileStandIn: emulated tiles need x86-64")
            #endif
        case .bookkeeping: sparge_bf16_bookkeeping()
        }
    }
}

/// One `attend` call: the plan's blocks are claimed from a shared counter by every worker.
private final class AttendJob: @unchecked Sendable {
    let plan: AttentionPlan
    let bank: any TileBank
    let table: KeyValueBlockTable
    let queries: UnsafePointer<Float>
    let output: UnsafeMutablePointer<Float>
    let keys: UnsafePointer<Int32>
    let headDim: Int
    /// The precision, when key/value blocks need rounding in the worker's copy.
    let rounding: AttentionPrecision?
    /// The call's blocks, converted for the tiles' products (int8, bf16 tiles) as first needed, when they take
    /// them so.
    let packed: PackedBlockTable?
    /// Where a call that holds every block has its tiles write their LSE as they end (`TileBank.end`); nil:
    /// the tiles keep their state in the output for the next call and `finish`.
    let lse: UnsafeMutablePointer<Float>?
    let next = WorkCounter()

    init(plan: AttentionPlan, bank: any TileBank, table: KeyValueBlockTable, queries: UnsafePointer<Float>,
         output: UnsafeMutablePointer<Float>, keys: UnsafePointer<Int32>, headDim: Int, precision: AttentionPrecision,
         packed: PackedBlockTable?, lse: UnsafeMutablePointer<Float>?) {
        (self.plan, self.bank, self.table, self.queries, self.output, self.keys, self.headDim) =
            (plan, bank, table, queries, output, keys, headDim)
        // Blocks already stored in the precision's type need no rounding.
        rounding = precision == .fp32 || precision.inputFormat == table.format || packed != nil ? nil : precision
        (self.packed, self.lse) = (packed, lse)
    }

    /// Claims and runs blocks until none is left, calling `poll` after each.
    func work(poll: ((Double) -> Void)?) {
        defer { bank.workerDone() }
        let worker = bank.makeWorker(slots: (plan.config.blockQ + plan.config.computeTileQ - 1) / plan.config.computeTileQ)
        let rowsNeedCopy = !((table.format == .f32 && rounding == nil) || packed != nil)
        let widened = rowsNeedCopy || (packed == nil && bank.visitBlocks > 1)
            ? WidenedBlock(blockK: plan.config.blockK * bank.visitBlocks, headDim: headDim) : nil
        let visit = VisitGroup(capacity: bank.visitBlocks)
        let group = plan.queryHeads / plan.kvHeads
        // Locals: what the loops read is counted once here, not at every visit by every worker.
        let (d, blocks, plan) = (headDim, plan.blocks, plan)
        while true {
            let i = next.claim()
            if i >= blocks.count { break }
            let block = blocks[i]
            defer { poll?(Double(i + 1) / Double(blocks.count)) }
            let g = block.head / group
            let first = heldVisit(from: block.visits.lowerBound, of: block, kvHead: g)
            // (A call that ends its tiles ends those without a block too: their rows get zeros and −∞.)
            guard first < block.visits.upperBound || lse != nil else { continue }
            widened?.holding = nil
            for (slot, t) in block.tileRange.enumerated() {
                let rowsOfTile = queries + plan.firstRow(ofTile: t) * d
                if lse != nil {
                    bank.begin(tile: t, slot: slot, worker: worker, queries: rowsOfTile)
                } else {
                    bank.load(tile: t, slot: slot, worker: worker, output: output, queries: rowsOfTile)
                }
            }
            // Each visit takes up to `visitBlocks` held blocks of the list; the next one's are found once, while
            // this one is visited, and asked for meanwhile.
            visit.count = 0
            var after = first
            if first < block.visits.upperBound {
                after = collectVisit(from: first, of: block, kvHead: g, into: visit.positions, count: &visit.count)
            }
            while visit.count > 0 {
                visit.nextCount = 0
                if after < block.visits.upperBound {
                    after = collectVisit(from: after, of: block, kvHead: g, into: visit.nextPositions,
                                         count: &visit.nextCount)
                }
                // What the first tile asks for meanwhile: the next visit's blocks that are converted (packed), or
                // its first block.
                var upcoming: UpcomingBlock?
                visit.aheadCount = 0
                if packed != nil {
                    // Converted now where no worker has started on them, so that the next visit seldom waits;
                    // those another worker is converting are not asked for.
                    for k in 0..<visit.nextCount {
                        if let ready = packed!.blockFilledAhead(kvHead: g, block: Int(keys[visit.nextPositions[k]])) {
                            visit.ahead[visit.aheadCount] = ready
                            visit.aheadCount += 1
                        }
                    }
                } else if visit.nextCount > 0 {
                    let j = Int(keys[visit.nextPositions[0]]), next = table.block(kvHead: g, block: j)!
                    upcoming = UpcomingBlock(keys: next.keys, values: next.values,
                                             bytes: table.rows(of: j) * d * table.format.byteSize)
                }
                // The first tile that visits anything asks (under causal a tile's list may end before the visit).
                var asked = false
                for (slot, t) in block.tileRange.enumerated() {
                    asked = visitTile(t, slot: slot, worker: worker, kvHead: g, visit: visit, widened: widened,
                                      asks: !asked, upcoming: upcoming) || asked
                }
                visit.advance()
            }
            for (slot, t) in block.tileRange.enumerated() {
                if let lse {
                    bank.end(tile: t, slot: slot, worker: worker, output: output, lse: lse + plan.firstRow(ofTile: t))
                } else {
                    bank.unload(tile: t, slot: slot, worker: worker, output: output)
                }
            }
        }
    }

    /// The first position from `start` on in `block`'s visits whose key block this call holds (or the end).
    @inline(__always)
    func heldVisit(from start: Int, of block: AttentionPlan.Block, kvHead g: Int) -> Int {
        var n = start
        while n < block.visits.upperBound, table.block(kvHead: g, block: Int(keys[n])) == nil { n += 1 }
        return n
    }

    /// Up to `visitBlocks` list positions from `start` (held by this call) on whose key blocks the call holds, into
    /// `positions` (their number into `count`); returns the first held position after them (or the end).
    @inline(__always)
    func collectVisit(from start: Int, of block: AttentionPlan.Block, kvHead g: Int,
                      into positions: UnsafeMutablePointer<Int>, count: inout Int) -> Int {
        count = 0
        var n = start
        repeat {
            positions[count] = n
            count += 1
            n = heldVisit(from: n + 1, of: block, kvHead: g)
        } while count < bank.visitBlocks && n < block.visits.upperBound
        return n
    }

    /// Tile `t` visits the blocks of `visit` in its own list (a prefix of its query block's: past it, a block
    /// is above the tile's diagonal): those it sees whole — every key at or before its first row, and a full
    /// block — in one visit, then each other one alone. With one block a visit, each alone in list order.
    /// Returns whether it visited any.
    @inline(__always) @discardableResult
    func visitTile(_ t: Int, slot: Int, worker: AnyObject?, kvHead g: Int, visit: VisitGroup, widened: WidenedBlock?,
                   asks: Bool, upcoming: UpcomingBlock?) -> Bool {
        let tile = plan.tiles[t], bk = plan.config.blockK, causal = plan.config.causal
        var asks = asks
        visit.grouped = 0
        visit.single = 0
        for k in 0..<visit.count where visit.positions[k] < tile.visits.upperBound {
            let j = Int(keys[visit.positions[k]])
            let whole = table.rows(of: j) == bk && (!causal || j * bk + bk - 1 <= tile.queryStart)
            if visit.capacity > 1 && whole {
                visit.groupedBlocks[visit.grouped] = j
                visit.grouped += 1
            } else {
                visit.singleBlocks[visit.single] = j
                visit.single += 1
            }
        }
        if visit.grouped > 0 {
            visitBlocks(visit.groupedBlocks, count: visit.grouped, tile: t, slot: slot, worker: worker, kvHead: g,
                        visit: visit, widened: widened, asks: asks, upcoming: upcoming)
            asks = false
        }
        for k in 0..<visit.single {
            visitBlocks(visit.singleBlocks + k, count: 1, tile: t, slot: slot, worker: worker, kvHead: g, visit: visit,
                        widened: widened, asks: asks, upcoming: upcoming)
            asks = false
        }
        return visit.grouped + visit.single > 0
    }

    /// One visit of `count` key blocks `blocks[0..<count]` (ascending) by tile `t`: packed operands where the
    /// call has them, else rows (copied one block after the other into `widened` where they need widening,
    /// rounding or, for several, to be contiguous). With `asks`, it asks for the next visit's blocks
    /// (`visit.ahead`, packed) or `upcoming` (rows) meanwhile.
    @inline(__always)
    func visitBlocks(_ blocks: UnsafeMutablePointer<Int>, count: Int, tile t: Int, slot: Int, worker: AnyObject?,
                     kvHead g: Int, visit: VisitGroup, widened: WidenedBlock?, asks: Bool, upcoming: UpcomingBlock?) {
        let bk = plan.config.blockK
        // (`packed!`, not `if let`: a binding counted a reference to the table at every visit, shared by every
        // worker.)
        if packed != nil {
            for k in 0..<count { visit.operands[k] = packed!.filledBlock(kvHead: g, block: blocks[k])! }
            bank.visit(tile: t, slot: slot, worker: worker, output: output,
                       packed: UnsafeBufferPointer(start: visit.operands, count: count), keyStart: blocks[0] * bk,
                       ahead: UnsafeBufferPointer(start: visit.ahead, count: asks ? visit.aheadCount : 0))
            return
        }
        precondition(count == 1 || widened != nil, "BlockSparseAttention: grouped rows need a copy to lie in")
        var keyCount = 0
        var kv = (keys: UnsafePointer<Float>(bitPattern: 8)!, values: UnsafePointer<Float>(bitPattern: 8)!)
        for k in 0..<count {
            let j = blocks[k], stored = table.block(kvHead: g, block: j)!, rows = table.rows(of: j)
            var at = (keys: UnsafePointer(stored.keys.assumingMemoryBound(to: Float.self)),
                      values: UnsafePointer(stored.values.assumingMemoryBound(to: Float.self)))
            if let widened {
                // A block visited alone by the query block's next tile is still in the copy: filled once.
                let holds = count == 1 && (widened.holding.map { $0 == (g, j) } ?? false)
                at = holds ? widened.start
                    : widened.fill(stored, rows: rows, format: table.format, rounding: rounding, offset: keyCount)
                widened.holding = count == 1 ? (g, j) : nil
            }
            if k == 0 { kv = at }
            keyCount += rows
        }
        bank.visit(tile: t, slot: slot, worker: worker, output: output, keys: kv.keys, values: kv.values,
                   keyCount: keyCount, keyStart: blocks[0] * bk, blocks: count, upcoming: asks ? upcoming : nil)
    }
}

/// A worker's scratch for one visit: the list positions of the blocks it takes and of the next visit's, per
/// tile those it groups and those it visits alone, their packed operands, and the next visit's (asked for
/// meanwhile).
private final class VisitGroup {
    let capacity: Int
    var count = 0, nextCount = 0, grouped = 0, single = 0, aheadCount = 0
    private let storage: UnsafeMutablePointer<Int>
    private(set) var positions: UnsafeMutablePointer<Int>
    private(set) var nextPositions: UnsafeMutablePointer<Int>
    let groupedBlocks: UnsafeMutablePointer<Int>
    let singleBlocks: UnsafeMutablePointer<Int>
    let operands: UnsafeMutablePointer<Unmanaged<AnyObject>>
    let ahead: UnsafeMutablePointer<Unmanaged<AnyObject>>

    init(capacity: Int) {
        self.capacity = capacity
        storage = .allocate(capacity: 4 * capacity)
        positions = storage
        nextPositions = storage + capacity
        groupedBlocks = storage + 2 * capacity
        singleBlocks = storage + 3 * capacity
        operands = .allocate(capacity: 2 * capacity)
        ahead = operands + capacity
    }

    /// The next visit becomes this one.
    func advance() {
        swap(&positions, &nextPositions)
        count = nextCount
    }

    deinit {
        storage.deallocate()
        operands.deallocate()
    }
}

/// A worker's fp32 copy of the key/value blocks of one visit (stored in 16 bits, rounded, or several made
/// contiguous).
private final class WidenedBlock {
    let headDim: Int
    let keys: UnsafeMutablePointer<Float>
    let values: UnsafeMutablePointer<Float>

    init(blockK: Int, headDim: Int) {
        self.headDim = headDim
        let raw = UnsafeMutableRawPointer.allocate(byteCount: 2 * blockK * headDim * 4, alignment: 64)
        keys = raw.bindMemory(to: Float.self, capacity: 2 * blockK * headDim)
        values = keys + blockK * headDim
    }

    deinit { UnsafeMutableRawPointer(keys).deallocate() }

    /// The (kv head, block) the copy holds alone from row 0, if any (set by the driver).
    var holding: (Int, Int)?

    /// Where the copy's rows start.
    var start: (keys: UnsafePointer<Float>, values: UnsafePointer<Float>) { (UnsafePointer(keys), UnsafePointer(values)) }

    /// Widens `rows` rows of a stored block into this copy (exact) from its row `offset` on, rounds them as
    /// `rounding` does if given, and returns where they are.
    func fill(_ stored: (keys: UnsafeRawPointer, values: UnsafeRawPointer), rows: Int, format: StorageFormat,
              rounding: AttentionPrecision?, offset: Int = 0) -> (keys: UnsafePointer<Float>, values: UnsafePointer<Float>) {
        let (k, v) = (keys + offset * headDim, values + offset * headDim)
        format.widen(stored.keys, count: rows * headDim, to: k)
        format.widen(stored.values, count: rows * headDim, to: v)
        rounding?.roundBlock(keys: k, values: v, rows: rows, dim: headDim)
        return (UnsafePointer(k), UnsafePointer(v))
    }
}
