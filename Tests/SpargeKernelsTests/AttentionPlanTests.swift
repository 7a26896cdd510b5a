@testable import SpargeKernels
import SpargeTestSupport
import XCTest

/// `AttentionPlan` against a plain restatement of what it promises: every (head, query block) once, its tiles
/// covering its rows, each tile's visits its mask row cut at the tile's causal diagonal, and within a head the
/// blocks heaviest first (the last tile's visits), the later block first among equals.
final class AttentionPlanTests: XCTestCase {
    func testPlanCoversEveryBlockInTheOrderItPromises() throws {
        let seed = UInt64.random(in: 0...UInt64.max)
        var rng = SeededGenerator(seed: seed)
        for trial in 0..<30 {
            var config = SpargeConfig()
            config.blockQ = [64, 128][trial % 2]
            config.blockK = [32, 64, 128][Int.random(in: 0...2, using: &rng)]
            config.computeTileQ = [32, 64][Int.random(in: 0...1, using: &rng)]
            config.causal = Bool.random(using: &rng)
            let seqLen = Int.random(in: 1...2000, using: &rng)  // partial last blocks, or a single one
            let nq = (seqLen + config.blockQ - 1) / config.blockQ, nk = (seqLen + config.blockK - 1) / config.blockK
            // Some of the query blocks, in any order (a rank's share of the ring's zigzag).
            let queryBlocks = Array((0..<nq).shuffled(using: &rng).prefix(Int.random(in: 1...nq, using: &rng)))
            let heads = Int.random(in: 1...3, using: &rng)
            var builder = BlockMask.Builder(heads: heads, keyBlocks: nk, queryBlocks: queryBlocks)
            for _ in 0..<heads {
                for i in queryBlocks {
                    let limit = config.causal
                        ? MaskPredictor.blockCausalLimit(queryBlock: i, blockQ: config.blockQ, blockK: config.blockK, keyBlocks: nk)
                        : nk
                    // Rows of every length, equal lengths often (TopK), so that the tie-break is exercised.
                    let p = [0.0, 1.0, 0.3, 0.3, Double.random(in: 0...1, using: &rng)][Int.random(in: 0...4, using: &rng)]
                    builder.appendRow((0..<limit).filter { _ in Double.random(in: 0..<1, using: &rng) < p })
                }
            }
            let mask = builder.mask
            let spans = mask.queryBlockSpans(blockQ: config.blockQ, seqLen: seqLen)
            let rows = spans.reduce(0) { $0 + $1.rows }
            let plan = try AttentionPlan(mask: mask, queryHeads: heads, queryRows: rows, kvHeads: 1, config: config, seqLen: seqLen)
            let context = "trial \(trial), seed \(seed)"

            var expected: [AttentionPlan.Block] = []
            var expectedTiles: [AttentionPlan.Tile] = []
            for h in 0..<heads {
                // (weight, start, span) sorted by the promise, with the standard library's sort.
                func cut(_ row: Range<Int>, lastRow: Int) -> Range<Int> {
                    guard config.causal else { return row }
                    return row.lowerBound..<(row.lowerBound + mask.keys[row].prefix { Int($0) <= lastRow / config.blockK }.count)
                }
                let order = spans.map { span -> (weight: Int, start: Int, span: (row: Int, start: Int, rows: Int, localRow: Int)) in
                    let r = h * mask.rowCount + span.row
                    return (cut(mask.rowStarts[r]..<mask.rowStarts[r + 1], lastRow: span.start + span.rows - 1).count, span.start, span)
                }.sorted { ($0.weight, $0.start) > ($1.weight, $1.start) }
                for entry in order {
                    let span = entry.span, r = h * mask.rowCount + span.row
                    let row = mask.rowStarts[r]..<mask.rowStarts[r + 1]
                    let first = expectedTiles.count
                    var last = 0..<0
                    for t in stride(from: 0, to: span.rows, by: config.computeTileQ) {
                        let count = min(config.computeTileQ, span.rows - t)
                        last = cut(row, lastRow: span.start + t + count - 1)
                        expectedTiles.append(.init(head: h, localRow: span.localRow + t, rowCount: count,
                                                   queryStart: span.start + t, visits: last))
                    }
                    expected.append(.init(head: h, tileRange: first..<expectedTiles.count, visits: last))
                }
            }
            XCTAssertEqual(plan.blocks, expected, context)
            XCTAssertEqual(plan.tiles, expectedTiles, context)
        }
    }
}
