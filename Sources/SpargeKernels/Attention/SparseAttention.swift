import Dispatch
import Synchronization

/// Which tile implementation a forward pass runs.
public enum AttentionBackend: Sendable {
    /// `AttentionTile`: SIMD16 micro-kernels in the transposed layout (the fast path, any D).
    case vector
    /// `ScalarAttentionTile`: plain loops; the reference in tests.
    case scalar
}

/// The kernel body that the drivers schedule: `AttentionTile` and its scalar twin.
protocol AttentionTileKernel {
    func begin(queries: UnsafePointer<Float>, rowCount: Int, queryStart: Int)
    func visit(keys: UnsafePointer<Float>, values: UnsafePointer<Float>, keyCount: Int, keyStart: Int) -> Bool
    func finish(output: UnsafeMutablePointer<Float>, lse: UnsafeMutablePointer<Float>)
    func prefetch(keys: UnsafePointer<Float>, values: UnsafePointer<Float>, keyCount: Int)
    var statistics: AttentionStatistics { get }
}

extension AttentionTile: AttentionTileKernel {}
extension ScalarAttentionTile: AttentionTileKernel {}

/// Block-sparse attention on one process: the driver that schedules compute tiles over threads.
public enum SparseAttention {
    /// Attention of `q` over `k`, `v` restricted to the blocks of `mask`, with online softmax.
    ///
    /// Work items are (query head, query block of `blockQ` rows), claimed dynamically from an atomic counter
    /// (rows cost different amounts under a sparse mask or causally), head by head, the heaviest blocks first
    /// under causal. Each query block is computed as `blockQ / computeTileQ` compute tiles that use the
    /// block's mask row and visit each key block in turn. Causal:
    /// only blocks allowed by the mask are visited (the mask predictor already applies the block-causal
    /// rule), blocks entirely above a tile's diagonal are not, and tokens are masked inside diagonal blocks.
    ///
    /// Edge cases: `N` need not be a multiple of the block sizes (the last query tile and key block are
    /// partial); a query row that sees no key (an empty mask row) gets output 0 and `lse = -inf`.
    ///
    /// - Parameters:
    ///   - q: `[Hq, N, D]`.
    ///   - k, v: `[Hkv, N, D]` with `Hq % Hkv == 0`; query head `h` uses kv head `h / (Hq / Hkv)` (GQA).
    ///   - mask: rows for every query block `0..<nq` against `nk` key blocks, or `nil` for all blocks (dense
    ///     FlashAttention; block-causal when `config.causal`). Ignored when `config.selection` is `.dense`.
    ///   - config: block sizes, `computeTileQ` (must divide `blockQ`), causal, λ (`pvThreshold`), scale.
    ///   - threads: worker threads (default 1).
    ///   - backend: `.vector` (default) or the scalar twin.
    /// - Returns: output `[Hq, N, D]`, LSE `[Hq][N]` (natural log of the scaled scores), and counters.
    public static func forward(
        q: Tensor3, k: Tensor3, v: Tensor3, mask: BlockMask?, config: SpargeConfig, threads: Int = 1,
        backend: AttentionBackend = .vector
    ) -> (output: Tensor3, lse: [Float], stats: AttentionStatistics) {
        precondition(k.shape == v.shape, "SparseAttention: K \(k.shape) and V \(v.shape) differ")
        precondition(q.rows == k.rows && q.dim == k.dim, "SparseAttention: Q \(q.shape) against K \(k.shape)")
        precondition(k.heads > 0 && q.heads % k.heads == 0, "SparseAttention: Hq=\(q.heads), Hkv=\(k.heads)")
        precondition(config.blockQ % config.computeTileQ == 0, "SparseAttention: computeTileQ must divide blockQ")
        precondition(threads >= 1, "SparseAttention: threads must be ≥ 1")
        let n = q.rows, d = q.dim
        let nq = (n + config.blockQ - 1) / config.blockQ
        let nk = (n + config.blockK - 1) / config.blockK
        let mask = config.selection == .dense ? nil : mask
        var maskRowOfBlock = [Int](repeating: -1, count: nq)
        if let mask {
            precondition(mask.heads == q.heads && mask.keyBlocks == nk,
                         "SparseAttention: mask [\(mask.heads), _, \(mask.keyBlocks)] for Hq=\(q.heads), nk=\(nk)")
            for (row, block) in mask.queryBlocks.enumerated() where block >= 0 && block < nq {
                maskRowOfBlock[block] = row
            }
            precondition(!maskRowOfBlock.contains(-1), "SparseAttention: the mask lacks some query blocks")
        }
        var output = Tensor3(heads: q.heads, rows: n, dim: d)
        var lse = [Float](repeating: -.infinity, count: q.heads * n)
        guard n > 0, d > 0 else { return (output, lse, AttentionStatistics()) }

        let plan = Plan(config: config, tokens: n, dim: d, queryHeads: q.heads, kvHeads: k.heads,
                        keyBlocks: nk, maskRows: mask?.rowCount ?? 0, maskRowOfBlock: maskRowOfBlock)
        var perWorker = [AttentionStatistics](repeating: AttentionStatistics(), count: threads)
        let maskBits = mask?.bits ?? []
        q.data.withUnsafeBufferPointer { qp in
            k.data.withUnsafeBufferPointer { kp in
                v.data.withUnsafeBufferPointer { vp in
                    output.data.withUnsafeMutableBufferPointer { op in
                        lse.withUnsafeMutableBufferPointer { lp in
                            maskBits.withUnsafeBufferPointer { mp in
                                perWorker.withUnsafeMutableBufferPointer { sp in
                                    let io = IO(q: qp.baseAddress!, k: kp.baseAddress!, v: vp.baseAddress!,
                                                output: op.baseAddress!, lse: lp.baseAddress!,
                                                mask: mask == nil ? nil : mp.baseAddress!)
                                    let next = Atomic<Int>(0)
                                    DispatchQueue.concurrentPerform(iterations: threads) { worker in
                                        switch backend {
                                        case .vector:
                                            let arena = AttentionTileArena(tiles: plan.tilesPerBlock, headDim: d, config: config)
                                            let tiles = (0..<arena.count).map { arena[$0] }
                                            sp[worker] = plan.work(tiles: tiles, io: io, next: next)
                                        case .scalar:
                                            let tiles = (0..<plan.tilesPerBlock).map { _ in
                                                ScalarAttentionTile(headDim: d, config: config)
                                            }
                                            sp[worker] = plan.work(tiles: tiles, io: io, next: next)
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        return (output, lse, perWorker.reduce(AttentionStatistics(), +))
    }

    /// The base pointers of one forward pass.
    struct IO {
        let q: UnsafePointer<Float>
        let k: UnsafePointer<Float>
        let v: UnsafePointer<Float>
        let output: UnsafeMutablePointer<Float>
        let lse: UnsafeMutablePointer<Float>
        let mask: UnsafePointer<UInt8>?
    }

    /// The work decomposition of one forward pass.
    struct Plan {
        let config: SpargeConfig
        let tokens: Int
        let dim: Int
        let queryHeads: Int
        let kvHeads: Int
        let keyBlocks: Int
        let maskRows: Int
        let maskRowOfBlock: [Int]

        var queryBlocks: Int { (tokens + config.blockQ - 1) / config.blockQ }
        var tilesPerBlock: Int { config.blockQ / config.computeTileQ }

        /// Claims and runs work items until none is left; returns this worker's counters.
        ///
        /// An item is one query block of one head: its `blockQ / computeTileQ` compute tiles share the
        /// block's mask row, and each key block is visited by all of them in turn, so it is read from the L3
        /// once per query block rather than once per tile.
        func work<Tile: AttentionTileKernel>(tiles: [Tile], io: IO, next: borrowing Atomic<Int>) -> AttentionStatistics {
            var stats = AttentionStatistics()
            let tq = config.computeTileQ, bk = config.blockK, bq = config.blockQ
            let blocks = queryBlocks, items = queryHeads * blocks
            let group = queryHeads / kvHeads
            while true {
                let item = next.wrappingAdd(1, ordering: .relaxed).oldValue
                if item >= items { break }
                // Head-major, so that the workers share one head's K/V (16 MB at N = 16384, D = 128) in the
                // L3 instead of streaming every head's from memory; within a head the last blocks first: under
                // causal they are the heaviest, and dynamic claiming then evens out the end.
                let head = item / blocks, qb = blocks - 1 - item % blocks
                let blockStart = qb * bq, blockRows = Swift.min(bq, tokens - blockStart)
                let used = (blockRows + tq - 1) / tq
                let kvHead = head / group
                let kBase = io.k + kvHead * tokens * dim, vBase = io.v + kvHead * tokens * dim
                for i in 0..<used {
                    let rowStart = blockStart + i * tq
                    tiles[i].begin(queries: io.q + (head * tokens + rowStart) * dim,
                                   rowCount: Swift.min(tq, tokens - rowStart), queryStart: rowStart)
                }
                let maskRow = io.mask.map { $0 + (head * maskRows + maskRowOfBlock[qb]) * keyBlocks }
                for j in 0..<keyBlocks {
                    let keyStart = j * bk
                    if config.causal && keyStart >= blockStart + blockRows { break }
                    if let maskRow, maskRow[j] == 0 { continue }
                    let keyCount = Swift.min(bk, tokens - keyStart)
                    // Warm the next key block this query block needs while this one computes: under a
                    // sparse mask the blocks are scattered and the hardware prefetcher does not see them.
                    // The adjacent block it does see; touching it anyway cost ~4% in the dense sweep.
                    var next = j + 1
                    if let maskRow { while next < keyBlocks && maskRow[next] == 0 { next += 1 } }
                    if next > j + 1 && next < keyBlocks && !(config.causal && next * bk >= blockStart + blockRows) {
                        tiles[0].prefetch(keys: kBase + next * bk * dim, values: vBase + next * bk * dim,
                                          keyCount: Swift.min(bk, tokens - next * bk))
                    }
                    for i in 0..<used {
                        // Causal: a tile entirely before this key block does not visit it.
                        if config.causal && keyStart > Swift.min(blockStart + (i + 1) * tq, tokens) - 1 { continue }
                        _ = tiles[i].visit(keys: kBase + keyStart * dim, values: vBase + keyStart * dim,
                                           keyCount: keyCount, keyStart: keyStart)
                    }
                }
                for i in 0..<used {
                    let rowStart = blockStart + i * tq
                    tiles[i].finish(output: io.output + (head * tokens + rowStart) * dim,
                                    lse: io.lse + head * tokens + rowStart)
                    stats = stats + tiles[i].statistics
                }
            }
            return stats
        }
    }
}
