import SpargeKernels

/// The collective part of mask prediction (DESIGN.md §2.2–2.3): the global K mean, every rank's key-block
/// summaries on every rank, and this rank's mask rows.
enum SummaryExchange {
    /// The global K mean `[kvHeads][D]`: an allreduce of per-rank Double sums, rounded to Float once.
    static func keyMean(k: Tensor3, seqLen: Int, on comm: Communicator) -> [Float] {
        var local = KeyMean(summing: k, rows: 0..<k.rows)
        comm.allreduceSum(&local.sums)
        return KeyMean(heads: k.heads, dim: k.dim, sums: local.sums, rowCount: seqLen).mean()
    }

    /// The summaries of this rank's blocks of `x`, one run per owned token range, as one value in global
    /// block order (runs need not be consecutive), computed by `engine`.
    static func localSummaries(
        _ x: Tensor3, ranges: [Range<Int>], blockSize: Int, threshold: Float, subtracting mean: [Float]? = nil,
        engine: any AttentionEngine
    ) throws -> [BlockSummaries] {
        var localStart = 0
        return try ranges.map { range in
            defer { localStart += range.count }
            return try engine.summarize(
                x, rows: localStart..<(localStart + range.count), firstBlock: range.lowerBound / blockSize,
                blockSize: blockSize, threshold: threshold, subtracting: mean)
        }
    }

    /// Every rank's key-block summaries, from `mine` (this rank's runs packed in `PackedKeySummaries`'
    /// layout, one per token range): one allgather, its counts known to every rank from the layout.
    ///
    /// - Throws: `SpargeError.invalidArgument` (on every rank alike) when the layout's runs do not hold every
    ///   key block once.
    static func allKeySummaries(packed mine: UnsafeRawBufferPointer, heads: Int, dim: Int, layout: ShardLayout,
                                blockK bk: Int, on comm: Communicator) throws -> PackedKeySummaries {
        let blocksOfRanks = layout.tokenRanges.map { ranges in
            ranges.map { ($0.lowerBound / bk)..<($0.lowerBound / bk + ($0.count + bk - 1) / bk) }
        }
        let counts = blocksOfRanks.map { runs in
            runs.reduce(0) { $0 + PackedKeySummaries.byteCount(blocks: $1.count, heads: heads, dim: dim) }
        }
        return try PackedKeySummaries(heads: heads, dim: dim, blockSize: bk, keyBlocks: layout.keyBlockCount,
                                      blocksOfRanks: blocksOfRanks) { comm.allgatherv(mine, counts: counts, into: $0) }
    }
}
