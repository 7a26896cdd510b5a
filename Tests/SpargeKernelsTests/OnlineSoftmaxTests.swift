import SpargeKernels
import SpargeTestSupport
import XCTest

final class OnlineSoftmaxTests: XCTestCase {
    func testOutputAndLSEAgainstDouble() throws {
        for (seed, causal) in [(UInt64(11), false), (12, true)] {
            var g = SeededGenerator(seed: seed)
            let q = Tensor3.random(heads: 2, rows: 150, dim: 32, scale: 2, using: &g)
            let k = Tensor3.random(heads: 1, rows: 150, dim: 32, using: &g)
            let v = Tensor3.random(heads: 1, rows: 150, dim: 32, using: &g)
            let config = SpargeConfig(causal: causal)
            let mask = randomMask(heads: 2, tokens: 150, config: config, density: 0.5, using: &g)
            let ref = doubleAttention(q: q, k: k, v: v, mask: mask, config: config)
            let r = try SparseAttention.forward(q: q, k: k, v: v, mask: mask, config: config, threads: 2)
            // Float accumulation over ≤ 150 keys against Double: ~1e-7 relative per term.
            XCTAssertLessThanOrEqual(relativeL1(r.output.data, ref.output.map(Float.init)), 1e-5, "causal=\(causal)")
            for i in r.lse.indices {
                // LSE is O(1..10); Float rounding of m + log2(l) and of the scores: 1e-5 absolute is ample.
                XCTAssertEqual(Double(r.lse[i]), ref.lse[i], accuracy: 1e-5, "row \(i) causal=\(causal)")
            }
        }
    }

    func testMergingTwoHalvesEqualsTheWhole() throws {
        var g = SeededGenerator(seed: 21)
        let n = 200
        let q = Tensor3.random(heads: 2, rows: n, dim: 24, using: &g)
        let k = Tensor3.random(heads: 2, rows: n, dim: 24, using: &g)
        let v = Tensor3.random(heads: 2, rows: n, dim: 24, using: &g)
        let config = SpargeConfig(causal: true)
        let nq = 2, nk = 4
        // Split the key blocks into two disjoint halves (even / odd blocks) and merge the partials.
        var even = DenseMaskBits(heads: 2, keyBlocks: nk, queryBlocks: Array(0..<nq))
        var odd = even
        for h in 0..<2 { for r in 0..<nq { for j in 0..<nk { if j % 2 == 0 { even[h, r, j] = true } else { odd[h, r, j] = true } } } }
        var a = try SparseAttention.forward(q: q, k: k, v: v, mask: even.mask, config: config)
        let b = try SparseAttention.forward(q: q, k: k, v: v, mask: odd.mask, config: config)
        let whole = try SparseAttention.forward(q: q, k: k, v: v, mask: nil, config: config)
        OnlineSoftmax.mergePartials(output: &a.output, lse: &a.lse, other: b.output, otherLSE: b.lse)
        // Exact in real arithmetic; Float rounding of two weights and one division per element.
        XCTAssertLessThanOrEqual(relativeL1(a.output.data, whole.output.data), 1e-6)
        for i in a.lse.indices { XCTAssertEqual(a.lse[i], whole.lse[i], accuracy: 1e-5, "row \(i)") }
        // Causal: the first query row sees only key 0 (even half); its odd partial is empty (-inf) and the
        // merge must keep the even side untouched rather than produce NaN.
        XCTAssertEqual(b.lse[0], -.infinity)
        XCTAssertTrue(a.output.data.allSatisfy { $0.isFinite })
    }

    func testMergeWeightsOfEmptySides() {
        let both = OnlineSoftmax.mergeWeights(-.infinity, -.infinity)
        XCTAssertEqual(both.m, -.infinity)
        XCTAssertEqual(both.alpha, 0)
        XCTAssertEqual(both.beta, 0)
        let one = OnlineSoftmax.mergeWeights(-.infinity, 3)
        XCTAssertEqual(one.m, 3)
        XCTAssertEqual(one.alpha, 0)
        XCTAssertEqual(one.beta, 1)
    }
}
