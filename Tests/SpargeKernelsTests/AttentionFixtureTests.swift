import SpargeKernels
import SpargeTestSupport
import XCTest

/// The forward pass against float64 references made outside the project (`../shared/fixtures`), with every
/// kernel set this CPU runs.
final class AttentionFixtureTests: XCTestCase {
    func testDenseAndSparseAgainstMaskFixtures() throws {
        for c in try Fixtures.maskCases() {
            for isa in AttentionKernelTests.kernelSets {
                let q = try Fixtures.tensor("mask/\(c.name)_q.npy")
                let k = try Fixtures.tensor("mask/\(c.name)_k.npy")
                let v = try Fixtures.tensor("mask/\(c.name)_v.npy")
                XCTAssertEqual(q.heads, c.Hq, c.name)
                XCTAssertEqual(k.heads, c.Hkv, c.name)
                let mask = try Fixtures.mask("mask/\(c.name)_mask.npy")
                let dense = try Fixtures.tensor("mask/\(c.name)_o_dense.npy")
                let sparse = try Fixtures.tensor("mask/\(c.name)_o_sparse.npy")
                // References are float64 rounded to float32; ours accumulates in Float over ≤ 1152 keys: the
                // error is a few 1e-7, so 1e-5 leaves room without hiding a wrong block or mask bit (those cost
                // ≥ 1e-3).
                let d = try SparseAttention.forward(q: q, k: k, v: v, mask: nil, config: c.config, threads: 2, backend: .isa(isa))
                XCTAssertLessThanOrEqual(relativeL1(d.output.data, dense.data), 1e-5, "\(c.name) dense \(isa)")
                let s = try SparseAttention.forward(q: q, k: k, v: v, mask: mask, config: c.config, threads: 2, backend: .isa(isa))
                XCTAssertLessThanOrEqual(relativeL1(s.output.data, sparse.data), 1e-5, "\(c.name) sparse \(isa)")
                // λ = 50 (the default) is off: the few gqa_sink blocks behind the sink whose scores lie more than
                // 2^50 below the running max are computed, and what they add is below Float resolution.
            }
        }
    }

    func testDenseAgainstMiniLMOutputs() throws {
        for layer in 0..<3 {
            for isa in AttentionKernelTests.kernelSets {
                let q = try Fixtures.tensor("minilm/layer\(layer)_q.npy")
                let k = try Fixtures.tensor("minilm/layer\(layer)_k.npy")
                let v = try Fixtures.tensor("minilm/layer\(layer)_v.npy")
                let o = try Fixtures.tensor("minilm/layer\(layer)_o.npy")
                XCTAssertEqual(q.shape, [12, 512, 32])
                let r = try SparseAttention.forward(q: q, k: k, v: v, mask: nil, config: SpargeConfig(), threads: 2,
                                                    backend: .isa(isa))
                // The model's own float32 attention (a different summation order) against ours: both within a
                // few 1e-7 of the exact result.
                XCTAssertLessThanOrEqual(relativeL1(r.output.data, o.data), 1e-5, "layer \(layer) \(isa)")
            }
        }
    }
}
