/// Which global tokens each rank owns (DESIGN.md §2.1).
///
/// The sequence is cut into *units* of `lcm(blockQ, blockK)` tokens so that every shard holds whole query
/// and key blocks; only the global last unit may be partial. Non-causal runs give each rank one contiguous
/// run of units. Causal runs use the zigzag layout: the units are split into `2P` chunks and rank `r` owns
/// chunks `r` and `2P − 1 − r`, so that every rank has about the same causal work. A rank may own nothing
/// when there are fewer units than chunks; it still takes part in every collective.
public struct ShardLayout: Sendable, Equatable {
    /// Tokens in the whole sequence.
    public let seqLen: Int
    /// Number of ranks.
    public let ranks: Int
    /// Query rows per mask block.
    public let blockQ: Int
    /// Key rows per mask block.
    public let blockK: Int
    /// Whether the zigzag (causal) layout is used.
    public let zigzag: Bool
    /// For every rank, its token ranges in ascending global order (one, or two under zigzag; empty ranges
    /// are dropped).
    public let tokenRanges: [[Range<Int>]]

    /// The layout of `seqLen` tokens over `ranks` ranks.
    public init(seqLen: Int, ranks: Int, blockQ: Int, blockK: Int, causal: Bool) {
        precondition(seqLen > 0 && ranks > 0 && blockQ > 0 && blockK > 0, "ShardLayout: non-positive size")
        self.seqLen = seqLen
        self.ranks = ranks
        self.blockQ = blockQ
        self.blockK = blockK
        let zigzag = causal && ranks > 1
        self.zigzag = zigzag
        let unit = ShardLayout.lcm(blockQ, blockK)
        let units = (seqLen + unit - 1) / unit
        let chunkCount = zigzag ? 2 * ranks : ranks
        // Chunk c holds units [c·units/chunkCount, (c+1)·units/chunkCount): sizes differ by at most one.
        func chunk(_ c: Int) -> Range<Int> {
            let lo = min(seqLen, c * units / chunkCount * unit)
            let hi = min(seqLen, (c + 1) * units / chunkCount * unit)
            return lo..<hi
        }
        tokenRanges = (0..<ranks).map { r in
            let owned = zigzag ? [chunk(r), chunk(2 * ranks - 1 - r)] : [chunk(r)]
            return owned.filter { !$0.isEmpty }
        }
    }

    /// The layout of `seqLen` tokens over `ranks` ranks with the block sizes of `config` (the one place a
    /// run's block sizes come from) and the zigzag order when `config.causal`.
    ///
    /// - Throws: `SpargeError.invalidArgument` for a non-positive length or rank count, or an invalid config.
    public init(seqLen: Int, ranks: Int, config: SpargeConfig) throws {
        try config.validate()
        guard seqLen > 0, ranks > 0 else {
            throw SpargeError.invalidArgument("a layout needs a positive length and rank count (N=\(seqLen), \(ranks) ranks)")
        }
        self.init(seqLen: seqLen, ranks: ranks, blockQ: config.blockQ, blockK: config.blockK, causal: config.causal)
    }

    /// Query blocks in the sequence.
    public var queryBlockCount: Int { (seqLen + blockQ - 1) / blockQ }
    /// Key blocks in the sequence.
    public var keyBlockCount: Int { (seqLen + blockK - 1) / blockK }

    /// Tokens owned by `rank`.
    public func rowCount(rank: Int) -> Int { tokenRanges[rank].reduce(0) { $0 + $1.count } }

    /// Global indices of the query blocks owned by `rank`, ascending.
    public func queryBlocks(rank: Int) -> [Int] { blocks(rank: rank, size: blockQ) }

    /// Global indices of the key blocks owned by `rank`, ascending.
    public func keyBlocks(rank: Int) -> [Int] { blocks(rank: rank, size: blockK) }

    /// The key blocks owned by `rank` as ranges of global indices, one per token range.
    public func keyBlockRanges(rank: Int) -> [Range<Int>] {
        tokenRanges[rank].map { ($0.lowerBound / blockK)..<(($0.upperBound + blockK - 1) / blockK) }
    }

    /// The local row at which global token `token` of `rank` is stored, or nil when another rank owns it.
    public func localRow(ofToken token: Int, rank: Int) -> Int? {
        var base = 0
        for range in tokenRanges[rank] {
            if range.contains(token) { return base + token - range.lowerBound }
            base += range.count
        }
        return nil
    }

    /// The rank owning global token `token`.
    public func owner(ofToken token: Int) -> Int {
        precondition(token >= 0 && token < seqLen, "token \(token) outside 0..<\(seqLen)")
        return (0..<ranks).first { r in tokenRanges[r].contains { $0.contains(token) } }!
    }

    private func blocks(rank: Int, size: Int) -> [Int] {
        tokenRanges[rank].flatMap { range in
            (range.lowerBound / size)..<((range.upperBound + size - 1) / size)
        }
    }

    static func lcm(_ a: Int, _ b: Int) -> Int {
        var (x, y) = (a, b)
        while y != 0 { (x, y) = (y, x % y) }
        return a / x * b
    }
}
