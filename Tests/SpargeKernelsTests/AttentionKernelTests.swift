import SpargeKernels
import SpargeTestSupport
import XCTest

/// The vector tile against its scalar twin on fresh random shapes, with every kernel set this CPU runs (the
/// portable one always, so that the path a CPU without AVX2 takes is covered on every machine).
final class AttentionKernelTests: XCTestCase {
    static let kernelSets = CPUISA.allCases.filter(\.isSupported)

    struct Case: CustomStringConvertible {
        var seed: UInt64
        var tokens: Int
        var dim: Int
        var queryHeads = 2
        var kvHeads = 1
        var causal = false
        var density: Double? = nil
        var pvThreshold: Float = 50
        var computeTileQ = 64
        var description: String {
            "seed \(seed) N=\(tokens) D=\(dim) Hq=\(queryHeads) Hkv=\(kvHeads) causal=\(causal) " +
                "density=\(density.map { "\($0)" } ?? "dense") λ=\(pvThreshold) tile=\(computeTileQ)"
        }
    }

    /// Shapes chosen so that N is not a multiple of 64 or 128 (partial query tiles and key blocks), D covers
    /// 16…128, values that are not a multiple of 16 (40, 48) or of 4 (22: the 1-wide P·V tail), key blocks
    /// whose length is not a multiple of 4 (N = 77, 131: the 1-key score tail), with causal, random masks,
    /// GQA and tiles of 128 rows (two lane groups) and of 32 rows (half the lanes unused).
    static let cases: [Case] = [
        Case(seed: 1, tokens: 77, dim: 16),
        Case(seed: 2, tokens: 200, dim: 32, causal: true),
        Case(seed: 3, tokens: 150, dim: 64, density: 0.5),
        Case(seed: 4, tokens: 190, dim: 128, queryHeads: 1, causal: true, density: 0.6),
        Case(seed: 5, tokens: 131, dim: 40, queryHeads: 4, kvHeads: 2, density: 0.4),
        Case(seed: 6, tokens: 100, dim: 22, causal: true),
        Case(seed: 7, tokens: 257, dim: 32, queryHeads: 1, causal: true, density: 0.5, computeTileQ: 128),
        Case(seed: 8, tokens: 64, dim: 16, queryHeads: 1),
        Case(seed: 10, tokens: 150, dim: 48, causal: true, density: 0.7, computeTileQ: 32),
        Case(seed: 9, tokens: 1, dim: 16, queryHeads: 1, causal: true),
    ]

    func run(_ c: Case, isa: CPUISA, skewed: Bool = false) throws -> (vector: (Tensor3, [Float], AttentionStatistics),
                                                    scalar: (Tensor3, [Float], AttentionStatistics)) {
        var g = SeededGenerator(seed: c.seed)
        var q = Tensor3.random(heads: c.queryHeads, rows: c.tokens, dim: c.dim, using: &g)
        var k = Tensor3.random(heads: c.kvHeads, rows: c.tokens, dim: c.dim, using: &g)
        let v = Tensor3.random(heads: c.kvHeads, rows: c.tokens, dim: c.dim, using: &g)
        if skewed {
            // Every query leans on one direction that only the first key block carries, so the later blocks'
            // scores fall far below the running max and the λ rule has something to skip.
            for i in q.data.indices { q.data[i] += 1 }
            for h in 0..<c.kvHeads { for r in 0..<min(64, c.tokens) { for i in 0..<c.dim { k[h, r, i] += 3 } } }
        }
        let config = SpargeConfig(pvThreshold: c.pvThreshold, causal: c.causal, computeTileQ: c.computeTileQ)
        let mask = c.density.map { randomMask(heads: c.queryHeads, tokens: c.tokens, config: config, density: $0, using: &g) }
        let a = try SparseAttention.forward(q: q, k: k, v: v, mask: mask, config: config, threads: 2, backend: .isa(isa))
        let b = try SparseAttention.forward(q: q, k: k, v: v, mask: mask, config: config, threads: 1, backend: .scalar)
        return ((a.output, a.lse, a.stats), (b.output, b.lse, b.stats))
    }

    /// Three shapes drawn afresh on every run (the seed is in the failure message, to replay it), beside the
    /// fixed ones above: N in 1…300, D in 1…130, GQA, causal and mask density chosen at random too.
    static func freshCases() -> [Case] {
        var system = SystemRandomNumberGenerator()
        return (0..<3).map { _ in
            let hkv = Int.random(in: 1...2, using: &system)
            return Case(seed: UInt64.random(in: 1...UInt64.max, using: &system),
                        tokens: Int.random(in: 1...300, using: &system), dim: Int.random(in: 1...130, using: &system),
                        queryHeads: hkv * Int.random(in: 1...2, using: &system), kvHeads: hkv,
                        causal: Bool.random(using: &system),
                        density: Bool.random(using: &system) ? Double.random(in: 0.2...0.9, using: &system) : nil,
                        computeTileQ: [32, 64, 128].randomElement(using: &system)!)
        }
    }

    func testVectorMatchesScalarTwin() throws {
        for isa in Self.kernelSets {
            for c in Self.cases + Self.freshCases() {
                let (a, b) = try run(c, isa: isa)
                let label = "\(isa) \(c)"
                // Both compute in Float with different summation orders and exp2 implementations (polynomial
                // vs libm, ≤ 1.3e-7 relative; the portable kernels round multiply and add separately): a few
                // ulps per element, far below 1e-5.
                XCTAssertLessThanOrEqual(relativeL1(a.0.data, b.0.data), 1e-5, label)
                // A row that a random causal mask leaves without keys has lse = −inf in both: the same rows,
                // and the finite values compared as above.
                XCTAssertEqual(a.1.map { $0 == -.infinity }, b.1.map { $0 == -.infinity }, "rows without keys \(label)")
                let finite = a.1.indices.filter { a.1[$0].isFinite && b.1[$0].isFinite }
                XCTAssertLessThanOrEqual(relativeL1(finite.map { a.1[$0] }, finite.map { b.1[$0] }), 1e-5, "LSE \(label)")
                XCTAssertFalse(a.0.data.contains { !$0.isFinite }, "non-finite output \(label)")
                XCTAssertEqual(a.2, b.2, "statistics \(label)")
            }
        }
    }

    func testLambdaRuleSkipsTheSameBlocksAsTheTwin() throws {
        for isa in Self.kernelSets {
            for (i, base) in Self.cases.filter({ $0.tokens >= 100 }).enumerated() {
                var c = base
                c.pvThreshold = 6
                c.seed += 100 * UInt64(i)
                let (a, b) = try run(c, isa: isa, skewed: true)
                XCTAssertGreaterThan(a.2.pvBlocksSkipped, 0, "λ skipped nothing: \(isa) \(c)")
                XCTAssertEqual(a.2, b.2, "statistics \(isa) \(c)")
                // Same skips, so the same sums as in the test above.
                XCTAssertLessThanOrEqual(relativeL1(a.0.data, b.0.data), 1e-5, "\(isa) \(c)")
            }
        }
    }

    /// λ at `SpargeConfig.lambdaOff` is off, not merely large: a key block whose scores lie ~100 log2 units
    /// below the running maximum (which any λ below 100 would skip) is computed by the vector tiles and the
    /// twin, while λ just below the off value skips it in both. (Before the rule was made exact at 50, such a
    /// block was skipped; the GPU kernels take the same switch, `lambda` in their parameters.)
    func testLambdaOffComputesBlocksFarBelowTheRunningMax() throws {
        var g = SeededGenerator(seed: UInt64.random(in: 1...UInt64.max))
        // Rows near +3 everywhere: key block 0 (near +3) scores ≈ 16·9/4·log2 e ≈ +52 in log2 units, key
        // block 1 (near −3) ≈ −52.
        var q = Tensor3.random(heads: 1, rows: 128, dim: 16, using: &g)
        var k = Tensor3.random(heads: 1, rows: 128, dim: 16, using: &g)
        let v = Tensor3.random(heads: 1, rows: 128, dim: 16, using: &g)
        for i in q.data.indices { q.data[i] = 3 + 0.1 * q.data[i] }
        for r in 0..<128 { for i in 0..<16 { k[0, r, i] = (r < 64 ? 3 : -3) + 0.1 * k[0, r, i] } }
        for isa in Self.kernelSets {
            for (threshold, skips) in [(SpargeConfig.lambdaOff, false), (SpargeConfig.lambdaOff - 0.5, true)] {
                let config = SpargeConfig(pvThreshold: threshold)
                let vector = try SparseAttention.forward(q: q, k: k, v: v, mask: nil, config: config, backend: .isa(isa))
                let twin = try SparseAttention.forward(q: q, k: k, v: v, mask: nil, config: config, backend: .scalar)
                for (name, stats) in [("vector", vector.stats), ("twin", twin.stats)] {
                    // Two tiles of 64 rows, each visiting both key blocks.
                    XCTAssertEqual(stats.keyBlocksVisited, 4, "\(name) \(isa) λ=\(threshold)")
                    XCTAssertEqual(stats.pvBlocksSkipped, skips ? 2 : 0, "\(name) \(isa) λ=\(threshold)")
                }
            }
        }
    }

    /// The detected set is the one the process uses by default, a set the CPU lacks is refused with its
    /// name, and the probe of each set measures a positive rate.
    func testKernelSetsAreDetectedAndRefusedByName() throws {
        XCTAssertTrue(CPUISA.detected.isSupported)
        XCTAssertTrue(CPUISA.portable.isSupported)
        XCTAssertEqual(try CPUISA.named("portable"), .portable)
        XCTAssertThrowsError(try CPUISA.named("avx3")) { XCTAssertTrue("\($0)".contains("avx3")) }
        if let missing = CPUISA.allCases.first(where: { !$0.isSupported }) {
            XCTAssertThrowsError(try CPUISA.named(missing.rawValue)) { XCTAssertTrue("\($0)".contains(missing.rawValue)) }
            let q = Tensor3(heads: 1, rows: 4, dim: 8, data: [Float](repeating: 1, count: 32))
            XCTAssertThrowsError(try SparseAttention.forward(q: q, k: q, v: q, mask: nil, config: SpargeConfig(),
                                                             backend: .isa(missing)))
        }
        for isa in Self.kernelSets {
            XCTAssertGreaterThan(PeakFlops.measure(threads: 1, seconds: 0.01, isa: isa), 0, "\(isa)")
            XCTAssertGreaterThan(PeakFlops.measure(threads: 1, seconds: 0.01, isa: isa, products: .int8), 0, "\(isa) int8")
            if isa.hasBf16Tiles {
                XCTAssertGreaterThan(PeakFlops.measure(threads: 1, seconds: 0.01, isa: isa, products: .bf16Tiles), 0, "\(isa) bf16")
            }
        }
    }

    func testFullyMaskedRowsGiveZeroAndMinusInfinity() throws {
        // A tile whose rows see no key: an empty mask row (allowed here; the predictor keeps ≥ 1 block).
        let config = SpargeConfig()
        var g = SeededGenerator(seed: 42)
        let q = Tensor3.random(heads: 1, rows: 130, dim: 16, using: &g)
        let k = Tensor3.random(heads: 1, rows: 130, dim: 16, using: &g)
        var mask = DenseMaskBits(heads: 1, keyBlocks: 3, queryBlocks: [0, 1])
        mask[0, 1, 2] = true
        let r = try SparseAttention.forward(q: q, k: k, v: k, mask: mask.mask, config: config)
        XCTAssertTrue(r.output.data[0..<(128 * 16)].allSatisfy { $0 == 0 })
        XCTAssertTrue(r.lse[0..<128].allSatisfy { $0 == -.infinity })
        XCTAssertTrue(r.output.data[(128 * 16)...].allSatisfy { $0.isFinite && $0 != 0 })
    }
}
