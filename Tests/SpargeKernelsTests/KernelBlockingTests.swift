import CSpargeKernels
import SpargeKernels
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

    func testKernelSetsAgreeOnRandomTiles() throws {
        #if arch(x86_64)
        guard CPUISA.avx2.isSupported else { throw XCTSkip("the AVX2 and AVX-512-blocking kernels need AVX2") }
        let sets: [(String, sparge_tile_kernels)] = [
            ("portable", sparge_kernels(Int32(SPARGE_ISA_PORTABLE.rawValue))),
            ("avx2", sparge_kernels(Int32(SPARGE_ISA_AVX2.rawValue))),
            ("avx512 blocking", sparge_kernels_avx512_blocking()),
        ]
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
