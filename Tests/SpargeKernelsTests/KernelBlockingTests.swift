import CSpargeKernels
@testable import SpargeKernels
import SpargeTestSupport
import XCTest

/// The micro-kernels themselves, one kernel set against another on fresh random tiles: the portable, the
/// AVX2 and the AVX-512 blocking (the AVX-512 kernels' source and shapes compiled for AVX2), so that the
/// loops, tails and strides that run by default on AVX-512 CPUs are exercised on every development machine.
final class KernelBlockingTests: XCTestCase {
    /// One block through scores, softmax update and P·V with `kernels`: the output accumulator and the
    /// running sums.
    func block(_ kernels: sparge_tile_kernels, queries: [Float], keys: [Float], values: [Float], lanes: Int,
               stride: Int, dim: Int, keyCount: Int) -> (output: [Float], sums: [Float]) {
        var scores = [Float](repeating: 0, count: 64 * stride)
        var rowMax = [Float](repeating: -.infinity, count: lanes)
        var runningMax = [Float](repeating: 0.5, count: lanes)
        var sums = [Float](repeating: 2, count: lanes)
        var output = [Float](repeating: 1, count: dim * lanes)
        kernels.scores(queries, stride, lanes, keys, dim, keyCount, &scores, &rowMax, nil, nil, 0)
        kernels.softmax(&scores, stride, lanes, keyCount, &rowMax, &runningMax, &sums)
        kernels.pv(scores, stride, lanes, values, dim, keyCount, rowMax, &output)
        return (output, sums)
    }

    /// f16 widening (`widenF16`, what a block stored with `--kv-precision f16` goes through every visit) is
    /// exact on every set this CPU runs: all 65536 bit patterns, against Float(Float16) — F16C eight at a
    /// time and the bit conversion of the tail and the portable set. Counts that leave every tail length of
    /// the eight-wide loop, at every alignment of the source. (A NaN must stay a NaN; its payload is the
    /// instruction's.)
    func testF16WideningIsExactOnEverySet() throws {
        let halves = (0...UInt16.max).map { $0 }
        let expected = halves.map { Float(Float16(bitPattern: $0)) }
        for (name, kernels) in TileKernelSets.runnable {
            let widen = try XCTUnwrap(kernels.widenF16, name)
            for (offset, count) in [(0, halves.count), (1, halves.count - 1), (3, 61), (5, 7), (0, 0)] {
                var out = [Float](repeating: .nan, count: count)
                halves.withUnsafeBufferPointer { widen($0.baseAddress! + offset, count, &out) }
                for i in 0..<count {
                    let want = expected[offset + i]
                    guard want.isNaN ? out[i].isNaN : out[i].bitPattern == want.bitPattern else {
                        XCTFail("\(name): f16 0x\(String(halves[offset + i], radix: 16)) widened to \(out[i]), not \(want)")
                        break
                    }
                }
            }
        }
    }

    /// f16 rounding (`narrowF16`, each rank's K/V stored with `--kv-precision f16`) is Float16(Float) on
    /// every set: every value an f16 holds, each halfway point between neighbours (ties to even, both ways),
    /// a value just beside each, the overflow edge (65504 fits; 65520 and above are ∞ and clear the flag),
    /// f32 subnormals and fresh random floats of every magnitude, at every tail length of the eight-wide loop.
    func testF16RoundingIsFloat16OnEverySet() throws {
        var values: [Float] = [0, -0, .infinity, -.infinity, 65504, -65504, 65519.996, 65520, -65520, 1e6, .nan,
                               Float(bitPattern: 1), Float(bitPattern: 0x0080_0000), Float.leastNormalMagnitude]
        for bits in 0..<UInt16(0x7c00) {
            let x = Float(Float16(bitPattern: bits)), next = Float(Float16(bitPattern: bits + 1))
            let middle = (x + next) / 2  // exact in Float: f16's neighbours are 11 bits apart
            values += [x, -x, middle, -middle, middle.nextUp, middle.nextDown]
        }
        var g = SeededGenerator(seed: UInt64.random(in: 1...UInt64.max))
        values += (0..<4000).map { _ in Float.random(in: -1...1, using: &g) * Float(pow(2.0, Double(Int.random(in: -30...17, using: &g)))) }
        let expected = values.map { Float16($0) }
        for (name, kernels) in TileKernelSets.runnable {
            let narrow = try XCTUnwrap(kernels.narrowF16, name)
            for count in [values.count, values.count - 1, 13, 8, 7, 0] {
                var out = [UInt16](repeating: 0x5555, count: count)
                let fits = narrow(values, count, &out) != 0
                let overflow = values.prefix(count).contains { $0.isFinite && abs($0) >= 65520 }
                XCTAssertEqual(fits, !overflow, "\(name): the overflow flag over \(count) values")
                for i in 0..<count {
                    let got = Float16(bitPattern: out[i])
                    guard expected[i].isNaN ? got.isNaN : got.bitPattern == expected[i].bitPattern else {
                        XCTFail("\(name): \(values[i]) rounded to \(got), not \(expected[i])")
                        break
                    }
                }
            }
        }
    }


    func testKernelSetsAgreeOnRandomTiles() throws {
        #if arch(x86_64)
        guard CPUISA.avx2.isSupported else { throw XCTSkip("the AVX2 and AVX-512-blocking kernels need AVX2") }
        var sets: [(String, sparge_tile_kernels)] = [
            ("portable", sparge_kernels(Int32(SPARGE_ISA_PORTABLE.rawValue))),
            ("avx2", sparge_kernels(Int32(SPARGE_ISA_AVX2.rawValue))),
            ("avx512 blocking", sparge_kernels_avx512_blocking()),
        ]
        for isa in [CPUISA.avx512, .avx512bf16] where isa.isSupported { sets.append((isa.rawValue, isa.kernels)) }
        var system = SystemRandomNumberGenerator()
        for _ in 0..<20 {
            // Fresh shapes: D and the key count cover every tail of 6- and 4-row micro-kernels.
            let seed = UInt64.random(in: 1...UInt64.max, using: &system)
            var g = SeededGenerator(seed: seed)
            let lanes = 64 * Int.random(in: 1...2, using: &g), stride = lanes + 16
            let dim = Int.random(in: 1...140, using: &g), keyCount = Int.random(in: 1...64, using: &g)
            let queries = (0..<(dim * stride)).map { _ in Float.random(in: -0.3...0.3, using: &g) }
            let keys = (0..<(keyCount * dim)).map { _ in Float.random(in: -1...1, using: &g) }
            let values = (0..<(keyCount * dim)).map { _ in Float.random(in: -1...1, using: &g) }
            let results = sets.map {
                block($0.1, queries: queries, keys: keys, values: values, lanes: lanes, stride: stride, dim: dim,
                      keyCount: keyCount)
            }
            for (i, (name, _)) in sets.enumerated().dropFirst() {
                let label = "\(name) vs portable: seed \(seed), lanes \(lanes), D \(dim), keys \(keyCount)"
                // Same arithmetic up to fused vs separate multiply-add and summation order: a few ulps.
                XCTAssertLessThanOrEqual(relativeL1(results[i].output, results[0].output), 1e-5, label)
                XCTAssertLessThanOrEqual(relativeL1(results[i].sums, results[0].sums), 1e-5, label)
            }
        }
        #else
        throw XCTSkip("x86-64 kernel sets only")
        #endif
    }
}
