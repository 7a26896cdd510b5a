/// Which tile implementation a forward pass runs.
public enum AttentionBackend: Sendable, Equatable {
    /// `AttentionTile` with the best micro-kernels of this CPU (`CPUISA.detected`): the fast path, any D.
    case vector
    /// `AttentionTile` with the micro-kernels of one instruction set (this CPU must support it).
    case isa(CPUISA)
    /// `ScalarAttentionTile`: plain loops; the reference in tests.
    case scalar
    /// `ScalarAttentionTile` as the twin of one kernel set's tiles: like `scalar`, except that it rounds P
    /// to bf16 where that set's tiles do (`AttentionPrecision.bf16` on AVX512-BF16 and AMX).
    case scalarTwin(CPUISA)
}

/// Block-sparse attention on one process: the plan's driver (`BlockSparseAttention`) fed once with every
/// key/value block.
public enum SparseAttention {
    /// Attention of `q` over `k`, `v` restricted to the blocks of `mask`, with online softmax.
    ///
    /// The work is the `AttentionPlan` of the mask: query blocks head by head, heaviest first, each computed
    /// as `blockQ / computeTileQ` compute tiles that visit the block's key blocks in ascending order, cut at
    /// each tile's causal diagonal; tokens are masked inside diagonal blocks.
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
    ///   - backend: `.vector` (default), one kernel set (`.isa(.portable)`), or the scalar twin.
    ///   - precision: what Q, K, V are rounded to before the fp32 products (default fp32: not at all).
    /// - Returns: output `[Hq, N, D]`, LSE `[Hq][N]` (natural log of the scaled scores), and counters.
    /// - Throws: `SpargeError.invalidArgument` when shapes, mask and configuration do not fit together.
    public static func forward(
        q: Tensor3, k: Tensor3, v: Tensor3, mask: BlockMask?, config: SpargeConfig, threads: Int = 1,
        backend: AttentionBackend = .vector, precision: AttentionPrecision = .fp32
    ) throws -> (output: Tensor3, lse: [Float], stats: AttentionStatistics) {
        guard k.shape == v.shape, q.rows == k.rows, q.dim == k.dim else {
            throw SpargeError.invalidArgument("Q \(q.shape), K \(k.shape) and V \(v.shape) do not fit together")
        }
        guard k.heads > 0, q.heads % k.heads == 0 else {
            throw SpargeError.invalidArgument("query heads \(q.heads) are not a multiple of kv heads \(k.heads)")
        }
        guard threads >= 1 else { throw SpargeError.invalidArgument("threads must be ≥ 1, not \(threads)") }
        let n = q.rows
        let nq = (n + config.blockQ - 1) / config.blockQ, nk = (n + config.blockK - 1) / config.blockK
        let rows: BlockMask
        if let mask, config.selection != .dense {
            guard mask.heads == q.heads, mask.keyBlocks == nk, mask.queryBlocks == Array(0..<nq) else {
                throw SpargeError.invalidArgument("the mask [\(mask.heads), \(mask.rowCount), \(mask.keyBlocks)] does not "
                    + "hold every query block of Hq=\(q.heads), nq=\(nq), nk=\(nk)")
            }
            rows = mask
        } else {
            rows = BlockMask.full(heads: q.heads, keyBlocks: nk, queryBlocks: Array(0..<nq),
                                  causalShape: config.causal ? (config.blockQ, config.blockK) : nil)
        }
        let attention = try BlockSparseAttention(queries: q, mask: rows, kvHeads: k.heads, config: config, seqLen: n,
                                                 threads: threads, backend: backend, precision: precision)
        guard n > 0, q.dim > 0 else {
            return (Tensor3(heads: q.heads, rows: n, dim: q.dim), [Float](repeating: -.infinity, count: q.heads * n),
                    AttentionStatistics())
        }
        var table = KeyValueBlockTable(kvHeads: k.heads, keyBlocks: nk, blockK: config.blockK, seqLen: n)
        k.data.withUnsafeBufferPointer { kp in
            v.data.withUnsafeBufferPointer { vp in
                table.setAll(k: kp.baseAddress!, v: vp.baseAddress!, dim: q.dim)
                attention.attend(table, threads: threads)
            }
        }
        let (output, lse) = attention.finish(threads: threads)
        return (output, lse, attention.attendStatistics)
    }
}
