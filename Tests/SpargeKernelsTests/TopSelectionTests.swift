import SpargeTestSupport
import XCTest
@testable import SpargeKernels

/// The heap-based TopCdf/TopK selection against the plain definition: sort every block by descending
/// probability (ascending index on ties), keep the longest prefix whose cumulative sum is ≤ τ (at least one),
/// or the first `floor(k·nk)`.
final class TopSelectionTests: XCTestCase {
    func testHeapSelectionEqualsFullSort() {
        var g = SeededGenerator(seed: 11)
        for trial in 0..<300 {
            let nk = [1, 2, 7, 64, 513][trial % 5]
            // scores with ties (rounded), -inf entries, and a spread that makes some rows peaked
            let spread = Float([0.5, 3, 12][trial % 3])
            var scores = (0..<nk).map { _ in (g.normal() * spread * 4).rounded() / 4 }
            for j in 0..<nk where g.next() % 5 == 0 { scores[j] = -.infinity }
            let selection: BlockSelection = trial % 4 == 3 ? .topK([0.1, 0.3, 0.5][trial % 3])
                : .cdf([0.5, 0.9, 0.98, 1.0][trial % 4])
            var work = scores
            var order = [UInt64](repeating: 0, count: nk)
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
