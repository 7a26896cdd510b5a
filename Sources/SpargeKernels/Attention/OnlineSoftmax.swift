/// The online-softmax merge, in one place: tiles, chunk partials and ring steps all combine partial softmax
/// states with it.
///
/// A partial state over a set of keys J, for one query row, in base 2 (scores `s_j` already multiplied by
/// `scale·log2(e)`):
///
///     m = max_{j∈J} s_j,    l = Σ_{j∈J} 2^(s_j − m),    O = Σ_{j∈J} 2^(s_j − m) · v_j
///
/// Two states over disjoint key sets A and B merge into the state over A ∪ B as
///
///     m = max(m_A, m_B),    α = 2^(m_A − m),    β = 2^(m_B − m),
///     l = α·l_A + β·l_B,    O = α·O_A + β·O_B,
///
/// which is exact, and stable because both exponents are ≤ 0 (no overflow, and the larger side has weight
/// exactly 1). An empty side has `m = −inf, l = 0, O = 0`, so its weight is `2^(−inf) = 0`. When both sides
/// are empty `m` stays `−inf`; the exponents are then taken against 0 instead so that `−inf − (−inf)` never
/// makes a NaN. The final row is `O / l` and its log-sum-exp is `(m + log2 l)·ln 2` in natural-log units.
///
/// The vector tile uses the same merge with the new key block as side B, folding β into the exponentials
/// of the block (`2^(s_j − m)` directly) so that the block is never normalised on its own; its lanes do it
/// in the ISA's micro-kernel (`softmax` in CSpargeKernels/tile_kernels.h), the same formulas.
public enum OnlineSoftmax {
    /// The merged maximum and the weights α, β of the two sides (see the type's documentation).
    @inlinable @inline(__always)
    public static func mergeWeights(_ mA: Float, _ mB: Float) -> (m: Float, alpha: Float, beta: Float) {
        let m = Swift.max(mA, mB)
        let shift = m == -.infinity ? 0 : m
        return (m, exp2Float(mA - shift), exp2Float(mB - shift))
    }

    /// `2^x` in Float; exactly 0 for `-inf`.
    @inlinable @inline(__always)
    static func exp2Float(_ x: Float) -> Float { libmExp2Public(x) }

    /// Merges a second normalised partial result into the first, row by row, in place.
    ///
    /// Each side is a normalised output `O = Σ_j softmax_j · v_j` over its own keys plus that set's
    /// log-sum-exp `lse = ln Σ_j exp(scale·q·k_j)` (natural log, scaled scores). The result is the output and
    /// LSE over the union of the two key sets. A side with `lse = -inf` (no key) contributes nothing; if both
    /// are `-inf` the row stays 0 with `lse = -inf`. This is what a runtime uses to combine per-rank partials.
    ///
    /// - Parameters:
    ///   - output: `rows × dim` row-major, the first partial; receives the merged output.
    ///   - lse: `rows` values, the first partial's LSE; receives the merged LSE.
    ///   - other: `rows × dim` row-major, the second partial.
    ///   - otherLSE: `rows` values.
    public static func mergePartials(
        output: UnsafeMutablePointer<Float>, lse: UnsafeMutablePointer<Float>,
        other: UnsafePointer<Float>, otherLSE: UnsafePointer<Float>, rows: Int, dim: Int
    ) {
        let log2e: Float = 1.442_695_040_888_963_4
        for r in 0..<rows {
            // A normalised side is the state (m = lse·log2 e, l = 1, O).
            let w = mergeWeights(lse[r] * log2e, otherLSE[r] * log2e)
            let l = w.alpha + w.beta
            let inv: Float = l > 0 ? 1 / l : 0
            let a = w.alpha * inv, b = w.beta * inv
            let o = output + r * dim, p = other + r * dim
            for d in 0..<dim { o[d] = a * o[d] + b * p[d] }
            lse[r] = l > 0 ? (w.m + libmLog2(l)) / log2e : -.infinity
        }
    }

    /// Merges the partial `(other, otherLSE)` into `(output, lse)` (shapes `[H, N, D]` and `[H·N]`).
    public static func mergePartials(output: inout Tensor3, lse: inout [Float], other: Tensor3, otherLSE: [Float]) {
        precondition(output.shape == other.shape, "mergePartials: shapes \(output.shape) and \(other.shape)")
        precondition(lse.count == output.heads * output.rows && otherLSE.count == lse.count,
                     "mergePartials: LSE must hold heads·rows values")
        let rows = output.heads * output.rows, dim = output.dim
        guard rows > 0, dim > 0 else { return }
        output.data.withUnsafeMutableBufferPointer { o in
            lse.withUnsafeMutableBufferPointer { l in
                other.data.withUnsafeBufferPointer { p in
                    otherLSE.withUnsafeBufferPointer { pl in
                        mergePartials(output: o.baseAddress!, lse: l.baseAddress!, other: p.baseAddress!,
                                      otherLSE: pl.baseAddress!, rows: rows, dim: dim)
                    }
                }
            }
        }
    }
}

@usableFromInline func libmExp2Public(_ x: Float) -> Float { libmExp2(x) }
