import SpargeKernels
import SpargeTestSupport
import XCTest

/// The Double reference attention against the fixtures' float64 outputs and a real model's output.
final class ReferenceAttentionTests: XCTestCase {
    /// Both sides compute in Double; the fixture was then stored as float32, so every element differs by at
    /// most half a float32 ulp (2⁻²⁴ ≈ 6e-8 relative) plus Double rounding (~1e-15). 1e-6 leaves room for
    /// nothing else: a wrong mask block, a missed causal entry or a wrong scale costs far more.
    static let fixtureTolerance = 1e-6

    func testMaskedAndDenseMatchFixtures() throws {
        for c in try Fixtures.maskCases() {
            let q = try Fixtures.tensor("mask/\(c.name)_q.npy")
            let k = try Fixtures.tensor("mask/\(c.name)_k.npy")
            let v = try Fixtures.tensor("mask/\(c.name)_v.npy")
            let mask = try Fixtures.mask("mask/\(c.name)_mask.npy")
            let sparse = ReferenceAttention.compute(q: q, k: k, v: v, mask: mask, config: c.config)
            let expectedSparse = try Fixtures.tensor("mask/\(c.name)_o_sparse.npy")
            let es = ErrorMetrics(output: expectedSparse.data, reference: sparse.output)
            print("reference \(c.name): sparse rel L1 \(es.relativeL1)")
            XCTAssertLessThanOrEqual(es.relativeL1, Self.fixtureTolerance, "\(c.name): sparse rel L1 \(es.relativeL1)")
            let dense = ReferenceAttention.compute(q: q, k: k, v: v, mask: nil, config: c.config)
            let expectedDense = try Fixtures.tensor("mask/\(c.name)_o_dense.npy")
            let ed = ErrorMetrics(output: expectedDense.data, reference: dense.output)
            XCTAssertLessThanOrEqual(ed.relativeL1, Self.fixtureTolerance, "\(c.name): dense rel L1 \(ed.relativeL1)")
            // The sparse mask must actually change the output, or the comparison above proves nothing.
            let apart = ErrorMetrics(output: expectedDense.data, reference: sparse.output)
            XCTAssertGreaterThan(apart.relativeL1, 100 * Self.fixtureTolerance, "\(c.name): sparse ≈ dense")
        }
    }

    /// all-MiniLM-L6-v2's own float32 attention output against dense Double attention. The model computes
    /// scores, softmax and P·V in float32 over 512 keys: errors of a few float32 ulps accumulate to ~1e-6
    /// relative; 1e-5 is an order above that and far below any real defect (a wrong scale or head: ≥ 1e-2).
    func testDenseMatchesMiniLM() throws {
        for layer in 0..<3 {
            let q = try Fixtures.tensor("minilm/layer\(layer)_q.npy")
            let k = try Fixtures.tensor("minilm/layer\(layer)_k.npy")
            let v = try Fixtures.tensor("minilm/layer\(layer)_v.npy")
            let o = try Fixtures.tensor("minilm/layer\(layer)_o.npy")
            let ref = ReferenceAttention.compute(q: q, k: k, v: v, mask: nil, config: SpargeConfig())
            let e = ErrorMetrics(output: o.data, reference: ref.output)
            print("minilm layer \(layer): rel L1 \(e.relativeL1)")
            XCTAssertLessThanOrEqual(e.relativeL1, 1e-5, "layer \(layer): rel L1 \(e.relativeL1)")
            XCTAssertGreaterThan(e.cosineSimilarity, 1 - 1e-9, "layer \(layer): cosine \(e.cosineSimilarity)")
        }
    }

    /// The per-query-block variant returns exactly the rows of the full computation (same arithmetic).
    func testQueryBlockRowsEqualFullRows() throws {
        for (seed, causal) in [(UInt64(1), false), (2, true)] {
            var g = SeededGenerator(seed: seed)
            let n = 300, d = 16
            let q = Tensor3.random(heads: 4, rows: n, dim: d, using: &g)
            let k = Tensor3.random(heads: 2, rows: n, dim: d, using: &g)
            let v = Tensor3.random(heads: 2, rows: n, dim: d, using: &g)
            let config = SpargeConfig(blockQ: 64, blockK: 32, causal: causal)
            let mask = try MaskPredictor.predict(q: q, k: k, config: config)
            let full = ReferenceAttention.compute(q: q, k: k, v: v, mask: mask, config: config)
            let blocks = [4, 1]  // the partial last block (rows 256..<300) and an inner one
            let part = ReferenceAttention.compute(q: q, k: k, v: v, mask: mask, config: config, queryBlocks: blocks)
            let rows = Array(256..<300) + Array(64..<128)
            for h in 0..<4 {
                for (ri, r) in rows.enumerated() {
                    XCTAssertEqual(part.lse[h * rows.count + ri], full.lse[h * n + r], "seed \(seed) head \(h) row \(r)")
                    for t in 0..<d {
                        XCTAssertEqual(part.output[(h * rows.count + ri) * d + t], full.output[(h * n + r) * d + t],
                                       "seed \(seed) head \(h) row \(r)")
                    }
                }
            }
        }
    }

    /// A row whose blocks are all off gets zeros and lse −∞; a row with keys gets a finite lse.
    func testFullyMaskedRowIsZero() {
        var g = SeededGenerator(seed: 7)
        let q = Tensor3.random(heads: 1, rows: 8, dim: 4, using: &g)
        let k = Tensor3.random(heads: 1, rows: 8, dim: 4, using: &g)
        let v = Tensor3.random(heads: 1, rows: 8, dim: 4, shift: 1, using: &g)
        let config = SpargeConfig(blockQ: 4, blockK: 4)
        var mask = DenseMaskBits(heads: 1, keyBlocks: 2, queryBlocks: [0, 1])
        mask[0, 1, 0] = true
        let r = ReferenceAttention.compute(q: q, k: k, v: v, mask: mask.mask, config: config)
        XCTAssertEqual(Array(r.output[0..<16]), [Double](repeating: 0, count: 16))
        XCTAssertEqual(r.lse[0], -.infinity)
        XCTAssertTrue(r.lse[4].isFinite)
        XCTAssertNotEqual(r.output[16], 0)
    }
}
