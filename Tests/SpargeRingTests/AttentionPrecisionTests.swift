import SpargeTestSupport
import SpargeWorkloads
import XCTest
@testable import SpargeRing

/// The CPU in every precision and with every kernel set this CPU runs: a 16-bit precision on fp32 products is
/// the fp32 computation on rounded inputs, bit for bit (bf16 on bf16 products also rounds P: Bf16TileTests
/// holds those to their twin), and its error against Double attention on the unrounded inputs (same mask) is
/// what the rounding costs — on the llm, video and random workloads and on the MiniLM fixtures.
final class AttentionPrecisionTests: XCTestCase {
    static let kernelSets = CPUISA.allCases.filter(\.isSupported)

    /// (name, q, k, v, causal): N = 700 (a partial last block), GQA on the generated workloads.
    static func inputs() throws -> [(String, Tensor3, Tensor3, Tensor3, Bool)] {
        var all: [(String, Tensor3, Tensor3, Tensor3, Bool)] = []
        for workload in Workload.allCases {
            let shape = WorkloadShape(queryHeads: 2, kvHeads: 1, seqLen: 700, headDim: 64)
            let (q, k, v) = try WorkloadGenerator(workload, shape: shape, seed: 11).generate(rows: [0..<700])
            all.append((workload.rawValue, q, k, v, workload == .llm))
        }
        if let q = try? Fixtures.tensor("minilm/layer1_q.npy") {
            all.append(("minilm layer 1", q, try Fixtures.tensor("minilm/layer1_k.npy"),
                        try Fixtures.tensor("minilm/layer1_v.npy"), false))
        } else {
            print("AttentionPrecisionTests: ../shared/fixtures not found; the MiniLM case is skipped")
        }
        return all
    }

    /// Largest relative L1 against Double attention on the unrounded inputs, per precision. fp32: a few
    /// 1e-7 (summation order and the polynomial exp2). bf16 rounds each input to 2⁻⁹ relative on average
    /// (2⁻⁸ at most); the output error is of that order, measured 2e-3…4e-3: 1e-2 is the bound.
    /// fp16 has three more bits: 8× smaller. int8 (SageAttention's Q·Kᵀ, V in bf16): the 1e-2.
    static let bounds: [AttentionPrecision: Double] = [.fp32: 1e-5, .bf16: 1e-2, .fp16: 1.5e-3, .int8: 1e-2]

    func testEveryPrecisionAgainstTheDoubleReference() throws {
        for (name, q, k, v, causal) in try Self.inputs() {
            let config = SpargeConfig(simThreshold: 0.3, selection: .cdf(0.95), causal: causal)
            let mask = try MaskPredictor.predict(q: q, k: k, config: config)
            let reference = ReferenceAttention.compute(q: q, k: k, v: v, mask: mask, config: config).output
            for isa in Self.kernelSets {
                for precision in AttentionPrecision.allCases {
                    let label = "\(name), \(isa), \(precision)"
                    let r = try SparseAttention.forward(q: q, k: k, v: v, mask: mask, config: config, threads: 2,
                                                        backend: .isa(isa), precision: precision)
                    let error = ErrorMetrics(output: r.output.data, reference: reference).relativeL1
                    XCTAssertLessThanOrEqual(error, Self.bounds[precision]!, label)
                    if precision == .bf16 || precision == .int8 {
                        // Not below 2⁻¹⁴: the inputs really were rounded.
                        XCTAssertGreaterThan(error, 0x1p-14, "\(label): no rounding visible")
                    }
                    let products = TileProducts.chosen(precision: precision, isa: isa, headDim: q.dim)
                    if let format = precision.inputFormat, products == .fp32 {
                        // Exactly the fp32 computation on the rounded inputs (bf16 products also round P:
                        // Bf16TileTests holds them to their twin).
                        let rounded = try SparseAttention.forward(
                            q: q.rounded(to: format), k: k.rounded(to: format), v: v.rounded(to: format), mask: mask,
                            config: config, threads: 2, backend: .isa(isa))
                        XCTAssertEqual(r.output.data, rounded.output.data, "\(label): not fp32 on rounded inputs")
                    }
                }
            }
        }
    }

    /// The scalar twin rounds the same way: the vector tiles against it in bf16 and int8 on fresh random
    /// shapes.
    func testSixteenBitAndInt8VectorAgainstScalarTwin() throws {
        var system = SystemRandomNumberGenerator()
        for _ in 0..<2 {
            let seed = UInt64.random(in: 1...UInt64.max, using: &system)
            let n = Int.random(in: 50...400, using: &system), d = Int.random(in: 1...100, using: &system)
            var g = SeededGenerator(seed: seed)
            let q = Tensor3.random(heads: 2, rows: n, dim: d, using: &g)
            let k = Tensor3.random(heads: 1, rows: n, dim: d, using: &g)
            let v = Tensor3.random(heads: 1, rows: n, dim: d, using: &g)
            let config = SpargeConfig(causal: Bool.random(using: &system))
            for precision in [AttentionPrecision.bf16, .int8] {
                for isa in Self.kernelSets {
                    // The twin of this set's tiles (bf16 on AMX rounds P as its tiles do).
                    let twin = try SparseAttention.forward(q: q, k: k, v: v, mask: nil, config: config,
                                                           backend: .scalarTwin(isa), precision: precision)
                    let r = try SparseAttention.forward(q: q, k: k, v: v, mask: nil, config: config, threads: 2,
                                                        backend: .isa(isa), precision: precision)
                    // Same rounded inputs, different summation order and exp2: a few ulps (AttentionKernelTests);
                    // on AMX tiles also a p that those ulps move across a bf16 boundary (Bf16TileTests).
                    let tolerance = precision == .bf16 && isa.hasBf16Tiles ? 5e-3 : 1e-5
                    XCTAssertLessThanOrEqual(relativeL1(r.output.data, twin.output.data), tolerance,
                                             "seed \(seed) N \(n) D \(d) causal \(config.causal) \(isa) \(precision)")
                }
            }
        }
    }
}
