import SpargeKernels
import SpargeTestSupport
import XCTest

final class HilbertPermutationTests: XCTestCase {
    func coordinates(_ i: Int, _ p: HilbertPermutation) -> (Int, Int, Int) {
        (i / (p.height * p.width), (i / p.width) % p.height, i % p.width)
    }

    /// Non-unit steps of the curve (0 means every step goes to a face neighbour).
    func jumps(_ p: HilbertPermutation) -> Int {
        var n = 0
        for s in 1..<p.order.count {
            let (a, b) = (coordinates(p.order[s - 1], p), coordinates(p.order[s], p))
            if abs(a.0 - b.0) + abs(a.1 - b.1) + abs(a.2 - b.2) != 1 { n += 1 }
        }
        return n
    }

    func testPermutationOnNamedShapes() {
        for (t, h, w) in [(1, 1, 1), (1, 7, 5), (3, 5, 7), (4, 4, 4), (2, 9, 16), (1, 1, 13), (5, 1, 1), (8, 30, 45), (17, 33, 65), (21, 45, 80)] {
            let p = HilbertPermutation(frames: t, height: h, width: w)
            XCTAssertEqual(p.order.count, t * h * w, "\(t)×\(h)×\(w)")
            XCTAssertEqual(p.order.sorted(), Array(0..<(t * h * w)), "\(t)×\(h)×\(w): not a permutation")
            XCTAssertEqual(jumps(p), 0, "\(t)×\(h)×\(w): steps that are not to a neighbour")
        }
    }

    /// Every box with sides 1…16: a permutation with every step to a face neighbour (the documented guarantee).
    func testGuaranteeOnAllSmallBoxes() {
        for t in 1...16 { for h in 1...16 { for w in 1...16 {
            let p = HilbertPermutation(frames: t, height: h, width: w)
            var seen = [Bool](repeating: false, count: t * h * w)
            for i in p.order { XCTAssertFalse(seen[i], "\(t)×\(h)×\(w): index \(i) twice"); seen[i] = true }
            XCTAssertEqual(p.order.count, t * h * w, "\(t)×\(h)×\(w)")
            let j = jumps(p)
            XCTAssertEqual(j, 0, "\(t)×\(h)×\(w): \(j) steps that are not to a neighbour")
        } } }
    }

    func testApplyUndoRoundTrip() {
        for (t, h, w, seed) in [(3, 5, 7, UInt64(1)), (2, 9, 16, 2), (1, 1, 1, 3)] {
            var g = SeededGenerator(seed: seed)
            let x = Tensor3.random(heads: 2, rows: t * h * w, dim: 3, using: &g)
            let p = HilbertPermutation(frames: t, height: h, width: w)
            let y = p.apply(x)
            XCTAssertEqual(p.undo(y), x, "\(t)×\(h)×\(w)")
            for (new, old) in p.order.enumerated() {
                XCTAssertEqual(y[1, new, 2], x[1, old, 2], "\(t)×\(h)×\(w): row \(new)")
            }
            if t * h * w > 1 { XCTAssertNotEqual(y, x, "\(t)×\(h)×\(w): apply should reorder") }
        }
    }

    /// On a smooth field over an 8×32×32 grid (64-token blocks), Hilbert order makes blocks of compact
    /// 4×4×4-ish regions where row-major order makes 2×32 strips, so more blocks are self-similar and the
    /// mean similarity is higher.
    func testRaisesSelfSimilarityOnSmoothField() {
        for seed in UInt64(1)...3 {
            var g = SeededGenerator(seed: seed)
            let (t, h, w, d) = (8, 32, 32, 16)
            let freq = (0..<(3 * d)).map { _ in g.normal() * 0.25 }
            let phase = (0..<d).map { _ in g.normal() * 3 }
            var x = Tensor3(heads: 1, rows: t * h * w, dim: d)
            for i in 0..<(t * h * w) {
                let (a, b, c) = (Float(i / (h * w)), Float((i / w) % h), Float(i % w))
                for j in 0..<d {
                    x[0, i, j] = sinf(freq[3 * j] * a + freq[3 * j + 1] * b + freq[3 * j + 2] * c + phase[j])
                }
            }
            let p = HilbertPermutation(frames: t, height: h, width: w)
            func meanSimilarity(_ y: Tensor3) -> Double {
                var s = 0.0
                y.data.withUnsafeBufferPointer { buf in
                    for b in 0..<(y.rows / 64) {
                        s += BlockSummaries.selfSimilarity(UnsafeBufferPointer(rebasing: buf[(b * 64 * d)..<((b + 1) * 64 * d)]), rows: 64, dim: d)
                    }
                }
                return s / Double(y.rows / 64)
            }
            let rowMajor = meanSimilarity(x), hilbert = meanSimilarity(p.apply(x))
            print("seed \(seed): mean block self-similarity row-major \(rowMajor), Hilbert \(hilbert)")
            XCTAssertGreaterThan(hilbert, rowMajor + 0.05, "seed \(seed)")
        }
    }
}
