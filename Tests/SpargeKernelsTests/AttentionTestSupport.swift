import Foundation
import SpargeKernels
import SpargeTestSupport

/// Attention in Double over the blocks of `mask` (nil = all), token-level causal where `config.causal`:
/// the output and the row LSE (natural log of the scaled scores). Small shapes only.
func doubleAttention(q: Tensor3, k: Tensor3, v: Tensor3, mask: BlockMask?, config: SpargeConfig)
    -> (output: [Double], lse: [Double]) {
    let n = q.rows, d = q.dim, group = q.heads / k.heads
    let scale = Double(config.softmaxScale(headDim: d))
    var out = [Double](repeating: 0, count: q.heads * n * d)
    var lse = [Double](repeating: -.infinity, count: q.heads * n)
    for h in 0..<q.heads {
        let kh = h / group
        for r in 0..<n {
            var s = [Double](repeating: -.infinity, count: n)
            for c in 0..<n {
                if config.causal && c > r { continue }
                if let mask, !mask[h, r / config.blockQ, c / config.blockK] { continue }
                var dot = 0.0
                for i in 0..<d { dot += Double(q[h, r, i]) * Double(k[kh, c, i]) }
                s[c] = dot * scale
            }
            let m = s.max()!
            guard m > -.infinity else { continue }
            var sum = 0.0
            for c in 0..<n where s[c] > -.infinity {
                let p = exp(s[c] - m)
                sum += p
                for i in 0..<d { out[(h * n + r) * d + i] += p * Double(v[kh, c, i]) }
            }
            for i in 0..<d { out[(h * n + r) * d + i] /= sum }
            lse[h * n + r] = m + log(sum)
        }
    }
    return (out, lse)
}

/// A mask with each block on with probability `density`, and at least one block per row.
func randomMask(heads: Int, tokens: Int, config: SpargeConfig, density: Double,
                using g: inout SeededGenerator) -> BlockMask {
    let nq = (tokens + config.blockQ - 1) / config.blockQ, nk = (tokens + config.blockK - 1) / config.blockK
    var mask = DenseMaskBits(heads: heads, keyBlocks: nk, queryBlocks: Array(0..<nq))
    for h in 0..<heads {
        for r in 0..<nq {
            // Block-causal rule of the mask predictor: key block j is allowed iff j < (r+1)·BQ/BK.
            let allowed = config.causal ? Swift.min(nk, ((r + 1) * config.blockQ + config.blockK - 1) / config.blockK) : nk
            for j in 0..<allowed where Double.random(in: 0..<1, using: &g) < density { mask[h, r, j] = true }
            mask[h, r, Int.random(in: 0..<allowed, using: &g)] = true
        }
    }
    return mask.mask
}
