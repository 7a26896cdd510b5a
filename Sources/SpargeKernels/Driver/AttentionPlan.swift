/// The work of one process's query rows under a block mask, for every backend: the compute tiles, the key
/// blocks each visits (its mask row cut at its causal diagonal), and the order in which query blocks are
/// taken.
///
/// A *block* is one query block of one head; its tiles (`blockQ / computeTileQ`, fewer for a partial last
/// block) share the block's mask row, so a driver reads each key block once per block and lets every tile
/// visit it. Blocks are ordered head by head — so that workers share one head's K/V in the cache instead of
/// streaming every head's — and within a head heaviest first (most visits; under causal the last blocks),
/// so that dynamic claiming evens out the end.
///
/// Memory: a few words per tile; the visit lists are ranges into `mask.keys`, never copies (a tile's cut
/// row is a prefix of its block's row, because rows ascend).
public struct AttentionPlan: Sendable {
    /// One compute tile.
    public struct Tile: Sendable, Equatable {
        /// Query head.
        public let head: Int
        /// First row among the process's query rows (the rows of `mask.queryBlocks`, concatenated).
        public let localRow: Int
        /// Rows (`computeTileQ`, or fewer at the end of a partial block).
        public let rowCount: Int
        /// Global token index of row 0.
        public let queryStart: Int
        /// The key blocks it visits: `mask.keys[visits]`, ascending.
        public let visits: Range<Int>
    }

    /// One query block of one head.
    public struct Block: Sendable, Equatable {
        /// Query head.
        public let head: Int
        /// Its tiles: `tiles[tileRange]`.
        public let tileRange: Range<Int>
        /// The key blocks any of its tiles visits: `mask.keys[visits]` (its last tile's list).
        public let visits: Range<Int>
    }

    /// The mask the plan reads.
    public let mask: BlockMask
    /// The configuration (block sizes, compute tile, causal).
    public let config: SpargeConfig
    /// Tokens in the sequence, query heads, key/value heads.
    public let seqLen: Int, queryHeads: Int, kvHeads: Int
    /// The process's query rows per head.
    public let rows: Int
    /// Every compute tile, grouped by block in `blocks` order.
    public let tiles: [Tile]
    /// Every (head, query block), in the order drivers take them.
    public let blocks: [Block]

    /// Tile `t`'s first row among every head's rows (`head · rows + localRow`): where its rows of a
    /// `[Hq, rows, D]` tensor start, in rows, and its first entry of a `[Hq][rows]` array.
    @inlinable public func firstRow(ofTile t: Int) -> Int { tiles[t].head * rows + tiles[t].localRow }

    /// The plan of the rows of `mask.queryBlocks`, for queries of shape `[queryHeads, queryRows, D]` (the
    /// rows of those blocks, concatenated).
    ///
    /// - Throws: `SpargeError.invalidArgument` when the queries do not match the mask's heads and rows,
    ///   `kvHeads` does not divide the heads, or `computeTileQ` does not divide `blockQ`.
    public init(mask: BlockMask, queryHeads: Int, queryRows: Int, kvHeads: Int, config: SpargeConfig, seqLen: Int) throws {
        guard mask.heads == queryHeads else {
            throw SpargeError.invalidArgument("the mask has \(mask.heads) heads, the queries \(queryHeads)")
        }
        guard kvHeads > 0, mask.heads % kvHeads == 0 else {
            throw SpargeError.invalidArgument("query heads \(mask.heads) are not a multiple of kv heads \(kvHeads)")
        }
        try config.validate()
        self.mask = mask
        self.config = config
        self.seqLen = seqLen
        self.queryHeads = mask.heads
        self.kvHeads = kvHeads
        let spans = mask.queryBlockSpans(blockQ: config.blockQ, seqLen: seqLen)
        rows = spans.reduce(0) { $0 + $1.rows }
        guard rows == queryRows else {
            throw SpargeError.invalidArgument("the queries hold \(queryRows) rows, the mask's query blocks \(rows)")
        }
        let tq = config.computeTileQ, bk = config.blockK
        var tiles: [Tile] = []
        var blocks: [Block] = []
        tiles.reserveCapacity(mask.heads * spans.reduce(0) { $0 + ($1.rows + tq - 1) / tq })
        blocks.reserveCapacity(mask.heads * spans.count)
        // The visits of the tile of `span` starting at its row `first`: the mask row, cut at the tile's
        // causal diagonal.
        func visits(_ row: Range<Int>, _ span: (row: Int, start: Int, rows: Int, localRow: Int), first: Int) -> Range<Int> {
            guard config.causal else { return row }
            let lastRow = span.start + min(span.rows, first + tq) - 1
            return row.lowerBound..<mask.firstKeyIndex(atLeast: lastRow / bk + 1, in: row)
        }
        // Per head, heaviest first (by the last tile's visits); among equals the later block first (under
        // causal the later one is heavier anyway, and it keeps dense runs in the order that was measured).
        // A counting sort on the weight over the spans taken latest start first: this runs on the GPU pass's
        // critical path (2048 blocks at 32K tokens and 8 heads), where a comparison sort cost ~0.05 ms.
        let latestFirst = spans.indices.sorted { spans[$0].start > spans[$1].start }
        let slots = mask.keyBlocks + 1  // weight w (at most every key block) goes to slot keyBlocks − w
        var weights = [Int](repeating: 0, count: spans.count)
        var slotStarts = [Int](repeating: 0, count: slots + 1)
        var order = [Int](repeating: 0, count: spans.count)
        for h in 0..<mask.heads {
            for (i, span) in spans.enumerated() {
                let r = h * mask.rowCount + span.row
                weights[i] = visits(mask.rowStarts[r]..<mask.rowStarts[r + 1], span, first: (span.rows - 1) / tq * tq).count
            }
            if let w = weights.first(where: { $0 > mask.keyBlocks }) {
                throw SpargeError.invalidArgument("a mask row of head \(h) lists \(w) key blocks of \(mask.keyBlocks)")
            }
            for s in slotStarts.indices { slotStarts[s] = 0 }
            for w in weights { slotStarts[mask.keyBlocks - w + 1] += 1 }
            for s in 1..<slotStarts.count { slotStarts[s] += slotStarts[s - 1] }
            for i in latestFirst {
                let slot = mask.keyBlocks - weights[i]
                order[slotStarts[slot]] = i
                slotStarts[slot] += 1
            }
            for spanIndex in order {
                let span = spans[spanIndex]
                let r = h * mask.rowCount + span.row
                let row = mask.rowStarts[r]..<mask.rowStarts[r + 1]
                let first = tiles.count
                var last = 0..<0
                for t in stride(from: 0, to: span.rows, by: tq) {
                    last = visits(row, span, first: t)
                    tiles.append(Tile(head: h, localRow: span.localRow + t, rowCount: min(tq, span.rows - t),
                                      queryStart: span.start + t, visits: last))
                }
                blocks.append(Block(head: h, tileRange: first..<tiles.count, visits: last))
            }
        }
        self.tiles = tiles
        self.blocks = blocks
    }

}
