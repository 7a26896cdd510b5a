import SpargeRing
import SpargeWorkloads

/// Error sums over some query blocks: `Σ|o − ref|` and `Σ|ref|`, summed over ranks.
struct ErrorSums {
    var difference = 0.0, reference = 0.0, blocks = 0
    var relativeL1: Double { reference > 0 ? difference / reference : 0 }
}

/// How the error of a run is known when the full dense result is too expensive: a few query blocks,
/// spread evenly over the sequence, are recomputed densely against every key, which the generator makes
/// again chunk by chunk (workloads are pure functions of position, so no rank needs the whole sequence in
/// memory; `tokens` maps sequence positions to the generator's tokens when they are reordered). The dense reference is the same FlashAttention kernel in dense mode with the λ rule off: fp32
/// with fp32 accumulation, about 1e-6 from a Double reference — far below the errors being measured.
enum SampledVerification {
    /// Collective: the relative L1 error of `result` over `samples` query blocks.
    static func relativeL1(result: ForwardResult, layout: ShardLayout, generator: WorkloadGenerator,
                           config: SpargeConfig, samples: Int, threads: Int, comm: Communicator,
                           tokens: ([Range<Int>]) -> [Range<Int>] = { $0 }) throws -> ErrorSums {
        let nq = layout.queryBlockCount, nk = layout.keyBlockCount
        let count = min(samples, nq)
        let chosen = Array(Set((0..<count).map { (2 * $0 + 1) * nq / (2 * count) })).sorted()
        let mine = Set(layout.queryBlocks(rank: comm.rank))
        let local = chosen.filter { mine.contains($0) }
        var sums = [0.0, 0.0, Double(local.count)]
        if !local.isEmpty {
            let blockRanges = local.map { ($0 * config.blockQ)..<min(layout.seqLen, ($0 + 1) * config.blockQ) }
            let queries = generator.generate(.query, rows: tokens(blockRanges))
            var dense = config
            dense.selection = .dense
            dense.pvThreshold = SpargeConfig.lambdaOff
            let mask = BlockMask.full(heads: queries.heads, keyBlocks: nk, queryBlocks: local)
            let kvHeads = generator.shape.kvHeads
            let attention = try BlockSparseAttention(queries: queries, mask: mask, kvHeads: kvHeads, config: dense,
                                                 seqLen: layout.seqLen)
            // Keys are needed up to the last sampled row when causal, else all of them.
            let lastKey = config.causal ? blockRanges.last!.upperBound : layout.seqLen
            let chunkRows = 64 * config.blockK
            var table = KeyValueBlockTable(kvHeads: kvHeads, keyBlocks: nk, blockK: config.blockK, seqLen: layout.seqLen)
            for chunkStart in stride(from: 0, to: lastKey, by: chunkRows) {
                let rows = chunkStart..<min(layout.seqLen, chunkStart + chunkRows)
                let k = generator.generate(.key, rows: tokens([rows]))
                let v = generator.generate(.value, rows: tokens([rows]))
                k.data.withUnsafeBufferPointer { kp in
                    v.data.withUnsafeBufferPointer { vp in
                        table.removeAll()
                        table.setBlocks(tokens: rows, keys: kp.baseAddress!, values: vp.baseAddress!,
                                        headStride: rows.count * k.dim, dim: k.dim)
                        attention.attend(table, threads: threads)
                    }
                }
            }
            let reference = attention.finish().output
            let out = result.output
            for h in 0..<queries.heads {
                var sampleRow = 0
                for range in blockRanges {
                    let localRow = layout.localRow(ofToken: range.lowerBound, rank: comm.rank)!
                    for r in 0..<range.count {
                        for d in 0..<queries.dim {
                            let ref = Double(reference[h, sampleRow + r, d])
                            sums[0] += abs(Double(out[h, localRow + r, d]) - ref)
                            sums[1] += abs(ref)
                        }
                    }
                    sampleRow += range.count
                }
            }
        }
        comm.allreduceSum(&sums)
        return ErrorSums(difference: sums[0], reference: sums[1], blocks: Int(sums[2]))
    }
}
