import CSpargeKernels
import SpargeTestSupport
import XCTest
@testable import SpargeKernels

/// The TopCdf (heap) and TopK (quickselect) selections against the plain definition: sort every block by descending
/// probability (ascending index on ties), keep the longest prefix whose cumulative sum is ≤ τ (at least one),
/// or the first `floor(k·nk)`.
final class TopSelectionTests: XCTestCase {
    func testSelectionEqualsFullSort() {
        var g = SeededGenerator(seed: 11)
        for trial in 0..<400 {
            let nk = [1, 2, 7, 64, 513, 2048, 17, 100][(trial / 2) % 8]
            // scores with ties (rounded), -inf entries, and a spread that makes some rows peaked
            let spread = Float([0.5, 3, 12][trial % 3])
            var scores = (0..<nk).map { _ in (g.normal() * spread * 4).rounded() / 4 }
            for j in 0..<nk where g.next() % 5 == 0 { scores[j] = -.infinity }
            let selection: BlockSelection = trial % 2 == 1 ? .topK([0.1, 0.3, 0.5][(trial / 2) % 3])
                : .cdf([0.5, 0.9, 0.98, 1.0][(trial / 2) % 4])
            var work = scores
            var order = [UInt64](repeating: 0, count: 3 * nk)
            var out = [UInt8](repeating: 0, count: nk)
            work.withUnsafeMutableBufferPointer { s in
                order.withUnsafeMutableBufferPointer { o in
                    out.withUnsafeMutableBufferPointer { m in
                        MaskPredictor.selectBlocks(scores: s.baseAddress!, count: nk, selection: selection,
                                                   order: o.baseAddress!, into: m.baseAddress!)
                    }
                }
            }
            XCTAssertEqual(out, reference(scores, selection), "trial \(trial), nk \(nk), \(selection)")
        }
    }

    /// TopK's quickselect (`sparge_select_smallest`) finds the keep-th smallest key of the sorted keys, on
    /// fresh keys: every count around its switch to insertion sort (16) and up to 4097, keep at 1, the end and
    /// between, keys drawn at random, ascending, descending and sharing their upper 32 bits (TopK's ties:
    /// equal probabilities, keys ordered by index). It only reads the keys. Keys that repeat (never TopK's,
    /// which end in their index) still give the k-th: no partition can then leave one below the pivot.
    func testQuickselectFindsTheKeepthSmallestKey() {
        let seed = UInt64.random(in: 0...UInt64.max)
        var g = SeededGenerator(seed: seed)
        for count in [1, 2, 15, 16, 17, 18, 33, 64, 100, 512, 513, 4097] {
            for shape in 0..<5 {
                var keys: [UInt64]
                switch shape {
                case 0: keys = Array(Set((0..<count * 2).map { _ in g.next() })).prefix(count).map { $0 }
                case 1: keys = (0..<count).map { UInt64($0) * 3 + 1 }
                case 2: keys = (0..<count).map { UInt64(count - $0) << 32 }
                case 3: keys = (0..<count).map { 0x3F00_0000_0000_0000 | UInt64($0) }.shuffled(using: &g)
                default: keys = (0..<count).map { UInt64($0 % 3) }.shuffled(using: &g)
                }
                guard keys.count == count else { continue }
                let sorted = keys.sorted()
                for keep in Set([1, 2, count / 10, count / 2, count - 1, count]) where keep >= 1 && keep <= count {
                    let before = keys
                    var scratch = [UInt64](repeating: 0, count: 2 * count)
                    let got = sparge_select_smallest(&keys, &scratch, count, keep)
                    XCTAssertEqual(got, sorted[keep - 1], "seed \(seed), \(count) keys of shape \(shape), keep \(keep)")
                    XCTAssertEqual(keys, before, "the keys must be left as they were")
                }
            }
        }
    }

    func reference(_ scores: [Float], _ selection: BlockSelection) -> [UInt8] {
        let nk = scores.count
        var out = [UInt8](repeating: 0, count: nk)
        let mx = scores.max()!
        guard mx > -.infinity else { return out }
        let e = scores.map { $0 == -.infinity ? Float(0) : expf($0 - mx) }
        var sum: Float = 0
        for x in e { sum += x }
        let p = e.map { $0 * (1 / sum) }
        let sorted = (0..<nk).sorted { p[$0] != p[$1] ? p[$0] > p[$1] : $0 < $1 }
        var keep = 0
        switch selection {
        case .cdf(let tau):
            var c = 0.0
            for j in sorted {
                c += Double(p[j])
                if Float(c) <= tau { keep += 1 } else { break }
            }
            keep = max(1, keep)
        case .topK(let k): keep = MaskPredictor.topKCount(fraction: k, keyBlocks: nk)
        case .dense: keep = nk
        }
        for j in sorted.prefix(keep) { out[j] = 1 }
        return out
    }
}
