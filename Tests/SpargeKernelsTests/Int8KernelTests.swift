import CSpargeKernels
import SpargeTestSupport
import XCTest
@testable import SpargeKernels

/// `AttentionPrecision.int8`'s integer micro-kernels against their scalar twins (plain loops over the same
/// integers) on fresh random shapes with every tail, with every kernel set: the portable one (what a CPU
/// without AVX2 runs, forced with SPARGE_CPU_ISA=portable in the CLI), AVX2 where this CPU has it, and the
/// AVX-512 blocking compiled for AVX2, and the AVX-512 sets (two 256-bit vpmaddwd, and VNNI's vpdpwssd, its
/// scores in vpdpbusd's u8 × s8 quads) where
/// this CPU has them (`TileKernelSets`). Integer sums are exact, so every set must give the same bits.
final class Int8KernelTests: XCTestCase {

    /// `(lo, hi)` as the kernels' packed int16 pair.
    func pair(_ lo: Int, _ hi: Int) -> Int32 {
        Int32(bitPattern: UInt32(UInt16(bitPattern: Int16(lo))) | UInt32(UInt16(bitPattern: Int16(hi))) << 16)
    }

    /// `[outer][⌈count/2⌉]` words (in rows `rowStride` apart) of the pairs `(x(o, 2j), x(o, 2j+1))`, 0 past
    /// `count`, stored at `j·rowStride + o`: the kernels' packed layouts.
    func packed(outer: Int, count: Int, rowStride: Int, _ x: (Int, Int) -> Int) -> [Int32] {
        var words = [Int32](repeating: 0, count: (count + 1) / 2 * rowStride)
        for j in 0..<((count + 1) / 2) {
            for o in 0..<outer { words[j * rowStride + o] = pair(x(o, 2 * j), 2 * j + 1 < count ? x(o, 2 * j + 1) : 0) }
        }
        return words
    }

    /// A random shape: lanes, D and a key count covering the 6-, 4-, 2- and 1-key tails and odd pairs.
    func shape(_ g: inout SeededGenerator) -> (lanes: Int, stride: Int, dim: Int, keyCount: Int) {
        let lanes = 64 * Int.random(in: 1...2, using: &g)
        return (lanes, lanes + 16, Int.random(in: 1...140, using: &g), Int.random(in: 1...64, using: &g))
    }

    /// Random shapes, and first the edges of the VNNI set's quads (`tile_kernels_int8.h`): D = 256 is the most
    /// they take on the stack and 258 falls back to the pairs, 254 and 253 end in a padded quad, 128 keys are
    /// one chunk and 129 to 131 cross into a second.
    func testScoresAreTheExactIntegerSums() {
        var system = SystemRandomNumberGenerator()
        let edges = [(64, 256, 130), (64, 258, 3), (128, 255, 129), (64, 254, 131), (64, 253, 128)]
        for trial in 0..<(edges.count + 20) {
            let seed = UInt64.random(in: 1...UInt64.max, using: &system)
            var g = SeededGenerator(seed: seed)
            let (lanes, stride, dim, keyCount) = trial < edges.count
                ? (edges[trial].0, edges[trial].0 + 16, edges[trial].1, edges[trial].2) : shape(&g)
            let pairs = (dim + 1) / 2
            let q = (0..<(lanes * dim)).map { _ in Int.random(in: -127...127, using: &g) }  // [lane][i]
            let k = (0..<(keyCount * dim)).map { _ in Int.random(in: -127...127, using: &g) }
            let packedQ = packed(outer: lanes, count: dim, rowStride: stride) { q[$0 * dim + $1] }
            // Keys are [key][pair]: the transpose of the helper's [pair][key].
            let byPair = packed(outer: keyCount, count: dim, rowStride: keyCount) { k[$0 * dim + $1] }
            let packedK = (0..<(keyCount * pairs)).map { byPair[$0 % pairs * keyCount + $0 / pairs] }
            // The twin: Σ_i q·k in Int, exactly representable as Float (|sum| ≤ 258·127² < 2²⁴).
            var expected = [Float](repeating: 0, count: keyCount * stride)
            for c in 0..<keyCount {
                for r in 0..<lanes { expected[c * stride + r] = Float((0..<dim).reduce(0) { $0 + q[r * dim + $1] * k[c * dim + $1] }) }
            }
            let ones = [Float](repeating: 1, count: lanes)
            for (name, kernels) in TileKernelSets.runnable {
                var scores = [Float](repeating: 0, count: keyCount * stride)
                var rowMax = [Float](repeating: -.infinity, count: lanes)
                kernels.int8Scores(packedQ, stride, lanes, ones, packedK, pairs, keyCount, 1, nil, &scores, &rowMax, nil, nil, 0)
                let label = "\(name): seed \(seed), lanes \(lanes), D \(dim), keys \(keyCount)"
                for c in 0..<keyCount {
                    XCTAssertEqual(Array(scores[(c * stride)..<(c * stride + lanes)]),
                                   Array(expected[(c * stride)..<(c * stride + lanes)]), label)
                }
                for r in 0..<lanes {
                    XCTAssertEqual(rowMax[r], (0..<keyCount).map { expected[$0 * stride + r] }.max()!, label)
                }
            }
        }
    }

    /// The AMX set's int8 scores on TDPBSSD tiles (emulated in C on any AVX2 machine; the instruction itself
    /// where this CPU has AMX-INT8) against the vector kernels of a set compiled with the same fused roundings,
    /// with lane scales, a key scale, the K mean and row maxima already under way: the same integer sums and
    /// the same float arithmetic (int8_score_terms.h), so the same bits; and the same for the VNNI set's u8 × s8
    /// quads (vpdpbusd) against the plain AVX-512 set's pairs. D from 1 to 200 crosses the tiles'
    /// 64-byte rows and their zero padding, up to 100 keys the 32-key groups, up to 192 lanes the 64-lane groups;
    /// fixed edges first.
    func testTileScoresEqualTheVectorKernelsBitForBit() throws {
        #if arch(x86_64)
        guard CPUISA.avx2.isSupported else { throw XCTSkip("the emulated AMX int8 scores are compiled for AVX2") }
        var pairsOfKernels = [("AMX emulated", sparge_int8_scores_amx_emulated()!, CPUISA.avx2.kernels.int8Scores!)]
        if CPUISA.amx.isSupported {
            pairsOfKernels.append(("AMX", CPUISA.amx.kernels.int8Scores!, CPUISA.avx512bf16.kernels.int8Scores!))
        }
        // VNNI's quads (vpdpbusd) against the plain AVX-512 set's pairs: the same sums, and float terms compiled
        // with the same fused roundings.
        if CPUISA.avx512bf16.isSupported {
            pairsOfKernels.append(("VNNI quads", CPUISA.avx512bf16.kernels.int8Scores!, CPUISA.avx512.kernels.int8Scores!))
        }
        defer { if CPUISA.amx.isSupported { CPUISA.amx.kernels.bf16.release?() } }  // the test thread's tiles
        var system = SystemRandomNumberGenerator()
        // The edges of the tiles' 64-byte rows and 32-key groups (no keys at all, and no K mean, included), then
        // random shapes.
        let edges = [(64, 0), (1, 1), (63, 31), (64, 32), (65, 33), (128, 64), (129, 65), (127, 97), (130, 96), (200, 100)]
        for trial in 0..<(edges.count + 20) {
            let seed = UInt64.random(in: 1...UInt64.max, using: &system)
            var g = SeededGenerator(seed: seed)
            let lanes = 64 * Int.random(in: 1...3, using: &g), stride = lanes + 16
            let (dim, keyCount) = trial < edges.count ? edges[trial]
                : (Int.random(in: 1...200, using: &g), Int.random(in: 1...100, using: &g))
            let pairs = (dim + 1) / 2
            let q = (0..<(lanes * dim)).map { _ in Int.random(in: -127...127, using: &g) }
            let k = (0..<(keyCount * dim)).map { _ in Int.random(in: -127...127, using: &g) }
            let packedQ = packed(outer: lanes, count: dim, rowStride: stride) { q[$0 * dim + $1] }
            let byPair = packed(outer: keyCount, count: dim, rowStride: keyCount) { k[$0 * dim + $1] }
            let packedK = (0..<(keyCount * pairs)).map { byPair[$0 % pairs * keyCount + $0 / pairs] }
            let laneScale = (0..<lanes).map { _ in Float.random(in: 1e-4...1e-2, using: &g) }
            let keyMean = (0..<(2 * pairs)).map { i in i < dim ? Float(g.normal()) : 0 }
            let keyScale = Float.random(in: 1e-3...1e-1, using: &g)
            let startMax = (0..<lanes).map { _ in Bool.random(using: &g) ? -Float.infinity : Float(g.normal()) }
            for (name, tiles, vectors) in pairsOfKernels {
                var results: [([Float], [Float])] = []
                for kernel in [tiles, vectors] {
                    var scores = [Float](repeating: .nan, count: keyCount * stride), rowMax = startMax
                    let mean: [Float]? = trial % 3 == 1 ? nil : keyMean
                    kernel(packedQ, stride, lanes, laneScale, packedK, pairs, keyCount, keyScale, mean, &scores, &rowMax,
                           nil, nil, 0)
                    let rows = (0..<keyCount).flatMap { c in scores[(c * stride)..<(c * stride + lanes)] }
                    results.append((rows, rowMax))
                }
                let label = "\(name): seed \(seed), lanes \(lanes), D \(dim), keys \(keyCount)"
                XCTAssertEqual(results[0].0.map(\.bitPattern), results[1].0.map(\.bitPattern), label)
                XCTAssertEqual(results[0].1.map(\.bitPattern), results[1].1.map(\.bitPattern), label)
            }
        }
        #else
        throw XCTSkip("the AMX int8 scores are x86-64 only")
        #endif
    }

    /// Values so small that max/127 rounds among the subnormals (or underflows to 0) still quantize within
    /// ±127 (Q, K) and ±2047 (V): the VNNI quads and AMX tiles hold K and biased Q in a byte, and P·V's sums
    /// are bounded by |v| ≤ 2047. Before, 190·2⁻¹⁴⁹ against a scale of 2⁻¹⁴⁹ gave 190, and a scale that
    /// underflowed divided by zero.
    func testQuantizationStaysWithinItsLimitsForSubnormalValues() {
        let tiny = { (ulps: UInt32) in Float(bitPattern: ulps) }  // ulps · 2⁻¹⁴⁹
        for row: [Float] in [[tiny(190), -tiny(190), tiny(1), 0], [tiny(1), -tiny(1), 0, tiny(1)],
                             [tiny(3000), tiny(2999), -tiny(17), tiny(5)]] {
            var n = [Int16](repeating: 99, count: row.count)
            let scale = sparge_quantize(row, row.count, row.count, nil, 127, &n)
            XCTAssertTrue(n.allSatisfy { abs(Int($0)) <= 127 }, "\(row): \(n) with scale \(scale)")
            if scale == 0 { XCTAssertEqual(n, [Int16](repeating: 0, count: row.count), "\(row)") }
            // The same values as a block's K and V (4 rows of D = 1): V's integers, as pairs of keys, within ±2047.
            var keys = [Int32](repeating: 0, count: row.count), values = [Int32](repeating: 0, count: (row.count + 1) / 2)
            var mean = [Float](repeating: 0, count: 2), keyScale: Float = 0, valueScale: Float = 0
            sparge_quantize_block(row, row, row.count, 1, &keys, &mean, &keyScale, &values, &valueScale)
            for word in values {
                for half in [Int16(truncatingIfNeeded: word), Int16(truncatingIfNeeded: word >> 16)] {
                    XCTAssertLessThanOrEqual(abs(Int(half)), 2047, "\(row): V's integers \(values)")
                }
            }
        }
    }

    func testValueProductsAreTheExactIntegerSumsScaled() {
        var system = SystemRandomNumberGenerator()
        for _ in 0..<20 {
            let seed = UInt64.random(in: 1...UInt64.max, using: &system)
            var g = SeededGenerator(seed: seed)
            let (lanes, stride, dim, keyCount) = shape(&g)
            // Extremes included: P up to 1 (16383) and |V| up to 2047 on every key reach 64·16383·2047 < 2³¹.
            let extreme = Bool.random(using: &g)
            let p = (0..<(keyCount * lanes)).map { _ in extreme ? 16383 : Int.random(in: 0...16383, using: &g) }
            let v = (0..<(keyCount * dim)).map { _ in extreme ? 2047 : Int.random(in: -2047...2047, using: &g) }
            let scale = (0..<dim).map { _ in Float.random(in: 1e-4...1, using: &g) }
            let packedP = packed(outer: lanes, count: keyCount, rowStride: stride) { p[$1 * lanes + $0] }
            let packedV = packed(outer: dim, count: keyCount, rowStride: dim) { v[$1 * dim + $0] }
            // α = 0 drops the old accumulator; then each output is one rounding of (Σ in Int) · scale / 16383.
            let alpha = [Float](repeating: 0, count: lanes)
            var expected = [Float](repeating: 0, count: dim * lanes)
            for i in 0..<dim {
                for r in 0..<lanes {
                    let sum = (0..<keyCount).reduce(0) { $0 + p[$1 * lanes + r] * v[$1 * dim + i] }
                    expected[i * lanes + r] = Float(Int32(sum)) * (scale[i] * (1 / AttentionPrecision.probabilityLevels))
                }
            }
            for (name, kernels) in TileKernelSets.runnable {
                var output = (0..<(dim * lanes)).map { _ in Float.random(in: -1...1, using: &g) }
                kernels.int8PV(packedP, stride, lanes, packedV, dim, keyCount, scale, alpha, &output)
                XCTAssertEqual(output, expected, "\(name): seed \(seed), lanes \(lanes), D \(dim), keys \(keyCount)")
            }
        }
    }

    /// P's fixed point: round(16383·2^(S − m)) per lane against the twin (libm's exp2; the kernels' polynomial
    /// is within a few ulps of it, so a value may land one step off next to a tie), the running sums to fp32.
    func testSoftmaxQuantizesProbabilitiesAsDefined() {
        var system = SystemRandomNumberGenerator()
        for _ in 0..<10 {
            let seed = UInt64.random(in: 1...UInt64.max, using: &system)
            var g = SeededGenerator(seed: seed)
            let (lanes, stride, _, keyCount) = shape(&g)
            let scores = (0..<(keyCount * stride)).map { _ in Float.random(in: -12...4, using: &g) }
            var blockMax = [Float](repeating: -.infinity, count: lanes)
            for c in 0..<keyCount { for r in 0..<lanes { blockMax[r] = max(blockMax[r], scores[c * stride + r]) } }
            let previousMax = (0..<lanes).map { _ in Float.random(in: -2...6, using: &g) }
            for (name, kernels) in TileKernelSets.runnable {
                var s = scores, alphaOut = blockMax, runningMax = previousMax
                var sums = [Float](repeating: 2, count: lanes)
                kernels.int8Softmax(&s, stride, lanes, keyCount, &alphaOut, &runningMax, &sums)
                let packed = s.withUnsafeBytes { Array($0.bindMemory(to: Int32.self)) }
                for r in 0..<lanes {
                    let m = max(previousMax[r], blockMax[r])
                    var sum: Float = 0
                    for c in 0..<keyCount {
                        let expected = (libmExp2(scores[c * stride + r] - m) * 16383).rounded(.toNearestOrEven)
                        let word = packed[c / 2 * stride + r]
                        let got = Float(Int16(truncatingIfNeeded: word >> (16 * (c % 2))))
                        XCTAssertLessThanOrEqual(abs(got - expected), 1, "\(name): seed \(seed), key \(c), lane \(r)")
                        sum += got
                    }
                    if keyCount % 2 == 1 { XCTAssertEqual(packed[keyCount / 2 * stride + r] >> 16, 0, "\(name): pad") }
                    let expectedSum = libmExp2(previousMax[r] - m) * 2 + sum / 16383
                    XCTAssertEqual(sums[r], expectedSum, accuracy: 1e-5 * expectedSum, "\(name): seed \(seed), lane \(r)")
                }
            }
        }
    }

    /// The block quantization against the definition written out (AttentionPrecision.int8): mean, one scale,
    /// round to nearest even; values per dimension to ±2047. Exact.
    func testBlockQuantizationFollowsTheDefinition() {
        var system = SystemRandomNumberGenerator()
        for _ in 0..<10 {
            let seed = UInt64.random(in: 1...UInt64.max, using: &system)
            var g = SeededGenerator(seed: seed)
            let rows = Int.random(in: 1...64, using: &g), dim = Int.random(in: 1...140, using: &g)
            let keys = (0..<(rows * dim)).map { _ in Float.random(in: -3...5, using: &g) }
            var values = (0..<(rows * dim)).map { _ in Float.random(in: -2...2, using: &g) }
            for r in 0..<rows { values[r * dim] = 0 }  // a column of zeros keeps scale 0
            let block = QuantizedKeyValueBlock(blockK: 64, headDim: dim)
            block.fill(keys: keys, values: values, rows: rows)
            var k = [Float](repeating: 0, count: rows * dim), v = k
            block.dequantize(keys: &k, values: &v)
            var mean = [Float](repeating: 0, count: dim)
            for r in 0..<rows { for i in 0..<dim { mean[i] += keys[r * dim + i] } }
            for i in 0..<dim { mean[i] /= Float(rows) }
            let largest = (0..<(rows * dim)).map { abs(keys[$0] - mean[$0 % dim]) }.max()!
            let keyScale = largest / 127
            for x in 0..<(rows * dim) {
                let m = mean[x % dim]
                // One row (or equal rows) is its own mean: scale 0, every key the mean.
                let n = keyScale > 0 ? ((keys[x] - m) / keyScale).rounded(.toNearestOrEven) : 0
                XCTAssertEqual(k[x], m + keyScale * n, "seed \(seed), rows \(rows)")
            }
            for i in 0..<dim {
                let s = (0..<rows).map { abs(values[$0 * dim + i]) }.max()! / 2047
                for r in 0..<rows {
                    let n = s > 0 ? (values[r * dim + i] / s).rounded(.toNearestOrEven) : 0
                    XCTAssertEqual(v[r * dim + i], s * n, "seed \(seed), row \(r), dimension \(i)")
                }
            }
        }
    }

    /// The whole int8 pass (vector tiles, every kernel set) against Double attention on the inputs rounded as
    /// int8 defines (Q per row, K and V per 64-row block): what remains is P's 14-bit rounding and fp32
    /// accumulation. Each weight p ≤ 1 moves by an independent error of rms 2⁻¹⁵/√3, so the output moves by
    /// about that times ‖v‖·√n / l, against an output of ‖v‖·√(Σp²) / l: a relative error of 1.8e-5 / rms(p),
    /// about 1e-4 for these N(0, 1) scores (measured 6e-5…9e-5); fp32 adds a few 1e-7. Bound: 5e-4.
    func testInt8PassAgainstDoubleOnTheRoundedInputs() throws {
        var system = SystemRandomNumberGenerator()
        for _ in 0..<2 {
            let seed = UInt64.random(in: 1...UInt64.max, using: &system)
            var g = SeededGenerator(seed: seed)
            let n = Int.random(in: 100...300, using: &g), d = Int.random(in: 1...100, using: &g)
            let q = Tensor3.random(heads: 2, rows: n, dim: d, using: &g)
            let k = Tensor3.random(heads: 1, rows: n, dim: d, shift: 0.5, using: &g)
            let v = Tensor3.random(heads: 1, rows: n, dim: d, using: &g)
            // Key blocks of 128 take P·V's integer sums over two 64-key chunks.
            let config = SpargeConfig(blockK: [32, 64, 128].randomElement(using: &g)!, causal: Bool.random(using: &g))
            var (rq, rk, rv) = (q, k, v)
            rq.data.withUnsafeMutableBufferPointer { AttentionPrecision.int8.roundQueries($0.baseAddress!, rows: 2 * n, dim: d) }
            rk.data.withUnsafeMutableBufferPointer { keys in
                rv.data.withUnsafeMutableBufferPointer { values in
                    for start in stride(from: 0, to: n, by: config.blockK) {
                        AttentionPrecision.int8.roundBlock(keys: keys.baseAddress! + start * d, values: values.baseAddress! + start * d,
                                                           rows: min(config.blockK, n - start), dim: d)
                    }
                }
            }
            let reference = ReferenceAttention.compute(q: rq, k: rk, v: rv, mask: nil, config: config).output
            for isa in CPUISA.allCases.filter(\.isSupported) {
                let r = try SparseAttention.forward(q: q, k: k, v: v, mask: nil, config: config, threads: 2,
                                                    backend: .isa(isa), precision: .int8)
                let error = ErrorMetrics(output: r.output.data, reference: reference).relativeL1
                XCTAssertLessThanOrEqual(error, 5e-4, "seed \(seed) N \(n) D \(d) blockK \(config.blockK) causal \(config.causal) \(isa)")
            }
        }
    }
}
