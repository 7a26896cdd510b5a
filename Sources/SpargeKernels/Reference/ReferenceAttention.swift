import Dispatch
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Attention in Double, restricted to a block mask: the reference every kernel and every rank layout is
/// checked against (the oracle's `masked_attention`).
///
/// - Token-level causal when `config.causal` (key `j` allowed for query `i` iff `j ≤ i`).
/// - Softmax scale `config.scale`, else `1/sqrt(D)` computed in Double.
/// - GQA: query head `h` reads kv head `h / (Hq / Hkv)`.
/// - A query row with no allowed key gets a zero output and `lse = −∞` (the oracle's `nan_to_num(0)`).
/// - O(rows · N · D) per head: meant for tests and for sampled query blocks, not for long runs in full.
public enum ReferenceAttention {
    /// Output `[Hq][rows][Dv]` and natural-log row log-sum-exp `[Hq][rows]` of the scaled scores.
    public typealias Result = (output: [Double], lse: [Double])

    /// Every row of the attention output. `mask == nil` is dense attention.
    public static func compute(q: Tensor3, k: Tensor3, v: Tensor3, mask: BlockMask?, config: SpargeConfig) -> Result {
        compute(q: q, k: k, v: v, mask: mask, config: config, rows: Array(0..<q.rows))
    }

    /// The rows of query blocks `queryBlocks` only (in that order, each block's rows ascending), e.g. a sample
    /// checked at a million tokens. `mask` must hold the rows of those blocks (any order, any other rows).
    public static func compute(
        q: Tensor3, k: Tensor3, v: Tensor3, mask: BlockMask?, config: SpargeConfig, queryBlocks: [Int]
    ) -> Result {
        var rows: [Int] = []
        for i in queryBlocks {
            precondition(i >= 0 && i * config.blockQ < q.rows, "ReferenceAttention: query block \(i) outside the sequence")
            rows += (i * config.blockQ)..<min(q.rows, (i + 1) * config.blockQ)
        }
        return compute(q: q, k: k, v: v, mask: mask, config: config, rows: rows)
    }

    static func compute(q: Tensor3, k: Tensor3, v: Tensor3, mask: BlockMask?, config: SpargeConfig, rows: [Int]) -> Result {
        let (hq, hkv, n, d, dv) = (q.heads, k.heads, q.rows, q.dim, v.dim)
        precondition(k.rows == n && v.rows == n && k.dim == d && v.heads == hkv && hkv > 0 && hq % hkv == 0,
                     "ReferenceAttention: shapes Q \(q.shape), K \(k.shape), V \(v.shape) do not fit")
        let group = hq / hkv
        let scale = config.scale.map(Double.init) ?? 1 / Double(d).squareRoot()
        // Mask row of each query block (-1: not held).
        var maskRow = [Int](repeating: -1, count: (n + config.blockQ - 1) / config.blockQ)
        if let mask {
            precondition(mask.heads == hq && mask.keyBlocks == (n + config.blockK - 1) / config.blockK,
                         "ReferenceAttention: mask shape does not fit the inputs")
            for (r, i) in mask.queryBlocks.enumerated() { maskRow[i] = r }
            for r in rows { precondition(maskRow[r / config.blockQ] >= 0, "ReferenceAttention: mask lacks query block \(r / config.blockQ)") }
        }
        let kd = k.data.map(Double.init), vd = v.data.map(Double.init)
        let maskBits = mask?.denseBits() ?? []
        var output = [Double](repeating: 0, count: hq * rows.count * dv)
        var lse = [Double](repeating: -.infinity, count: hq * rows.count)
        let chunk = 16
        let chunks = (rows.count + chunk - 1) / chunk
        output.withUnsafeMutableBufferPointer { ob in
            lse.withUnsafeMutableBufferPointer { lb in
                kd.withUnsafeBufferPointer { kb in
                    vd.withUnsafeBufferPointer { vb in
                        q.data.withUnsafeBufferPointer { qb in
                          maskBits.withUnsafeBufferPointer { mb in
                            let (o, l, kp, vp, qp) = (ob.baseAddress!, lb.baseAddress!, kb.baseAddress!, vb.baseAddress!, qb.baseAddress!)
                            DispatchQueue.concurrentPerform(iterations: hq * chunks) { item in
                                let h = item / chunks, kvh = h / group
                                let s = UnsafeMutablePointer<Double>.allocate(capacity: n)
                                let qrow = UnsafeMutablePointer<Double>.allocate(capacity: d)
                                defer { s.deallocate(); qrow.deallocate() }
                                let start = (item % chunks) * chunk
                                for ri in start..<min(rows.count, start + chunk) {
                                    let i = rows[ri]
                                    for t in 0..<d { qrow[t] = Double(qp[(h * n + i) * d + t]) }
                                    let bits = mask.map { mb.baseAddress! + (h * $0.rowCount + maskRow[i / config.blockQ]) * $0.keyBlocks }
                                    let last = config.causal ? i + 1 : n
                                    var mx = -Double.infinity
                                    for j in 0..<last {
                                        if let bits, bits[j / config.blockK] == 0 { s[j] = -.infinity; continue }
                                        let kr = kp + (kvh * n + j) * d
                                        var acc = 0.0
                                        for t in 0..<d { acc += qrow[t] * kr[t] }
                                        s[j] = acc * scale
                                        mx = max(mx, s[j])
                                    }
                                    guard mx > -.infinity else { continue }  // no allowed key: zeros, lse −∞
                                    let out = o + (h * rows.count + ri) * dv
                                    var sum = 0.0
                                    for j in 0..<last where s[j] > -.infinity {
                                        let p = exp(s[j] - mx)
                                        sum += p
                                        let vr = vp + (kvh * n + j) * dv
                                        for t in 0..<dv { out[t] += p * vr[t] }
                                    }
                                    for t in 0..<dv { out[t] /= sum }
                                    l[h * rows.count + ri] = mx + log(sum)
                                }
                            }
                          }
                        }
                    }
                }
            }
        }
        return (output, lse)
    }
}
