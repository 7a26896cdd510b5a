import Dispatch
import Synchronization

/// Block-sparse attention of some query blocks, fed with key/value blocks over several calls.
///
/// It holds one `AttentionTile` per (query head, compute tile) of its query rows for its whole life, so the
/// online-softmax state carries over from one `attend` call to the next: a ring of ranks calls `attend`
/// once per step with the blocks that step brought, a single process once with every block. A tile visits,
/// in each call, the blocks of its mask row that the call's table holds, in ascending block order.
///
/// Edge cases: a partial last query block has fewer rows; a row that never sees a key gets output 0 and
/// `lse = -inf`; causal masking inside diagonal blocks is the tile's.
public final class BlockSparseAttention {
    /// The configuration (block sizes, compute tile, causal, λ, scale).
    public let config: SpargeConfig
    /// Tokens in the whole sequence.
    public let seqLen: Int
    /// Query heads.
    public let queryHeads: Int
    /// Key/value heads.
    public let kvHeads: Int
    /// Head dimension.
    public let headDim: Int
    /// Query rows held (the rows of `mask.queryBlocks`, in that order).
    public let rows: Int

    private let arena: AttentionTileArena
    /// Scratch for handles that touch only tile state (reset, finish); never computed with.
    private let stateScratch: AttentionScratch
    /// This process's query rows, packed into a worker's scratch each time a tile computes.
    private let queries: Tensor3
    /// Compute tiles per query block: the query slots a worker's scratch needs.
    private let tilesPerBlock: Int
    private let items: [WorkItem]
    private let maskRows: [[Int32]]  // per (head, mask row): computed key blocks, ascending
    private let maskRowCount: Int

    /// One query block of one head: its compute tiles are arena tiles `firstTile ..< firstTile + tiles`.
    struct WorkItem {
        let head: Int
        let maskRow: Int
        let blockStart: Int  // global index of the block's first token
        let blockRows: Int
        let firstTile: Int
        let tiles: Int
        let localRow: Int  // the block's first row among this process's rows
    }

    /// Prepares the tiles of `queries` (`[Hq, rows, D]`, the rows of `mask.queryBlocks` concatenated).
    ///
    /// - Parameters:
    ///   - queries: this process's query rows.
    ///   - mask: the rows of exactly those query blocks, for every query head.
    ///   - kvHeads: key/value heads (`Hq % kvHeads == 0`).
    ///   - config: `blockQ`, `blockK`, `computeTileQ` (divides `blockQ`), causal, λ, scale.
    ///   - seqLen: tokens in the whole sequence.
    ///   - threads: threads that pack the queries (default 1).
    public init(queries: Tensor3, mask: BlockMask, kvHeads: Int, config: SpargeConfig, seqLen: Int, threads: Int = 1) {
        precondition(config.blockQ % config.computeTileQ == 0, "computeTileQ must divide blockQ")
        precondition(mask.heads == queries.heads, "mask has \(mask.heads) heads, queries \(queries.heads)")
        precondition(kvHeads > 0 && queries.heads % kvHeads == 0, "Hq=\(queries.heads) not a multiple of Hkv=\(kvHeads)")
        self.config = config
        self.seqLen = seqLen
        self.queryHeads = queries.heads
        self.kvHeads = kvHeads
        self.headDim = queries.dim
        self.rows = queries.rows

        // Head-major, so that the workers share one head's K/V in the L3 instead of streaming every
        // head's; within a head the last blocks first: under causal they are the heaviest, and dynamic
        // claiming then evens out the end.
        let tq = config.computeTileQ
        var blocks = mask.queryBlockSpans(blockQ: config.blockQ, seqLen: seqLen)
        let spanned = blocks.reduce(0) { $0 + $1.rows }
        precondition(spanned == queries.rows, "queries hold \(queries.rows) rows, the mask's blocks \(spanned)")
        blocks.sort { $0.start > $1.start }
        var items: [WorkItem] = []
        var tileCount = 0
        for h in 0..<queries.heads {
            for b in blocks {
                let tiles = (b.rows + tq - 1) / tq
                items.append(WorkItem(head: h, maskRow: b.row, blockStart: b.start, blockRows: b.rows,
                                      firstTile: tileCount, tiles: tiles, localRow: b.localRow))
                tileCount += tiles
            }
        }
        self.items = items
        maskRowCount = mask.rowCount
        maskRows = (0..<mask.heads).flatMap { h in
            (0..<mask.rowCount).map { r in mask.keyBlockList(head: h, row: r).map { Int32($0) } }
        }
        // Tiles keep only their online-softmax state (33 KB at D = 128, against 81 KB with their packed
        // queries and score block): they live for the whole ring, while queries are packed into a worker's
        // scratch each time a tile computes — once per ring step, ~1/256 of the work of one key block.
        arena = AttentionTileArena(tiles: tileCount, headDim: queries.dim, config: config, holdsScratch: false)
        stateScratch = AttentionScratch(for: arena, slots: 1)
        self.queries = queries
        tilesPerBlock = (config.blockQ + tq - 1) / tq
        forEachItem(threads: threads) { item in
            for t in 0..<item.tiles {
                arena.tile(item.firstTile + t, scratch: stateScratch, slot: 0)
                    .reset(rowCount: min(tq, item.blockRows - t * tq), queryStart: item.blockStart + t * tq)
            }
        }
    }

    /// Visits, for every tile, the blocks of its mask row that `table` holds.
    ///
    /// Each key block is visited by all compute tiles of a query block in turn, so it is read from the
    /// cache once per query block; the next scattered block is touched ahead (see `AttentionTile.prefetch`).
    ///
    /// - Parameters:
    ///   - table: the key/value blocks available in this call.
    ///   - threads: worker threads; the calling thread is one of them.
    ///   - poll: called on the calling thread between its work items and while it waits for the other
    ///     workers, with the share of work items claimed so far (a ring progresses its messages and reports
    ///     progress there); nil when there is nothing to do.
    public func attend(_ table: KeyValueBlockTable, threads: Int, poll: ((Double) -> Void)? = nil) {
        precondition(table.kvHeads == kvHeads && threads >= 1, "attend: table or thread count does not fit")
        queries.data.withUnsafeBufferPointer { q in
            let job = AttendJob(attention: self, table: table, queries: q.baseAddress!)
            let workers = DispatchGroup()
            for _ in 1..<max(1, threads) {
                DispatchQueue.global().async(group: workers) { job.work(poll: nil) }
            }
            job.work(poll: poll)
            if let poll {
                while workers.wait(timeout: .now() + .microseconds(200)) == .timedOut { poll(1) }
            } else {
                workers.wait()
            }
        }
    }

    /// One `attend` call: the work items are claimed from a shared counter by every worker.
    private final class AttendJob: @unchecked Sendable {
        let attention: BlockSparseAttention
        let table: KeyValueBlockTable
        let queries: UnsafePointer<Float>
        let next = WorkCounter()

        init(attention: BlockSparseAttention, table: KeyValueBlockTable, queries: UnsafePointer<Float>) {
            self.attention = attention
            self.table = table
            self.queries = queries
        }

        /// Claims and runs work items until none is left, calling `poll` after each.
        func work(poll: ((Double) -> Void)?) {
            let a = attention
            let scratch = AttentionScratch(for: a.arena, slots: a.tilesPerBlock)
            let group = a.queryHeads / a.kvHeads
            let tq = a.config.computeTileQ, bk = a.config.blockK, causal = a.config.causal, d = a.headDim
            while true {
                let i = next.claim()
                if i >= a.items.count { break }
                let item = a.items[i]
                defer { poll?(Double(i + 1) / Double(a.items.count)) }
                let g = item.head / group
                let blockEnd = item.blockStart + item.blockRows
                let row = a.maskRows[item.head * a.maskRowCount + item.maskRow]
                // m walks the row's blocks that this call holds; n is the one after m
                var m = 0
                while m < row.count, table.block(kvHead: g, block: Int(row[m])) == nil { m += 1 }
                guard m < row.count, !(causal && Int(row[m]) * bk >= blockEnd) else { continue }
                for t in 0..<item.tiles {
                    a.arena.tile(item.firstTile + t, scratch: scratch, slot: t)
                        .load(queries: queries + (item.head * a.rows + item.localRow + t * tq) * d)
                }
                while m < row.count {
                    let j = Int(row[m])
                    let keyStart = j * bk
                    if causal && keyStart >= blockEnd { break }
                    let kv = table.block(kvHead: g, block: j)!
                    var n = m + 1
                    while n < row.count, table.block(kvHead: g, block: Int(row[n])) == nil { n += 1 }
                    if n < row.count {
                        // Warm a scattered next block while this one computes (the hardware prefetcher
                        // follows adjacent blocks by itself).
                        let jn = Int(row[n])
                        if jn > j + 1 && !(causal && jn * bk >= blockEnd), let ahead = table.block(kvHead: g, block: jn) {
                            a.arena.tile(item.firstTile, scratch: scratch, slot: 0)
                                .prefetch(keys: ahead.keys, values: ahead.values, keyCount: table.rows(of: jn))
                        }
                    }
                    for t in 0..<item.tiles {
                        // Causal: a tile whose last row precedes this key block does not visit it.
                        if causal && keyStart > min(item.blockStart + (t + 1) * tq, blockEnd) - 1 { continue }
                        a.arena.tile(item.firstTile + t, scratch: scratch, slot: t)
                            .visit(keys: kv.keys, values: kv.values, keyCount: table.rows(of: j), keyStart: keyStart)
                    }
                    m = n
                }
            }
        }
    }

    /// Counters of every `attend` so far (each tile keeps its own).
    public var attendStatistics: AttentionStatistics {
        (0..<arena.count).reduce(AttentionStatistics()) { $0 + arena.statistics(ofTile: $1) }
    }

    /// The output `[Hq, rows, D]` and row log-sum-exp `[Hq][rows]` (natural log of the scaled scores).
    public func finish(threads: Int = 1) -> (output: Tensor3, lse: [Float]) {
        var lse = [Float](repeating: -.infinity, count: queryHeads * rows)
        let tq = config.computeTileQ
        // Every row belongs to one tile and its finish writes all of it, so the output is not zero-filled
        // first: its pages are then first touched by the worker threads, not cleared on this one.
        let count = queryHeads * rows * headDim
        let data = [Float](unsafeUninitializedCapacity: count) { o, initialized in
            lse.withUnsafeMutableBufferPointer { l in
                let (out, rowLSE) = (o.baseAddress!, l.baseAddress!)
                forEachItem(threads: threads) { item in
                    for t in 0..<item.tiles {
                        let row = item.head * rows + item.localRow + t * tq
                        arena.tile(item.firstTile + t, scratch: stateScratch, slot: 0)
                            .finish(output: out + row * headDim, lse: rowLSE + row)
                    }
                }
            }
            initialized = count
        }
        return (Tensor3(heads: queryHeads, rows: rows, dim: headDim, data: data), lse)
    }
}

extension BlockSparseAttention {
    /// Runs `body` for every work item, spread over `threads` threads (packing and unpacking tiles touches
    /// fresh memory, which is worth sharing out).
    fileprivate func forEachItem(threads: Int, _ body: (WorkItem) -> Void) {
        let next = WorkCounter()
        DispatchQueue.concurrentPerform(iterations: max(1, threads)) { _ in
            while true {
                let i = next.claim()
                if i >= items.count { break }
                body(items[i])
            }
        }
    }
}

/// A shared counter from which workers claim work items (an `Atomic` in a class, so closures can share it).
final class WorkCounter: @unchecked Sendable {
    private let value = Atomic<Int>(0)

    /// The next unclaimed index.
    @inline(__always) func claim() -> Int { value.wrappingAdd(1, ordering: .relaxed).oldValue }
}
