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

    /// All key-block summaries of the sequence, gathered from every rank's runs.
    static func allKeySummaries(local runs: [BlockSummaries], on comm: Communicator) -> [BlockSummaries] {
        let gathered = comm.allgather(bytes: SummaryCoding.encode(runs))
        return gathered.flatMap(SummaryCoding.decode).sorted { $0.firstBlock < $1.firstBlock }
    }
}

/// Flat byte encoding of summary runs for the allgather: per run a 5-word header
/// (heads, dim, blockSize, firstBlock, count as little-endian Int64), the means, then the flags.
enum SummaryCoding {
    /// The bytes `encode` gives, without encoding (the statistics count them every pass).
    static func byteCount(_ runs: [BlockSummaries]) -> Int {
        runs.reduce(0) { $0 + 40 + 4 * $1.means.count + $1.flags.count }
    }

    static func encode(_ runs: [BlockSummaries]) -> [UInt8] {
        var bytes: [UInt8] = []
        for run in runs {
            for word in [run.heads, run.dim, run.blockSize, run.firstBlock, run.count] {
                withUnsafeBytes(of: Int64(word).littleEndian) { bytes.append(contentsOf: $0) }
            }
            run.means.withUnsafeBytes { bytes.append(contentsOf: $0) }
            bytes.append(contentsOf: run.flags)
        }
        return bytes
    }

    static func decode(_ bytes: [UInt8]) -> [BlockSummaries] {
        var runs: [BlockSummaries] = []
        var at = 0
        bytes.withUnsafeBytes { raw in
            while at < raw.count {
                let w = (0..<5).map { Int(Int64(littleEndian: raw.loadUnaligned(fromByteOffset: at + 8 * $0, as: Int64.self))) }
                at += 40
                let (heads, dim, blockSize, firstBlock, count) = (w[0], w[1], w[2], w[3], w[4])
                let meanCount = heads * count * dim
                let means = [Float](unsafeUninitializedCapacity: meanCount) { buffer, initialized in
                    if meanCount > 0 {
                        UnsafeMutableRawPointer(buffer.baseAddress!).copyMemory(from: raw.baseAddress! + at, byteCount: 4 * meanCount)
                    }
                    initialized = meanCount
                }
                at += 4 * meanCount
                let flags = raw[at..<(at + heads * count)]
                at += heads * count
                runs.append(BlockSummaries(heads: heads, dim: dim, blockSize: blockSize, firstBlock: firstBlock,
                                           count: count, means: means, flags: flags))
            }
        }
        return runs
    }
}
