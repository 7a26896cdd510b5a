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
    private let items: [WorkItem]
    private let maskRows: [[Int32]]  // per (head, mask row): computed key blocks, ascending
    private var statistics = AttentionStatistics()

    /// One compute tile: head, first local row, rows, mask row, global index of its first token.
    struct WorkItem {
        let head: Int
        let localRow: Int
        let rowCount: Int
        let maskRow: Int
        let queryStart: Int
    }

    /// Prepares the tiles of `queries` (`[Hq, rows, D]`, the rows of `mask.queryBlocks` concatenated).
    ///
    /// - Parameters:
    ///   - queries: this process's query rows.
    ///   - mask: the rows of exactly those query blocks, for every query head.
    ///   - kvHeads: key/value heads (`Hq % kvHeads == 0`).
    ///   - config: `blockQ`, `blockK`, `computeTileQ` (divides `blockQ`), causal, λ, scale.
    ///   - seqLen: tokens in the whole sequence.
    public init(queries: Tensor3, mask: BlockMask, kvHeads: Int, config: SpargeConfig, seqLen: Int) {
        precondition(config.blockQ % config.computeTileQ == 0, "computeTileQ must divide blockQ")
        precondition(mask.heads == queries.heads, "mask has \(mask.heads) heads, queries \(queries.heads)")
        precondition(kvHeads > 0 && queries.heads % kvHeads == 0, "Hq=\(queries.heads) not a multiple of Hkv=\(kvHeads)")
        self.config = config
        self.seqLen = seqLen
        self.queryHeads = queries.heads
        self.kvHeads = kvHeads
        self.headDim = queries.dim
        self.rows = queries.rows

        var tiles: [WorkItem] = []
        var localRow = 0
        for (row, block) in mask.queryBlocks.enumerated() {
            let blockRows = min(config.blockQ, seqLen - block * config.blockQ)
            for start in stride(from: 0, to: blockRows, by: config.computeTileQ) {
                let n = min(config.computeTileQ, blockRows - start)
                tiles.append(WorkItem(head: 0, localRow: localRow + start, rowCount: n, maskRow: row,
                                      queryStart: block * config.blockQ + start))
            }
            localRow += blockRows
        }
        precondition(localRow == queries.rows, "queries hold \(queries.rows) rows, the mask's blocks \(localRow)")
        // Heaviest first: under causal the late tiles see the most keys; dynamic claiming evens out the rest.
        let ordered = tiles.sorted { $0.queryStart > $1.queryStart }
        items = ordered.flatMap { t in
            (0..<queries.heads).map {
                WorkItem(head: $0, localRow: t.localRow, rowCount: t.rowCount, maskRow: t.maskRow, queryStart: t.queryStart)
            }
        }
        maskRowCount = mask.rowCount
        maskRows = (0..<mask.heads).flatMap { h in
            (0..<mask.rowCount).map { r in mask.keyBlockList(head: h, row: r).map { Int32($0) } }
        }
        arena = AttentionTileArena(tiles: items.count, headDim: queries.dim, config: config)
        queries.data.withUnsafeBufferPointer { q in
            for (i, item) in items.enumerated() {
                let base = q.baseAddress! + (item.head * queries.rows + item.localRow) * queries.dim
                arena[i].begin(queries: base, rowCount: item.rowCount, queryStart: item.queryStart)
            }
        }
    }

    private let maskRowCount: Int

    /// Visits, for every tile, the blocks of its mask row that `table` holds.
    ///
    /// - Parameters:
    ///   - table: the key/value blocks available in this call.
    ///   - threads: worker threads; the calling thread is one of them.
    ///   - poll: called on the calling thread between its work items and while it waits for the other
    ///     workers (a ring uses it to progress its messages); nil when there is nothing to progress.
    public func attend(_ table: KeyValueBlockTable, threads: Int, poll: (() -> Void)? = nil) {
        precondition(table.kvHeads == kvHeads && threads >= 1, "attend: table or thread count does not fit")
        let group = queryHeads / kvHeads
        let next = WorkCounter()
        let perWorker = UnsafeMutableBufferPointer<AttentionStatistics>.allocate(capacity: threads)
        perWorker.initialize(repeating: AttentionStatistics())
        defer { perWorker.deallocate() }

        func work(_ worker: Int, poll: (() -> Void)?) {
            var stats = AttentionStatistics()
            while true {
                let i = next.claim()
                if i >= items.count { break }
                let item = items[i]
                let tile = arena[i]
                let g = item.head / group
                let lastRow = item.queryStart + item.rowCount - 1
                let before = tile.statistics
                for j32 in maskRows[item.head * maskRowCount + item.maskRow] {
                    let j = Int(j32)
                    let keyStart = j * config.blockK
                    if config.causal && keyStart > lastRow { break }
                    guard let kv = table.block(kvHead: g, block: j) else { continue }
                    _ = tile.visit(keys: kv.keys, values: kv.values, keyCount: table.rows(of: j), keyStart: keyStart)
                }
                let after = tile.statistics
                stats.keyBlocksVisited += after.keyBlocksVisited - before.keyBlocksVisited
                stats.pvBlocksSkipped += after.pvBlocksSkipped - before.pvBlocksSkipped
                poll?()
            }
            perWorker[worker] = stats
        }

        let workers = DispatchGroup()
        for worker in 1..<max(1, threads) {
            DispatchQueue.global().async(group: workers) { work(worker, poll: nil) }
        }
        work(0, poll: poll)
        if let poll {
            while workers.wait(timeout: .now() + .microseconds(200)) == .timedOut { poll() }
        } else {
            workers.wait()
        }
        for s in perWorker { statistics = statistics + s }
    }

    /// Counters of every `attend` so far.
    public var attendStatistics: AttentionStatistics { statistics }

    /// The output `[Hq, rows, D]` and row log-sum-exp `[Hq][rows]` (natural log of the scaled scores).
    public func finish() -> (output: Tensor3, lse: [Float]) {
        var output = Tensor3(heads: queryHeads, rows: rows, dim: headDim)
        var lse = [Float](repeating: -.infinity, count: queryHeads * rows)
        output.data.withUnsafeMutableBufferPointer { o in
            lse.withUnsafeMutableBufferPointer { l in
                for (i, item) in items.enumerated() {
                    let row = item.head * rows + item.localRow
                    arena[i].finish(output: o.baseAddress! + row * headDim, lse: l.baseAddress! + row)
                }
            }
        }
        return (output, lse)
    }
}

/// A shared counter from which workers claim work items (an `Atomic` in a class, so closures can share it).
final class WorkCounter: @unchecked Sendable {
    private let value = Atomic<Int>(0)

    /// The next unclaimed index.
    @inline(__always) func claim() -> Int { value.wrappingAdd(1, ordering: .relaxed).oldValue }
}
