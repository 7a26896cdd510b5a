import Dispatch

/// Timing of the single-process forward pass on random inputs, for the CLI's `bench` and for tuning.
///
/// What to expect (N = 16384, 4 heads, D = 128, 2 threads of the Zen 5 of DESIGN.md §5):
/// - FLOPs: `4·N²·D·H` = 5.5e11; at the measured FMA peak (~535 GFLOP/s) that is 1.03 s, the floor.
/// - Bytes: each query block streams its head's K and V (`2·N·D·4` = 16.8 MB) once: 128 blocks × 4 heads
///   = 8.6 GB, i.e. ~7 GB/s at 1.2 s. One head's K/V fits the 32 MB L3, so with the work claimed head by
///   head this comes from the L3, far below its bandwidth (and below the ~46 GB/s DRAM copy rate).
/// So the dense kernel is compute-bound, and what is left above the floor is the softmax (~5%), the driver
/// (~4%: warming the next block, packing Q̂ᵀ) and the micro-kernels' own efficiency. A sparse mask makes
/// the K/V reads scattered; asking for the next block while one computes (`UpcomingBlock`) keeps them from stalling.
public enum AttentionBenchmark {
    /// One measured configuration.
    public struct Result: Sendable {
        /// Fraction of (query block, key block) pairs computed (1 = dense).
        public let density: Double
        /// Median wall time of the forward pass, seconds.
        public let seconds: Double
        /// Every repetition's time, seconds.
        public let samples: [Double]
        /// `4·N²·D·Hq / seconds` (half of it under causal): the rate of the dense computation it replaces.
        public let denseEquivalentGFlops: Double
        /// FLOPs of the blocks actually visited (full blocks counted whole) per second.
        public let gflops: Double
        public let stats: AttentionStatistics
    }

    /// Times `SparseAttention.forward` on i.i.d. N(0,1) inputs `[heads, tokens, dim]`, once per density,
    /// with a random mask of that density (each row keeps `round(density·nk)` random key blocks, at least
    /// one; `density ≥ 1` runs without a mask). Median of `repeats` runs after one warm-up.
    public static func run(tokens: Int, heads: Int, dim: Int, densities: [Double], threads: Int,
                           repeats: Int = 3, config: SpargeConfig = SpargeConfig(), seed: UInt64 = 1) throws -> [Result] {
        var rng = SplitMix(seed)
        func tensor() -> Tensor3 {
            var t = Tensor3(heads: heads, rows: tokens, dim: dim)
            for i in t.data.indices { t.data[i] = rng.uniform() * 2 - 1 }
            return t
        }
        let q = tensor(), k = tensor(), v = tensor()
        let nq = (tokens + config.blockQ - 1) / config.blockQ, nk = (tokens + config.blockK - 1) / config.blockK
        var results: [Result] = []
        for density in densities {
            var mask: BlockMask? = nil
            if density < 1 {
                var m = BlockMask.Builder(heads: heads, keyBlocks: nk, queryBlocks: Array(0..<nq))
                let keep = Swift.max(1, Int((density * Double(nk)).rounded()))
                for h in 0..<heads {
                    for r in 0..<nq {
                        var blocks = Array(0..<nk)
                        for i in 0..<keep {
                            let j = i + Int(rng.next() % UInt64(nk - i))
                            blocks.swapAt(i, j)
                        }
                        _ = (h, r)
                        m.appendRow(blocks[0..<keep].sorted())
                    }
                }
                mask = m.mask
            }
            var samples: [Double] = []
            var stats = AttentionStatistics()
            for rep in 0...repeats {
                let start = DispatchTime.now().uptimeNanoseconds
                let r = try SparseAttention.forward(q: q, k: k, v: v, mask: mask, config: config, threads: threads)
                let t = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
                if rep > 0 { samples.append(t) }
                stats = r.stats
            }
            let median = samples.sorted()[samples.count / 2]
            let dense = 4 * Double(tokens) * Double(tokens) * Double(dim) * Double(heads) * (config.causal ? 0.5 : 1)
            let real = Double(stats.keyBlocksVisited) * 4 * Double(config.computeTileQ * config.blockK * dim)
            results.append(Result(density: mask.map { Double($0.computedCount) / Double(heads * nq * nk) } ?? 1,
                                  seconds: median, samples: samples, denseEquivalentGFlops: dense / median / 1e9,
                                  gflops: real / median / 1e9, stats: stats))
        }
        return results
    }

    struct SplitMix {
        var state: UInt64
        init(_ seed: UInt64) { state = seed }
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        mutating func uniform() -> Float { Float(next() >> 40) / Float(1 << 24) }
    }
}
