/// Pooled means and self-similarity flags of a run of consecutive blocks (DESIGN.md §1.2–3).
///
/// A rank summarizes its own blocks; the ranks allgather the flat ``means`` and ``flags`` arrays and rebuild
/// the summaries of all blocks with ``init(concatenating:)``.
///
/// - The mean of a block is computed in Double and rounded to Float (as the reference does).
/// - A block is self-similar iff `s = ‖Σ_r x_r·(1/‖x_r‖)‖² / n² > θ` (computed in Double, strict; each row's
///   reciprocal norm rounded once, then one product a value — the reference's division, within an ulp).
/// - A partial block (fewer rows than `blockSize`; only ever the global last block) is never self-similar.
/// - A block holding a zero row (norm 0) is never self-similar: the reference divides by the norm and gets
///   NaN, and NaN > θ is false. Non-finite inputs give NaN or ∞ in `s` and are compared as they come.
public struct BlockSummaries: Sendable, Equatable {
    /// Heads (query heads for Q, kv heads for K).
    public let heads: Int
    /// Head dimension `D`.
    public let dim: Int
    /// Rows per block (`blockQ` or `blockK`).
    public let blockSize: Int
    /// Global index of the first block of the run.
    public let firstBlock: Int
    /// Blocks in the run.
    public let count: Int
    /// `[heads][count][dim]` block means.
    public var means: [Float]
    /// `[heads][count]`, 1 = self-similar.
    public var flags: [UInt8]

    /// Global block indices of the run.
    public var blocks: Range<Int> { firstBlock..<(firstBlock + count) }

    /// Summaries over given flat arrays (e.g. slices of an allgather buffer): `means` is
    /// `[heads][count][dim]`, `flags` is `[heads][count]`.
    public init<M: Collection, F: Collection>(
        heads: Int, dim: Int, blockSize: Int, firstBlock: Int, count: Int, means: M, flags: F
    ) where M.Element == Float, F.Element == UInt8 {
        precondition(means.count == heads * count * dim && flags.count == heads * count,
                     "BlockSummaries: \(means.count) means / \(flags.count) flags for \(heads)×\(count)×\(dim)")
        precondition(blockSize > 0 && firstBlock >= 0, "BlockSummaries: bad block size or first block")
        self.heads = heads
        self.dim = dim
        self.blockSize = blockSize
        self.firstBlock = firstBlock
        self.count = count
        self.means = Array(means)
        self.flags = Array(flags)
    }

    /// The summaries of several runs, in the order given, as one run.
    ///
    /// Each part must start at the block where the previous one ended (consecutive runs in global order),
    /// unless `requireConsecutive` is false (e.g. a zigzag rank stacking its two chunks for
    /// ``MaskPredictor/predictRows(querySummaries:queryBlocks:keySummaries:config:headDim:queryHeads:kvHeads:seqLen:)``,
    /// which takes the block indices separately); then ``firstBlock`` is the first part's. One part is itself
    /// (no copy).
    public init(concatenating parts: [BlockSummaries], requireConsecutive: Bool = true) {
        precondition(!parts.isEmpty, "BlockSummaries: nothing to concatenate")
        let p0 = parts[0]
        if parts.count == 1 {
            self = p0
            return
        }
        var next = p0.firstBlock
        for p in parts {
            precondition(p.heads == p0.heads && p.dim == p0.dim && p.blockSize == p0.blockSize,
                         "BlockSummaries: concatenating summaries of different shapes")
            precondition(!requireConsecutive || p.firstBlock == next,
                         "BlockSummaries: run at block \(p.firstBlock) does not follow block \(next - 1)")
            next = p.firstBlock + p.count
        }
        let total = parts.reduce(0) { $0 + $1.count }
        var means = [Float](); means.reserveCapacity(p0.heads * total * p0.dim)
        var flags = [UInt8](); flags.reserveCapacity(p0.heads * total)
        for h in 0..<p0.heads {
            for p in parts {
                means += p.means[(h * p.count * p.dim)..<((h + 1) * p.count * p.dim)]
                flags += p.flags[(h * p.count)..<((h + 1) * p.count)]
            }
        }
        self.init(heads: p0.heads, dim: p0.dim, blockSize: p0.blockSize, firstBlock: p0.firstBlock,
                  count: total, means: means, flags: flags)
    }

    /// The summaries of some blocks of this run (indices within the run, in the order given) as one value
    /// whose ``firstBlock`` is the first of them — what a rank holding only those query blocks summarizes.
    public func selecting(_ blocks: [Int]) -> BlockSummaries {
        precondition(!blocks.isEmpty && blocks.allSatisfy { $0 >= 0 && $0 < count }, "selecting: block outside 0..<\(count)")
        return BlockSummaries(concatenating: blocks.map { b in
            BlockSummaries(heads: heads, dim: dim, blockSize: blockSize, firstBlock: firstBlock + b, count: 1,
                           means: (0..<heads).flatMap { mean(head: $0, block: b) },
                           flags: (0..<heads).map { flags[$0 * count + b] })
        }, requireConsecutive: false)
    }

    /// Mean of block `block` (index within the run) of `head`.
    @inlinable public func mean(head: Int, block: Int) -> ArraySlice<Float> {
        let o = (head * count + block) * dim
        return means[o..<(o + dim)]
    }

    /// Whether block `block` (index within the run) of `head` is self-similar.
    @inlinable public func isSelfSimilar(head: Int, block: Int) -> Bool { flags[head * count + block] != 0 }
}
