import SpargeTestSupport
import XCTest
@testable import SpargeRing
import SpargeWorkloads

/// `keepDiagonal` (the default): under causal TopCdf, no query row may be left without a key; upstream's
/// exact rule (`keepDiagonal = false`) can leave some.
final class KeepDiagonalTests: XCTestCase {
    /// On this llm input (seed 1, N = 4096, one head) TopCdf keeps, for one query block, only the later of
    /// its two diagonal key blocks, which the block's first 64 rows cannot see under token-level causal
    /// masking: those rows get output 0 and lse = −inf. With `keepDiagonal` every row sees its own block;
    /// the rule only adds blocks, so every block of the plain mask stays computed.
    func testNoRowIsLeftWithoutKeys() throws {
        let shape = WorkloadShape(queryHeads: 1, kvHeads: 1, seqLen: 4096, headDim: 64)
        let (q, k, v) = try WorkloadGenerator(.llm, shape: shape, seed: 1).generate(rows: [0..<shape.seqLen])
        let layout = ShardLayout(seqLen: shape.seqLen, ranks: 1, blockQ: 128, blockK: 64, causal: true)
        var config = SpargeConfig(causal: true, keepDiagonal: false)
        let plain = try ShardedAttention.forward(q: q, k: k, v: v, layout: layout, config: config,
                                                 communicator: SingleProcessCommunicator(), threads: 2)
        XCTAssertGreaterThan(plain.lse.filter { $0 == -.infinity }.count, 0,
                             "the input no longer starves a row; the test needs one that does")
        config.keepDiagonal = true
        let kept = try ShardedAttention.forward(q: q, k: k, v: v, layout: layout, config: config,
                                                communicator: SingleProcessCommunicator(), threads: 2)
        XCTAssertEqual(kept.lse.filter { $0 == -.infinity }.count, 0)
        XCTAssertEqual(SpargeConfig(causal: true).keepDiagonal, true, "the diagonal is kept by default")
        let (plainBits, keptBits) = (plain.mask.denseBits(), kept.mask.denseBits())
        for i in plainBits.indices where plainBits[i] != 0 {
            XCTAssertEqual(keptBits[i], 1, "keepDiagonal removed block \(i)")
        }
        for h in 0..<1 {
            for row in 0..<kept.mask.rowCount {
                let first = row * 128 / 64
                for j in first..<(first + 2) { XCTAssertTrue(kept.mask[h, row, j], "head \(h), block \(row), key \(j)") }
            }
        }
    }
}
