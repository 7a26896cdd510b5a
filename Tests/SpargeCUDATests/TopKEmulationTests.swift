import Foundation
@testable import SpargeKernels
import SpargeTestSupport
import XCTest
@testable import SpargeCUDA

/// TopK's radix select (`sparge_softmax_rows`, then `sparge_topk_rows` with real threads a block meeting at
/// real barriers) emulated on the host and compared with the CPU's `MaskPredictor` bit for bit, on fresh
/// random rows built to reach each branch of the selection: the k-th key inside a run of equal probabilities
/// (key blocks sharing one of a few means), fewer positive probabilities than k (scores spread past exp's
/// underflow at −104), k = 1 and k = nk, causal limits, nk not a power of two, the GPU's 256 threads on a row
/// long enough for the driver to pick this path, rows cached in shared memory, read again from the exps, or
/// both in one launch. The kernels are driven directly, so short rows take the path too.
///
/// Exact comparison: the kernels repeat the CPU's arithmetic, so one block off is a failure.
final class TopKEmulationTests: XCTestCase {
    /// How many keys `sparge_topk_rows` may cache: every row's, none (each pass reads the exps), or up to `n`.
    enum Cache { case all, none, upTo(Int) }

    struct Case {
        let label: String
        let keyBlocks: Int
        let causal: Bool
        let fraction: Float
        /// Distinct key means (0: each key block its own): fewer means, longer runs of equal scores.
        let pool: Int
        /// Key means scaled by 1 or by this gain, at random: scores then spread past the underflow.
        let gain: Float
        /// Each key block's mean also scaled by 1 + jitter·N(0, 1): scores of one pool mean a few ulps apart,
        /// whose exps differ and whose probabilities (e·(1/sum), rounded) often do not.
        var jitter: Float = 0
        /// Query blocks drawn for each head (the last is added).
        var rows = 6
        let threads: Int
        let cache: Cache
    }

    static let cases: [Case] = [
        .init(label: "ties, k inside a run", keyBlocks: 300, causal: false, fraction: 0.3, pool: 4, gain: 1, threads: 32, cache: .all),
        .init(label: "ties, causal, streamed", keyBlocks: 300, causal: true, fraction: 0.3, pool: 4, gain: 1, threads: 37, cache: .none),
        .init(label: "underflow: fewer positive than k", keyBlocks: 257, causal: false, fraction: 0.5, pool: 6, gain: 30,
              threads: 32, cache: .all),
        .init(label: "underflow, causal, partly cached", keyBlocks: 500, causal: true, fraction: 0.5, pool: 6, gain: 30,
              threads: 64, cache: .upTo(120)),
        .init(label: "k = 1", keyBlocks: 129, causal: true, fraction: 0.001, pool: 3, gain: 1, threads: 16, cache: .all),
        .init(label: "k = nk", keyBlocks: 75, causal: true, fraction: 1, pool: 3, gain: 30, threads: 16, cache: .all),
        .init(label: "near ties: equal p from distinct exps", keyBlocks: 400, causal: false, fraction: 0.1, pool: 2, gain: 1,
              jitter: 3e-7, rows: 24, threads: 32, cache: .all),
        .init(label: "distinct scores", keyBlocks: 1000, causal: false, fraction: 0.02, pool: 0, gain: 1, threads: 64, cache: .all),
        .init(label: "the GPU's launch", keyBlocks: 4100, causal: true, fraction: 0.02, pool: 40, gain: 1, threads: 256, cache: .all),
    ]

    func testRadixSelectEqualsTheCPU() throws {
        let seed = UInt64.random(in: 0...UInt64.max)
        var rng = SeededGenerator(seed: seed)
        let dim = 16
        let emulator = try MaskKernelEmulator.build(dim: dim)
        var seen = Coverage()
        for c in Self.cases {
            var config = SpargeConfig(blockQ: 64, blockK: 64, selection: .topK(c.fraction), causal: c.causal)
            config.simThreshold = 0.25
            let seqLen = c.keyBlocks * 64 - 13  // a partial last block
            let (queries, blocks, keys) = Self.rows(c, dim: dim, seqLen: seqLen, using: &rng)
            let name = "\(c.label), nk=\(c.keyBlocks), seed \(seed)"
            let expected = try MaskPredictor.predictRows(querySummaries: queries, queryBlocks: blocks, keySummaries: keys,
                                                         config: config, headDim: dim, queryHeads: 2, kvHeads: 1, seqLen: seqLen)
            let cached: Int
            switch c.cache {
            case .all: cached = (c.keyBlocks + 3) / 4 * 4
            case .none: cached = 0
            case .upTo(let n): cached = n
            }
            let got = try emulator.predictRows(queries: queries, blocks: blocks, keys: keys, config: config, heads: 2,
                                               kvHeads: 1, seqLen: seqLen, selection: .radix(threads: c.threads, cachedKeys: cached))
            XCTAssertEqual(zip(got, expected.denseBits()).filter { $0 != $1 }.count, 0, "mask blocks differ: \(name)")
            XCTAssertEqual(got.count, expected.denseBits().count, name)
            seen.add(Self.softmaxRows(queries: queries, blocks: blocks, keys: keys, config: config, dim: dim))
            let limits = CUDAMaskPredictor.RowRule(config: config, queryBlocks: blocks, keyBlocks: c.keyBlocks, headDim: dim).limits
            if limits.contains(where: { Int($0) > cached }) { seen.streamedOrMixed += 1 }
        }
        XCTAssertEqual(RowSelection(keyBlocks: 4100, mode: 2, sharedLimit: 227 * 1024).octets, true,
                       "the last case's rows should take the radix select in the driver")
        // The sweep must reach the branches it is for (else it tests less than it says).
        XCTAssertGreaterThan(seen.splitTies, 0, "no row had its k-th key inside a run of equal positive probabilities")
        XCTAssertGreaterThan(seen.splitZeros, 0, "no row took only some of its zero probabilities")
        XCTAssertGreaterThan(seen.roundedTogether, 0, "no row had equal probabilities from distinct exps")
        XCTAssertGreaterThan(seen.streamedOrMixed, 0, "no case read keys again from global memory")
    }

    /// The driver's choice: the sort where a row fits 48 KiB, the radix select for longer TopK rows (caching
    /// what the device's shared memory holds), the heap for longer TopCdf rows and for dense ones.
    func testRowSelectionTakesTheRadixSelectForLongTopKRows() {
        let h200 = 227 * 1024
        // 16384 keys (64 KiB) after the bins (8 KiB), two scan buffers of 256 and three words.
        let million = RowSelection.TopKLaunch(keyBlocks: 16384, sharedLimit: h200)
        XCTAssertEqual([million.threads, million.cachedKeys, million.sharedBytes], [256, 16384, 65536 + 10252])
        XCTAssertEqual(RowSelection(keyBlocks: 16384, mode: 2, sharedLimit: h200), .radix(million))
        XCTAssertEqual(RowSelection(keyBlocks: 16384, mode: 2, sharedLimit: h200, radixTopK: false), .heap)
        XCTAssertEqual(RowSelection(keyBlocks: 16384, mode: 1, sharedLimit: h200), .heap)
        XCTAssertEqual(RowSelection(keyBlocks: 16384, mode: 0, sharedLimit: h200), .heap)
        XCTAssertEqual(RowSelection(keyBlocks: 512, mode: 2, sharedLimit: h200), .sorted(threads: 256, sharedBytes: 6144))
        // 4096 keys a row: 32 KiB of sort keys and 16 KiB of probabilities, past 48 KiB with the static part.
        XCTAssertEqual(RowSelection(keyBlocks: 3500, mode: 2, sharedLimit: h200), .sorted(threads: 256, sharedBytes: 32768 + 14000))
        XCTAssertEqual(RowSelection(keyBlocks: 4096, mode: 2, sharedLimit: h200),
                       .radix(RowSelection.TopKLaunch(keyBlocks: 4096, sharedLimit: h200)))
        // Without the opt-in, what 48 KiB holds is cached (a multiple of 4 keys); longer rows stream.
        let small = RowSelection.TopKLaunch(keyBlocks: 16384, sharedLimit: 48 * 1024)
        XCTAssertEqual([small.cachedKeys, small.sharedBytes], [9724, 9724 * 4 + 10252])
        XCTAssertEqual(RowSelection.TopKLaunch(keyBlocks: 16384, sharedLimit: 1000).cachedKeys, 0)
        // Scores in whole octets plus 1/sum for the radix select; the heap's 8-byte keys beside its scores.
        XCTAssertEqual(RowSelection.radix(million).scratchBytesPerRow(keyBlocks: 13), 16 * 4 + 4)
        XCTAssertEqual(RowSelection.radix(million).scoreBytes(rows: 3, keyBlocks: 13), 3 * 16 * 4)
        XCTAssertEqual(RowSelection.heap.scratchBytesPerRow(keyBlocks: 13), 13 * 12)
        XCTAssertEqual(RowSelection.heap.scoreBytes(rows: 3, keyBlocks: 13), 3 * 13 * 4)
    }

    /// Summaries of 2 query heads (a random few query blocks each, the last always) and 1 kv head of
    /// `c.keyBlocks` blocks: queries N(0, 2²); key means from the pool, each times 1 or the gain; a tenth of the
    /// key blocks and a twentieth of the query blocks not self-similar.
    static func rows(_ c: Case, dim: Int, seqLen: Int, using rng: inout SeededGenerator)
        -> (BlockSummaries, [Int], BlockSummaries) {
        let nk = c.keyBlocks, nq = (seqLen + 63) / 64
        var blocks = Set((0..<c.rows).map { _ in Int.random(in: 0..<nq, using: &rng) })
        blocks.insert(nq - 1)
        let queryBlocks = blocks.sorted()
        let queryMeans = (0..<(2 * queryBlocks.count * dim)).map { _ in 2 * rng.normal() }
        let queryFlags = (0..<(2 * queryBlocks.count)).map { _ in UInt8(Int.random(in: 0..<20, using: &rng) == 0 ? 0 : 1) }
        let pool = (0..<max(1, c.pool)).map { _ in (0..<dim).map { _ in rng.normal() } }
        var keyMeans: [Float] = []
        for _ in 0..<nk {
            let base = c.pool == 0 ? (0..<dim).map { _ in rng.normal() } : pool[Int.random(in: 0..<c.pool, using: &rng)]
            let gain: Float = (Bool.random(using: &rng) ? 1 : c.gain) * (1 + c.jitter * rng.normal())
            keyMeans += base.map { $0 * gain }
        }
        let keyFlags = (0..<nk).map { _ in UInt8(Int.random(in: 0..<10, using: &rng) == 0 ? 0 : 1) }
        let queries = BlockSummaries(heads: 2, dim: dim, blockSize: 64, firstBlock: queryBlocks[0], count: queryBlocks.count,
                                     means: queryMeans, flags: queryFlags)
        let keys = BlockSummaries(heads: 1, dim: dim, blockSize: 64, firstBlock: 0, count: nk, means: keyMeans, flags: keyFlags)
        return (queries, queryBlocks, keys)
    }

    /// Which branches a case's rows reach, from the CPU's own probabilities.
    struct Coverage {
        var splitTies = 0, splitZeros = 0, streamedOrMixed = 0, roundedTogether = 0

        mutating func add(_ rows: [(e: [Float], p: [Float], keep: Int)]) {
            for (e, p, keep) in rows {
                var exps: [UInt32: Float] = [:]
                for (x, y) in zip(e, p) where y > 0 {
                    if let other = exps[y.bitPattern], other != x { roundedTogether += 1; break }
                    exps[y.bitPattern] = x
                }
                let sorted = p.sorted(by: >)
                let kth = sorted[keep - 1]
                let above = sorted.prefix { $0 > kth }.count, equal = sorted.filter { $0 == kth }.count
                if equal > keep - above { if kth > 0 { splitTies += 1 } else { splitZeros += 1 } }
            }
        }
    }

    /// Each row's probabilities as the CPU forms them (`MaskPredictor.scoreRows`, then the Float softmax of
    /// `selectBlocks`), and its k — only to count which branches the rows reach.
    static func softmaxRows(queries: BlockSummaries, blocks: [Int], keys: BlockSummaries, config: SpargeConfig,
                            dim: Int) -> [(e: [Float], p: [Float], keep: Int)] {
        let nk = keys.count
        guard case .topK(let fraction) = config.selection else { return [] }
        let keep = min(MaskPredictor.topKCount(fraction: fraction, keyBlocks: nk), nk)
        let keyMeans = keys.means, queryMeans = queries.means.map(Double.init)
        var scores = [Float](repeating: 0, count: blocks.count * nk)
        var rows: [(e: [Float], p: [Float], keep: Int)] = []
        for h in 0..<2 {
            queryMeans.withUnsafeBufferPointer { q in
                keyMeans.withUnsafeBufferPointer { k in
                    keys.flags.withUnsafeBufferPointer { f in
                        MaskPredictor.scoreRows(0..<blocks.count, queryBlocks: blocks, queries: q.baseAddress! + h * blocks.count * dim,
                                                keys: k.baseAddress!, keyFlags: f.baseAddress!, keyBlocks: nk, headDim: dim,
                                                scale: Float(1 / Double(dim).squareRoot()), config: config, into: &scores)
                    }
                }
            }
            for r in 0..<blocks.count {
                let s = scores[(r * nk)..<((r + 1) * nk)]
                let mx = s.max()!
                guard mx > -.infinity else { continue }
                let e = s.map { $0 == -.infinity ? 0 : PortableExp.exp($0 - mx) }
                var sum: Float = 0
                for v in e { sum += v }
                let inv = 1 / sum
                rows.append((e, e.map { $0 * inv }, keep))
            }
        }
        return rows
    }
}
