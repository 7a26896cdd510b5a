import SpargeTestSupport
import XCTest
@testable import SpargeRing

/// K/V stored in 16 bits (`kvFormat`): the CPU computes on the exactly widened values, so the output is the
/// f32 computation on rounded K/V, bit for bit; against the unrounded Double reference the error stays within
/// the first-order bound of the rounding and follows its first-order prediction.
final class KVPrecisionTests: XCTestCase {
    struct Case: CustomStringConvertible {
        let seed: UInt64, n: Int, hq: Int, hkv: Int, d: Int, causal: Bool
        var description: String { "seed \(seed), N \(n), heads \(hq)/\(hkv), D \(d)\(causal ? ", causal" : "")" }
    }

    static var cases: [Case] {
        var g = SystemRandomNumberGenerator()
        return [Case(seed: 1, n: 400, hq: 2, hkv: 1, d: 32, causal: true),
                Case(seed: 2, n: 333, hq: 2, hkv: 2, d: 24, causal: false),
                // drawn afresh on every run
                Case(seed: UInt64.random(in: 3...1_000_000, using: &g), n: Int.random(in: 150...450, using: &g),
                     hq: 2, hkv: 1, d: 8 * Int.random(in: 1...6, using: &g), causal: Bool.random(using: &g))]
    }

    /// Q and K with block structure (so that the mask is sparse), V random.
    func inputs(_ c: Case) -> (Tensor3, Tensor3, Tensor3) {
        var g = SeededGenerator(seed: c.seed)
        return (Tensor3.blockStructured(heads: c.hq, rows: c.n, dim: c.d, using: &g),
                Tensor3.blockStructured(heads: c.hkv, rows: c.n, dim: c.d, using: &g),
                Tensor3.random(heads: c.hkv, rows: c.n, dim: c.d, using: &g))
    }

    func forward(_ q: Tensor3, _ k: Tensor3, _ v: Tensor3, _ c: Case, _ format: StorageFormat) throws -> ForwardResult {
        let config = SpargeConfig(simThreshold: 0.3, selection: .cdf(0.9), causal: c.causal)
        return try ShardedAttention.forward(q: q, k: k, v: v, layout: ShardLayout(seqLen: c.n, ranks: 1, config: config),
                                            config: config, communicator: SingleProcessCommunicator(), threads: 2,
                                            kvFormat: format)
    }

    /// bf16 and f16 storage equal f32 on pre-rounded K/V, exactly: widening is exact and the arithmetic after
    /// it is the same.
    func testSixteenBitStorageIsF32OnRoundedValues() throws {
        for c in Self.cases {
            let (q, k, v) = inputs(c)
            for format in [StorageFormat.bf16, .f16] {
                let stored = try forward(q, k, v, c, format)
                let rounded = try forward(q, k.rounded(to: format), v.rounded(to: format), c, .f32)
                XCTAssertEqual(stored.mask, rounded.mask, "\(c), \(format)")
                XCTAssertEqual(stored.output.data, rounded.output.data, "\(c), \(format): not f32 on rounded values")
            }
        }
    }

    /// Against Double attention on the unrounded inputs, under the same mask. To first order, rounding K and
    /// V changes output row `o` by `Σ_j p_j δv_j + Σ_j p_j (v_j − o) δs_j` (δs_j = scale·q·δk_j, the score
    /// change), so `|δo_d| ≤ Σ_j p_j |δv_jd| + Σ_j p_j |v_jd − o_d| |δs_j|`. The test computes both from the
    /// actual roundings and asserts that the measured relative L1 stays within 1.1× of the bound, and that
    /// the measured change is the predicted one up to 10% of its size plus fp32 noise (second-order terms are
    /// ~2⁻⁸ of the first-order ones): the error is what bf16 rounding explains, and nothing else. It must
    /// also not be below 2⁻¹⁴ relative — bf16 really was used.
    func testBF16ErrorStaysWithinTheRoundingBound() throws {
        for c in Self.cases {
            let (q, k, v) = inputs(c)
            let result = try forward(q, k, v, c, .bf16)
            let (kr, vr) = (k.rounded(to: .bf16), v.rounded(to: .bf16))
            let scale = 1 / Double(c.d).squareRoot(), group = c.hq / c.hkv
            let dense = result.mask.denseBits()
            let nk = result.mask.keyBlocks
            var (error, bound, magnitude, unexplained) = (0.0, 0.0, 0.0, 0.0)
            for h in 0..<c.hq {
                let kvh = h / group
                for i in 0..<c.n {
                    let allowed = (0..<(c.causal ? i + 1 : c.n)).filter { dense[(h * result.mask.rowCount + i / 128) * nk + $0 / 64] != 0 }
                    guard !allowed.isEmpty else { continue }
                    let s = allowed.map { j in (0..<c.d).reduce(0.0) { $0 + Double(q[h, i, $1]) * Double(k[kvh, j, $1]) } * scale }
                    let ds = allowed.map { j in (0..<c.d).reduce(0.0) { $0 + Double(q[h, i, $1]) * Double(kr[kvh, j, $1] - k[kvh, j, $1]) } * scale }
                    let mx = s.max()!
                    let w = s.map { exp($0 - mx) }
                    let total = w.reduce(0, +)
                    let p = w.map { $0 / total }
                    for t in 0..<c.d {
                        let o = zip(p, allowed).reduce(0.0) { $0 + $1.0 * Double(v[kvh, $1.1, t]) }
                        var (b, predicted) = (0.0, 0.0)
                        for (a, j) in allowed.enumerated() {
                            let dv = Double(vr[kvh, j, t] - v[kvh, j, t])
                            b += p[a] * abs(dv) + p[a] * abs(Double(v[kvh, j, t]) - o) * abs(ds[a])
                            predicted += p[a] * dv + p[a] * (Double(v[kvh, j, t]) - o) * ds[a]
                        }
                        let change = Double(result.output[h, i, t]) - o
                        error += abs(change)
                        unexplained += abs(change - predicted)
                        bound += b
                        magnitude += abs(o)
                    }
                }
            }
            let (relative, relativeBound) = (error / magnitude, bound / magnitude)
            XCTAssertLessThanOrEqual(relative, 1.1 * relativeBound, "\(c): error \(relative), bound \(relativeBound)")
            XCTAssertGreaterThan(relative, 0x1p-14, "\(c): error \(relative) is too small for bf16 storage")
            XCTAssertLessThanOrEqual(unexplained, 0.1 * error + 1e-6 * magnitude,
                                     "\(c): the change is not the first-order effect of the rounding")
            print("bf16 K/V, \(c): relative L1 \(relative), first-order bound \(relativeBound), unexplained \(unexplained / magnitude)")
        }
    }
}
