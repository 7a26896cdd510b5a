import CSpargeKernels
@testable import SpargeKernels
import SpargeTestSupport
import XCTest

/// Properties of the mask on fresh random inputs.
final class MaskPredictorTests: XCTestCase {
    /// Inputs with some structure (a shared offset per head and a slow drift) so that some blocks are
    /// self-similar and some are not, and the mask is neither empty nor full.
    func inputs(hq: Int, hkv: Int, n: Int, d: Int, seed: UInt64) -> (Tensor3, Tensor3) {
        var g = SeededGenerator(seed: seed)
        var q = Tensor3.random(heads: hq, rows: n, dim: d, using: &g)
        var k = Tensor3.random(heads: hkv, rows: n, dim: d, using: &g)
        let drift = (0..<d).map { _ in g.normal() * 2 }
        for h in 0..<hq { for r in 0..<n where (r / 200) % 2 == 0 { for j in 0..<d { q[h, r, j] += drift[j] } } }
        for h in 0..<hkv { for r in 0..<n where (r / 150) % 3 != 1 { for j in 0..<d { k[h, r, j] += drift[(j + r / 150) % d] } } }
        return (q, k)
    }

    static let sweep: [(hq: Int, hkv: Int, n: Int, d: Int, seed: UInt64, config: SpargeConfig)] = [
        (2, 2, 1024, 32, 1, SpargeConfig(simThreshold: 0.3, selection: .cdf(0.9))),
        (4, 2, 1000, 16, 2, SpargeConfig(simThreshold: 0.3, selection: .cdf(0.95), causal: true)),
        (4, 1, 1152, 32, 3, SpargeConfig(simThreshold: 0.4, selection: .topK(0.3), sink: true)),
        (2, 2, 777, 8, 4, SpargeConfig(blockQ: 64, blockK: 32, simThreshold: 0.2, selection: .cdf(0.8), causal: true, sink: true)),
    ]

    func label(_ c: (hq: Int, hkv: Int, n: Int, d: Int, seed: UInt64, config: SpargeConfig)) -> String {
        "Hq=\(c.hq) Hkv=\(c.hkv) N=\(c.n) D=\(c.d) seed=\(c.seed) \(c.config.selection) causal=\(c.config.causal)"
    }

    /// A rank predicting only its own query blocks (summaries of its rows, all key summaries) gets exactly the
    /// rows of the one-process mask: contiguous and zigzag row sets.
    func testRowSubsetsEqualRowsOfWholeMask() throws {
        for c in Self.sweep {
            let (q, k) = inputs(hq: c.hq, hkv: c.hkv, n: c.n, d: c.d, seed: c.seed)
            let whole = try MaskPredictor.predict(q: q, k: k, config: c.config)
            let stats = MaskStatistics(mask: whole, config: c.config)
            XCTAssertTrue(stats.density > 0.05 && stats.density < 0.95, "\(label(c)): density \(stats.density) says nothing")
            let km = KeyMean(summing: k, rows: 0..<c.n).mean()
            let ks = BlockSummaries.summarize(k, rows: 0..<c.n, firstBlock: 0, blockSize: c.config.blockK,
                                              threshold: c.config.simThreshold, subtracting: km)
            let nq = (c.n + c.config.blockQ - 1) / c.config.blockQ
            // Two chunks of a zigzag rank: [1, 2] and the tail [nq-2, nq-1] (includes a partial block when N is odd).
            let runs = [1..<3, (nq - 2)..<nq]
            let parts = runs.map { run in
                BlockSummaries.summarize(q, rows: (run.lowerBound * c.config.blockQ)..<min(c.n, run.upperBound * c.config.blockQ),
                                         firstBlock: run.lowerBound, blockSize: c.config.blockQ, threshold: c.config.simThreshold)
            }
            let qs = BlockSummaries(concatenating: parts, requireConsecutive: false)
            let blocks = runs.flatMap { Array($0) }
            let rows = try MaskPredictor.predictRows(querySummaries: qs, queryBlocks: blocks, keySummaries: ks, config: c.config,
                                                 headDim: c.d, queryHeads: c.hq, kvHeads: c.hkv, seqLen: c.n)
            var partial = MaskStatistics()
            for h in 0..<c.hq {
                for (r, i) in blocks.enumerated() {
                    for j in 0..<whole.keyBlocks {
                        XCTAssertEqual(rows[h, r, j], whole[h, i, j], "\(label(c)): head \(h) block \(i) key \(j)")
                    }
                }
            }
            // Statistics add up across disjoint row sets.
            partial.add(MaskStatistics(mask: rows, config: c.config))
            let rest = Array(Set(0..<nq).subtracting(blocks)).sorted()
            let restSummaries = BlockSummaries(concatenating: rest.map { i in
                BlockSummaries.summarize(q, rows: (i * c.config.blockQ)..<min(c.n, (i + 1) * c.config.blockQ), firstBlock: i,
                                         blockSize: c.config.blockQ, threshold: c.config.simThreshold)
            }, requireConsecutive: false)
            partial.add(MaskStatistics(mask: try MaskPredictor.predictRows(
                querySummaries: restSummaries, queryBlocks: rest, keySummaries: ks, config: c.config,
                headDim: c.d, queryHeads: c.hq, kvHeads: c.hkv, seqLen: c.n), config: c.config))
            XCTAssertEqual(partial, stats, label(c))
        }
    }

    /// Causal: nothing right of the block-causal boundary j < (i+1)·BQ/BK. Every row keeps at least one block
    /// of its area (the selection keeps ≥ 1, or the row is all forced on). Sink: column 0 always on.
    func testCausalBoundaryAndSink() throws {
        for c in Self.sweep {
            let (q, k) = inputs(hq: c.hq, hkv: c.hkv, n: c.n, d: c.d, seed: c.seed)
            let m = try MaskPredictor.predict(q: q, k: k, config: c.config)
            for h in 0..<c.hq {
                for i in m.queryBlocks {
                    let limit = c.config.causal
                        ? MaskPredictor.blockCausalLimit(queryBlock: i, blockQ: c.config.blockQ, blockK: c.config.blockK, keyBlocks: m.keyBlocks)
                        : m.keyBlocks
                    if c.config.causal {
                        // Real division: with BQ=128, BK=64 row i reaches 2i+2 blocks; the boundary is (i+1)·BQ/BK.
                        XCTAssertEqual(limit, min(m.keyBlocks, ((i + 1) * c.config.blockQ + c.config.blockK - 1) / c.config.blockK))
                    }
                    for j in limit..<m.keyBlocks { XCTAssertFalse(m[h, i, j], "\(label(c)): head \(h) block \(i) key \(j) above causal") }
                    XCTAssertTrue((0..<limit).contains { m[h, i, $0] }, "\(label(c)): empty row \(i)")
                    if c.config.sink { XCTAssertTrue(m[h, i, 0], "\(label(c)): sink column off at row \(i)") }
                }
            }
        }
    }

    /// TopK before force-on: with θ = −1 every whole block is self-similar, so nothing is forced on (N a multiple
    /// of both block sizes, not causal, no sink) and every row holds exactly max(1, floor(topk·nk)).
    func testTopKCountsExactly() throws {
        for (topk, n, seed) in [(Float(0.3), 1024, UInt64(1)), (0.7, 640, 2), (0.01, 1024, 3), (0.5, 256, 4)] {
            let (q, k) = inputs(hq: 2, hkv: 1, n: n, d: 16, seed: seed)
            let config = SpargeConfig(simThreshold: -1, selection: .topK(topk))
            let m = try MaskPredictor.predict(q: q, k: k, config: config)
            let nk = n / 64
            // Written out as Double decimals, as the reference computes int(topk * nk).
            let expected = max(1, Int((Double("\(topk)")! * Double(nk)).rounded(.down)))
            for h in 0..<2 {
                for i in m.queryBlocks {
                    XCTAssertEqual(m.keyBlockList(head: h, row: i).count, expected, "topk \(topk) N=\(n) seed \(seed) head \(h) row \(i)")
                }
            }
        }
        // 0.7 of 10 blocks is 7 (Double(Float(0.7))·10 = 6.99999988 would give 6).
        XCTAssertEqual(MaskPredictor.topKCount(fraction: 0.7, keyBlocks: 10), 7)
    }

    /// GQA: query heads of one group with the same queries get the same rows (they share kv summaries); a
    /// query head of another group, same queries, gets other rows (different keys).
    func testGQAGroupsShareKeySummaries() throws {
        for seed in UInt64(1)...3 {
            var (q, k) = inputs(hq: 4, hkv: 2, n: 1024, d: 16, seed: seed)
            // Give every query head head 0's queries.
            for h in 1..<4 { for r in 0..<1024 { for j in 0..<16 { q[h, r, j] = q[0, r, j] } } }
            // Make kv head 1 unlike kv head 0.
            var g = SeededGenerator(seed: seed + 100)
            for r in 0..<1024 { for j in 0..<16 { k[1, r, j] = g.normal() * 3 } }
            let m = try MaskPredictor.predict(q: q, k: k, config: SpargeConfig(simThreshold: 0.1, selection: .cdf(0.7)))
            let bits = m.denseBits()
            let rows = { (h: Int) in bits[(h * m.rowCount * m.keyBlocks)..<((h + 1) * m.rowCount * m.keyBlocks)] }
            XCTAssertEqual(rows(0), rows(1), "seed \(seed): heads 0 and 1 share kv head 0")
            XCTAssertEqual(rows(2), rows(3), "seed \(seed): heads 2 and 3 share kv head 1")
            XCTAssertNotEqual(rows(0), rows(2), "seed \(seed): different kv heads should give different masks")
        }
    }

    /// Not-self-similar key blocks are whole columns on, not-self-similar query blocks whole rows on; dense
    /// selection is every block (causal: the block-causal area).
    func testForceOnAndDense() throws {
        var g = SeededGenerator(seed: 9)
        var q = Tensor3(heads: 1, rows: 512, dim: 8)
        var k = Tensor3(heads: 1, rows: 512, dim: 8)
        let u = (0..<8).map { _ in g.normal() + 1 }
        // Query block 2 is pure noise (incoherent); the others a constant vector plus a little noise.
        for r in 0..<512 { for j in 0..<8 { q[0, r, j] = r / 128 == 2 ? g.normal() : 2 + Float(j % 3) + 0.05 * g.normal() } }
        // Key block 3 is pure noise; the others ±u (alternating by block, so the K mean that is subtracted
        // first stays small) plus a little noise.
        for r in 0..<512 {
            let b = r / 64
            for j in 0..<8 { k[0, r, j] = b == 3 ? g.normal() : (b % 2 == 0 ? 1 : -1) * u[j] + 0.02 * g.normal() }
        }
        let config = SpargeConfig(simThreshold: 0.6, selection: .cdf(0.5))
        let m = try MaskPredictor.predict(q: q, k: k, config: config)
        for i in 0..<4 { XCTAssertTrue(m[0, i, 3], "key block 3 not self-similar: column on (row \(i))") }
        for j in 0..<8 { XCTAssertTrue(m[0, 2, j], "query block 2 not self-similar: row on (key \(j))") }
        XCTAssertLessThan(m.computedCount, 4 * 8, "the other blocks must not all be on, or this says nothing")
        let dense = try MaskPredictor.predict(q: q, k: k, config: SpargeConfig(selection: .dense, causal: true))
        XCTAssertEqual(MaskStatistics(mask: dense, config: SpargeConfig(causal: true)).density, 1)
        XCTAssertEqual(dense.computedCount, (1...4).reduce(0) { $0 + min(8, 2 * $1) })
    }

    /// The compressed score's C kernel gives its Swift definition's Double bit for bit in every kernel set
    /// (the portable one through the C library's fma), on fresh random vectors of every length around the
    /// 16-lane groups, with magnitudes spread so that the summation order shows in the last bits.
    func testScoreKernelsEqualTheirSwiftTwinBitForBit() {
        let sets = TileKernelSets.runnable  // (the AMX set's mask kernels are avx512bf16's)
        var g = SeededGenerator(seed: UInt64.random(in: 0...UInt64.max))
        var differing = 0
        for d in [1, 7, 15, 16, 17, 31, 32, 33, 64, 96, 100, 128, 129, 256] {
            for _ in 0..<40 {
                let a = (0..<d).map { _ in Double(g.normal()) * pow(2.0, Double(Int.random(in: -20...20, using: &g))) }
                let b = (0..<d).map { _ in Double(g.normal()) * pow(2.0, Double(Int.random(in: -20...20, using: &g))) }
                let twin = MaskPredictor.dotDoubleTwin(a, b, d)
                // The order matters: a plain left-to-right sum differs in the last bits somewhere here.
                if (0..<d).reduce(0.0, { $0 + a[$1] * b[$1] }) != twin { differing += 1 }
                for (name, kernels) in sets {
                    XCTAssertEqual(kernels.dotDouble(a, b, d).bitPattern, twin.bitPattern, "\(name), D \(d)")
                }
                // Several rows at once, given as floats (four side by side, then the rest one by one): each
                // widened row's own Double.
                let count = Int.random(in: 1...9, using: &g)
                let rows = (0..<(count * d)).map { _ in
                    g.normal() * pow(2.0, Float(Int.random(in: -20...20, using: &g)))
                }
                let widened = rows.map(Double.init)
                let twins = (0..<count).map { r in
                    widened.withUnsafeBufferPointer { MaskPredictor.dotDoubleTwin(a, $0.baseAddress! + r * d, d) }
                }
                for (name, kernels) in sets {
                    var out = [Double](repeating: .nan, count: count)
                    kernels.dotDoubleRows(a, rows, count, d, &out)
                    XCTAssertEqual(out.map(\.bitPattern), twins.map(\.bitPattern), "\(name), rows, D \(d)")
                }
            }
        }
        XCTAssertGreaterThan(differing, 0, "no input told the summation orders apart: the test says nothing")
    }

    /// A row's softmax numerators and sum from the C kernel equal their Swift definition bit for bit in every
    /// kernel set: on fixed rows of the recipe's edges, each value both in the eight-wide vectors and in the
    /// tail; and on fresh random rows of every length around the vectors: −∞ (blocks not self-similar), values
    /// past both ends of the recipe's range, NaN, a max that is not the row's, and scores spread so that the
    /// exponential's last bit and the sum's order are exercised.
    func testRowExponentialKernelsEqualTheirSwiftTwinBitForBit() {
        let sets = TileKernelSets.runnable  // (the AMX set's mask kernels are avx512bf16's)
        // Max 0, so x is the value: both ends of [−104, 89] and their neighbours, results that are subnormal
        // (x near −103.97) and the largest finite ones (x near 88.72), ±0, ±∞, NaN, a subnormal x, and
        // x = (n + ½)·ln 2, where k's rounding is nearly a tie.
        let edges: [Float] = [-104.00001, -104, -103.99999, -103.97, -103.3, -87.34, -0.0, 0, .leastNonzeroMagnitude,
                              88.7228, 88.72283, 88.7229, 89, 89.00001, .infinity, -.infinity, .nan]
            + (-8...8).map { (Float($0) + 0.5) * 0.6931472 }
        var subnormals = 0, largestFinite = 0
        for shift in 0..<edges.count {
            let rotated = Array(edges[shift...] + edges[..<shift])
            for row in [rotated, Array(rotated.prefix(7))] {  // in the vectors and in the tail
                var twin = row
                let twinSum = MaskPredictor.expRowTwin(&twin, row.count, 0)
                subnormals += twin.filter { $0 > 0 && $0 < .leastNormalMagnitude }.count
                largestFinite += twin.filter { $0.isFinite && $0 > 1e38 }.count
                for (name, kernels) in sets {
                    var got = row
                    let sum = kernels.maskExpRow(&got, row.count, 0)
                    XCTAssertEqual(got.map(\.bitPattern), twin.map(\.bitPattern), "\(name), edges from \(shift)")
                    XCTAssertEqual(sum.bitPattern, twinSum.bitPattern, "\(name), sum of the edges from \(shift)")
                }
            }
        }
        XCTAssertGreaterThan(subnormals, 0, "no result was subnormal: the lower edge went untested")
        XCTAssertGreaterThan(largestFinite, 0, "no result was near Float's largest: the upper edge went untested")

        let seed = UInt64.random(in: 0...UInt64.max)
        var g = SeededGenerator(seed: seed)
        var compared = 0, infinities = 0
        for count in Array(1...41) + [64, 255, 256, 257, 1000] {
            for _ in 0..<30 {
                var row = (0..<count).map { _ -> Float in
                    switch Int.random(in: 0..<20, using: &g) {
                    case 0: -.infinity
                    case 1: Float.random(in: -300 ... -90, using: &g)
                    case 2: Float.random(in: 90...200, using: &g)
                    default: Float(g.normal()) * Float.random(in: 0.01...30, using: &g)
                    }
                }
                if Int.random(in: 0..<10, using: &g) == 0 { row[Int.random(in: 0..<count, using: &g)] = .nan }
                let mx: Float = switch Int.random(in: 0..<8, using: &g) {
                case 0, 1: Float.random(in: -50...50, using: &g)
                case 2: -.infinity  // every −∞ score must still give 0, not NaN
                default: row.filter { !$0.isNaN }.max() ?? 0
                }
                var twin = row
                let twinSum = MaskPredictor.expRowTwin(&twin, count, mx)
                infinities += twin.filter { $0 == .infinity }.count
                for (name, kernels) in sets {
                    var got = row
                    let sum = kernels.maskExpRow(&got, count, mx)
                    XCTAssertEqual(got.map(\.bitPattern), twin.map(\.bitPattern), "\(name), \(count) values, seed \(seed)")
                    XCTAssertEqual(sum.bitPattern, twinSum.bitPattern, "\(name), sum of \(count) values, seed \(seed)")
                }
                compared += count
            }
        }
        XCTAssertGreaterThan(infinities, 0, "no value overflowed: the random rows missed the upper edge")
        XCTAssertGreaterThan(compared, 10_000)
    }

    /// `firstKeyIndex` is the first position of a part of a row holding a key ≥ the one asked, as a linear
    /// scan finds it, on fresh random rows and parts (empty ones, keys below, inside and past the row).
    func testFirstKeyIndexEqualsALinearScan() {
        var g = SeededGenerator(seed: UInt64.random(in: 0...UInt64.max))
        for _ in 0..<300 {
            let nk = Int.random(in: 1...80, using: &g)
            let row = (0..<nk).filter { _ in Bool.random(using: &g) }
            var builder = BlockMask.Builder(heads: 1, keyBlocks: nk, queryBlocks: [0])
            builder.appendRow(row)
            let mask = builder.mask
            let lo = Int.random(in: 0...row.count, using: &g), hi = Int.random(in: lo...row.count, using: &g)
            let key = Int.random(in: -1...(nk + 1), using: &g)
            let expected = (lo..<hi).first { row[$0] >= key } ?? hi
            XCTAssertEqual(mask.firstKeyIndex(atLeast: key, in: lo..<hi), expected, "row \(row), part \(lo)..<\(hi), key \(key)")
        }
    }

    /// `BlockMask.full` (which a dense pass on a GPU uses instead of predicting) is exactly the dense
    /// selection's mask for the rows of a rank (zigzag rows, odd N with a partial tail, causal or not, sink and
    /// diagonal rules on), and its rows are prefixes; a sparse mask's are not.
    func testFullMaskEqualsTheDenseSelection() throws {
        for c in Self.sweep {
            var config = c.config
            config.selection = .dense
            let (q, k) = inputs(hq: c.hq, hkv: c.hkv, n: c.n, d: c.d, seed: c.seed)
            let whole = try MaskPredictor.predict(q: q, k: k, config: config)
            let nq = (c.n + config.blockQ - 1) / config.blockQ
            for rows in [Array(0..<nq), [1, 2, nq - 2, nq - 1]] {
                let full = BlockMask.full(heads: c.hq, keyBlocks: whole.keyBlocks, queryBlocks: rows,
                                          causalShape: config.causal ? (config.blockQ, config.blockK) : nil)
                XCTAssertTrue(full.rowsArePrefixes, label(c))
                for h in 0..<c.hq {
                    for (r, i) in rows.enumerated() {
                        XCTAssertEqual(full.keys(head: h, row: r), whole.keys(head: h, row: i), "\(label(c)): head \(h) row \(i)")
                    }
                }
            }
            XCTAssertFalse(try MaskPredictor.predict(q: q, k: k, config: c.config).rowsArePrefixes,
                           "\(label(c)): the sparse mask has a row that is not 0..<n")
        }
    }

    /// A row where every key block is excluded (all not self-similar): no NaN reaches the selection, and the
    /// force-on rules turn the whole row on, as in the reference.
    func testAllKeysExcludedRow() throws {
        var g = SeededGenerator(seed: 4)
        let q = Tensor3.random(heads: 1, rows: 256, dim: 8, shift: 1, using: &g)
        let k = Tensor3.random(heads: 1, rows: 256, dim: 8, using: &g)
        // θ = 1: no block can exceed it, so every key block is excluded.
        for causal in [false, true] {
            let config = SpargeConfig(simThreshold: 1, selection: .cdf(0.9), causal: causal)
            let m = try MaskPredictor.predict(q: q, k: k, config: config)
            XCTAssertEqual(MaskStatistics(mask: m, config: config).density, 1, "causal \(causal)")
        }
    }
}
