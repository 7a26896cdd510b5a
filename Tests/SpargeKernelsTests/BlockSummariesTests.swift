import CSpargeKernels
@testable import SpargeKernels
import SpargeTestSupport
import XCTest

final class BlockSummariesTests: XCTestCase {
    /// Identical rows: every unit vector is the same, ‖n·u‖²/n² = 1. Orthogonal rows: ‖Σ e_r‖² = n, so 1/n.
    /// Tolerance: a few Double roundings of O(n·D) sums (≤ 1e-14).
    func testSelfSimilarityOfIdenticalAndOrthogonalRows() {
        for (n, d, seed) in [(4, 8, UInt64(1)), (16, 16, 2), (64, 128, 3), (7, 9, 4)] {
            var g = SeededGenerator(seed: seed)
            let row = (0..<d).map { _ in g.normal() }
            let same = (0..<n).flatMap { _ in row }
            let s1 = same.withUnsafeBufferPointer { BlockSummaries.selfSimilarity($0, rows: n, dim: d) }
            XCTAssertEqual(s1, 1, accuracy: 1e-14, "identical rows n=\(n) d=\(d)")
            guard n <= d else { continue }
            // Orthogonal: scaled standard basis vectors (random non-zero scale, random sign).
            var orth = [Float](repeating: 0, count: n * d)
            for r in 0..<n { orth[r * d + r] = (g.normal() > 0 ? 1 : -1) * (1 + abs(g.normal())) }
            let s2 = orth.withUnsafeBufferPointer { BlockSummaries.selfSimilarity($0, rows: n, dim: d) }
            XCTAssertEqual(s2, 1 / Double(n), accuracy: 1e-14, "orthogonal rows n=\(n) d=\(d)")
        }
    }

    /// Against the formula written out directly on random rows.
    func testSelfSimilarityMatchesFormula() {
        for seed in UInt64(10)..<15 {
            var g = SeededGenerator(seed: seed)
            let (n, d) = (32, 24)
            let x = (0..<(n * d)).map { _ in g.normal() + 0.7 }
            var acc = [Double](repeating: 0, count: d)
            for r in 0..<n {
                let row = x[(r * d)..<((r + 1) * d)].map(Double.init)
                let norm = row.reduce(0) { $0 + $1 * $1 }.squareRoot()
                for j in 0..<d { acc[j] += row[j] / norm }
            }
            let expected = acc.reduce(0) { $0 + $1 * $1 } / Double(n * n)
            let s = x.withUnsafeBufferPointer { BlockSummaries.selfSimilarity($0, rows: n, dim: d) }
            // Same sums in a different order: Double rounding only.
            XCTAssertEqual(s, expected, accuracy: 1e-13, "seed \(seed)")
            XCTAssertGreaterThan(expected, 0.2, "seed \(seed): the shifted rows should be fairly similar")
        }
    }

    /// A zero row makes the block not self-similar (the reference's 0/0 = NaN), even if the rest are identical.
    func testZeroRowIsNeverSelfSimilar() {
        var t = Tensor3(heads: 1, rows: 8, dim: 4, repeating: 1)
        for j in 0..<4 { t[0, 5, j] = 0 }
        let s = BlockSummaries.summarize(t, rows: 0..<8, firstBlock: 0, blockSize: 4, threshold: 0.5)
        XCTAssertEqual(s.flags, [1, 0])
    }

    /// A partial last block is never self-similar, even of identical rows; its mean is over its own rows.
    func testPartialBlock() {
        let t = Tensor3(heads: 2, rows: 10, dim: 3, repeating: 2)
        let s = BlockSummaries.summarize(t, rows: 0..<10, firstBlock: 0, blockSize: 4, threshold: 0.5)
        XCTAssertEqual(s.count, 3)
        XCTAssertEqual(s.flags, [1, 1, 0, 1, 1, 0])
        XCTAssertEqual(Array(s.mean(head: 1, block: 2)), [2, 2, 2])
    }

    /// K's sums are the documented order's, bit for bit (a GPU repeats that order): each column summed over
    /// chunks of `chunkRows` rows counted from the run's first row, each chunk from zero, the chunk sums added
    /// in order. A fresh random shape, a run that starts inside the tensor and ends in a partial chunk; values
    /// of very different sizes, so that another order would round differently; and one column built so that
    /// it must: its chunk sums are 1, 2⁵³ and −2⁵³ in this order, 0 added forwards and 1 backwards.
    func testKeySumsFollowTheChunkOrder() {
        var system = SystemRandomNumberGenerator()
        let seed = UInt64.random(in: 1...UInt64.max, using: &system)
        var g = SeededGenerator(seed: seed)
        let (heads, dim) = (Int.random(in: 2...3, using: &system), Int.random(in: 32...70, using: &system))
        let rows = Int.random(in: 3 * KeyMean.chunkRows...5 * KeyMean.chunkRows, using: &system)
        var k = Tensor3.random(heads: heads, rows: rows, dim: dim, using: &g)
        for i in k.data.indices where i % 7 == 0 { k.data[i] *= 1e6 }
        let run = 5..<(rows - 3)
        for (i, r) in run.enumerated() {
            let (chunk, first) = (i / KeyMean.chunkRows, i % KeyMean.chunkRows == 0)
            k[0, r, 0] = chunk == 0 ? 1 / Float(KeyMean.chunkRows) : chunk == 1 && first ? 0x1p53 : chunk == 2 && first ? -0x1p53 : 0
        }
        var expected = [Double](repeating: 0, count: heads * dim)
        for h in 0..<heads {
            for j in 0..<dim {
                for chunk in stride(from: run.lowerBound, to: run.upperBound, by: KeyMean.chunkRows) {
                    var partial = 0.0
                    for r in chunk..<min(run.upperBound, chunk + KeyMean.chunkRows) { partial += Double(k[h, r, j]) }
                    expected[h * dim + j] += partial
                }
            }
        }
        let got = KeyMean(summing: k, rows: run)
        XCTAssertEqual(expected[0], 0, "the built column, forwards")
        XCTAssertEqual(got.sums.map(\.bitPattern), expected.map(\.bitPattern), "seed \(seed), \(heads)×\(rows)×\(dim)")
        XCTAssertEqual(got.rowCount, run.count)
    }

    /// The K mean's column sums in C (`sparge_key_column_sums`, the clone this CPU runs) equal their Swift
    /// twin bit for bit on fresh data: every D around the kernel's groups of 32 columns, row counts from 0 to
    /// past a chunk, magnitudes spread over 2⁻²⁰…2²⁰ so that any other order of a column's additions
    /// rounds differently, and one column whose sum is about 1 forwards and 0 backwards (2⁶⁰, then −2⁶⁰,
    /// then rows summing to 1).
    func testKeyColumnSumsEqualTheirTwinBitForBit() {
        let seed = UInt64.random(in: 0...UInt64.max)
        var g = SeededGenerator(seed: seed)
        for d in [1, 7, 31, 32, 33, 64, 96, 100, 128, 130] {
            for rows in [0, 1, 2, 9, 256, 300] {
                var x = (0..<(rows * d)).map { _ in g.normal() * pow(2.0, Float(Int.random(in: -20...20, using: &g))) }
                if rows >= 3 {
                    let j = Int.random(in: 0..<d, using: &g)
                    for r in 0..<rows { x[r * d + j] = r == 0 ? 0x1p60 : r == 1 ? -0x1p60 : 1 / Float(rows - 2) }
                }
                var twin = [Double](repeating: .nan, count: d), got = [Double](repeating: .nan, count: d)
                KeyMean.columnSumsTwin(x, rows: rows, dim: d, into: &twin)
                sparge_key_column_sums(x, rows, d, &got)
                XCTAssertEqual(got.map(\.bitPattern), twin.map(\.bitPattern), "seed \(seed), \(rows) rows of D \(d)")
            }
        }
    }

    /// Summaries of two halves (as two ranks make them), concatenated, equal those of the whole, bit for bit;
    /// so do the flat arrays rebuilt from slices, and K means from summed halves.
    func testHalvesConcatenateToWhole() {
        for (n, block, seed) in [(512, 64, UInt64(1)), (1000, 64, 2), (384, 128, 3), (130, 64, 4)] {
            var g = SeededGenerator(seed: seed)
            var x = Tensor3.random(heads: 3, rows: n, dim: 16, using: &g)
            // Every third block leans along one direction: after the mean is subtracted those blocks are
            // clearly self-similar (s ≈ 0.3), the others barely (s ≈ 0.1), so θ = 0.2 splits them.
            let dir = (0..<16).map { _ in g.normal() }
            for h in 0..<3 { for r in 0..<n where (r / block) % 3 == 0 { for j in 0..<16 { x[h, r, j] += 1.2 * dir[j] } } }
            var km = KeyMean(summing: x, rows: 0..<(n / 2 / block * block))
            km.add(KeyMean(summing: x, rows: (n / 2 / block * block)..<n))
            let mean = km.mean()
            XCTAssertEqual(mean, KeyMean(summing: x, rows: 0..<n).mean(), "n=\(n) seed \(seed): K mean")
            let whole = BlockSummaries.summarize(x, rows: 0..<n, firstBlock: 0, blockSize: block, threshold: 0.2,
                                                 subtracting: mean)
            let split = (n / 2 / block) * block
            let a = BlockSummaries.summarize(x, rows: 0..<split, firstBlock: 0, blockSize: block, threshold: 0.2,
                                             subtracting: mean)
            let b = BlockSummaries.summarize(x, rows: split..<n, firstBlock: split / block, blockSize: block,
                                             threshold: 0.2, subtracting: mean)
            XCTAssertEqual(BlockSummaries(concatenating: [a, b]), whole, "n=\(n) seed \(seed)")
            // As an allgather delivers them: one flat buffer of both parts, sliced per rank.
            let flatMeans = a.means + b.means, flatFlags = a.flags + b.flags
            let a2 = BlockSummaries(heads: 3, dim: 16, blockSize: block, firstBlock: 0, count: a.count,
                                    means: flatMeans[0..<a.means.count], flags: flatFlags[0..<a.flags.count])
            let b2 = BlockSummaries(heads: 3, dim: 16, blockSize: block, firstBlock: a.count, count: b.count,
                                    means: flatMeans[a.means.count...], flags: flatFlags[a.flags.count...])
            XCTAssertEqual(BlockSummaries(concatenating: [a2, b2]), whole, "n=\(n) seed \(seed): from slices")
            // The threshold must split the blocks, or the flags compared above say nothing.
            XCTAssertTrue(whole.flags.contains(0) && whole.flags.contains(1) || n == 130, "n=\(n): flags all alike")
        }
    }

    /// The mean is the Double mean rounded to Float, after subtracting the given mean in Float.
    func testMeanIsRoundedDoubleMean() {
        var g = SeededGenerator(seed: 5)
        let x = Tensor3.random(heads: 1, rows: 64, dim: 8, scale: 3, shift: 1, using: &g)
        let sub: [Float] = (0..<8).map { Float($0) * 0.37 }
        let s = BlockSummaries.summarize(x, rows: 0..<64, firstBlock: 0, blockSize: 64, threshold: 0.6, subtracting: sub)
        for j in 0..<8 {
            var acc = 0.0
            for r in 0..<64 { acc += Double(x[0, r, j] - sub[j]) }
            XCTAssertEqual(s.means[j], Float(acc / 64), "dim \(j)")
        }
    }

    /// Selected blocks keep their own means and flags, per head, in the order asked for.
    func testSelectingBlocksKeepsTheirSummaries() {
        var rng = SeededGenerator(seed: UInt64.random(in: 0...UInt64.max))
        let x = Tensor3.blockStructured(heads: 2, rows: 64 * 4, dim: 8, run: 64, noise: 0.5, using: &rng)
        let run = BlockSummaries.summarize(x, rows: 0..<x.rows, firstBlock: 5, blockSize: 64, threshold: 0.5)
        let picked = run.selecting([2, 0])
        XCTAssertEqual(picked.firstBlock, 7)
        XCTAssertEqual(picked.count, 2)
        for h in 0..<2 {
            XCTAssertEqual(Array(picked.mean(head: h, block: 0)), Array(run.mean(head: h, block: 2)))
            XCTAssertEqual(Array(picked.mean(head: h, block: 1)), Array(run.mean(head: h, block: 0)))
            XCTAssertEqual(picked.isSelfSimilar(head: h, block: 0), run.isSelfSimilar(head: h, block: 2))
            XCTAssertEqual(picked.isSelfSimilar(head: h, block: 1), run.isSelfSimilar(head: h, block: 0))
        }
    }

    /// The summaries' C kernel (what `summarize` runs) gives its Swift reference's means and similarity bit for
    /// bit in every kernel set this CPU runs, on fresh blocks: every D around the groups of four, every row
    /// count around the kernel's groups of rows, a mean to subtract, magnitudes spread so that summation order
    /// would show in the last bits, and blocks with a zero row (similarity NaN). A reordered sum, an FMA or
    /// a division instead of the reciprocal each change bits here.
    func testVectorSummariesEqualTheReferenceBitForBit() {
        var sets = TileKernelSets.runnable
        if CPUISA.amx.isSupported { sets.append((CPUISA.amx.rawValue, CPUISA.amx.kernels)) }
        let seed = UInt64.random(in: 0...UInt64.max)
        var g = SeededGenerator(seed: seed)
        for d in [1, 3, 4, 5, 8, 63, 64, 65, 127, 128, 130] {
            for n in [1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 63, 64, 128] {
                let scale = pow(2.0, Float(Int.random(in: -8...8, using: &g)))
                var x = (0..<(n * d)).map { _ in g.normal() * scale * pow(2.0, Float(Int.random(in: -6...6, using: &g))) }
                let mean = (0..<d).map { _ in g.normal() * scale }
                if Int.random(in: 0..<4, using: &g) == 0 {
                    let r = Int.random(in: 0..<n, using: &g)
                    for j in 0..<d { x[r * d + j] = mean[j] }  // a row that the mean makes zero
                }
                let needSimilarity = Bool.random(using: &g)
                var reference = [Float](repeating: 0, count: d)
                let scratch = UnsafeMutablePointer<Double>.allocate(capacity: 2 * d)
                let row = UnsafeMutablePointer<Double>.allocate(capacity: d)
                defer { scratch.deallocate(); row.deallocate() }
                let s = BlockSummaries.summarizeBlock(x, rows: n, dim: d, mean: mean, meanOut: &reference,
                                                      scratch: scratch, row: row, needSimilarity: needSimilarity)
                for (name, kernels) in sets {
                    var means = [Float](repeating: .nan, count: d)
                    let got = kernels.summarizeBlock(x, n, d, mean, &means, scratch, needSimilarity ? 1 : 0)
                    let label = "\(name): seed \(seed) n \(n) D \(d) similarity \(needSimilarity)"
                    XCTAssertEqual(got.bitPattern, s.bitPattern, "\(label): \(got) against \(s)")
                    XCTAssertEqual(means.map(\.bitPattern), reference.map(\.bitPattern), label)
                }
            }
        }
    }
}
