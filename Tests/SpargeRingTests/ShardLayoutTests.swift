import SpargeTestSupport
import XCTest
@testable import SpargeRing

final class ShardLayoutTests: XCTestCase {
    /// Every token is owned by exactly one rank, shards are whole blocks, and only the global tail is partial.
    func testShardsPartitionTheSequenceInWholeBlocks() {
        for n in [1, 63, 64, 128, 1000, 1024, 1111, 4097, 20_000] {
            for ranks in 1...7 {
                for causal in [false, true] {
                    let layout = ShardLayout(seqLen: n, ranks: ranks, blockQ: 128, blockK: 64, causal: causal)
                    let label = "N=\(n) P=\(ranks) causal=\(causal)"
                    var owner = [Int](repeating: -1, count: n)
                    for r in 0..<ranks {
                        for range in layout.tokenRanges[r] {
                            XCTAssertEqual(range.lowerBound % 128, 0, label)
                            XCTAssertTrue(range.upperBound % 128 == 0 || range.upperBound == n, label)
                            for t in range {
                                XCTAssertEqual(owner[t], -1, "\(label): token \(t) owned twice")
                                owner[t] = r
                            }
                        }
                        XCTAssertEqual(layout.queryBlocks(rank: r).count * 128 >= layout.rowCount(rank: r), true, label)
                    }
                    XCTAssertFalse(owner.contains(-1), "\(label): a token has no owner")
                    XCTAssertEqual((0..<ranks).flatMap { layout.keyBlocks(rank: $0) }.sorted(),
                                   Array(0..<layout.keyBlockCount), label)
                    XCTAssertEqual((0..<ranks).flatMap { layout.queryBlocks(rank: $0) }.sorted(),
                                   Array(0..<layout.queryBlockCount), label)
                    for t in stride(from: 0, to: n, by: 37) {
                        let r = layout.owner(ofToken: t)
                        XCTAssertEqual(owner[t], r, label)
                        XCTAssertNotNil(layout.localRow(ofToken: t, rank: r), label)
                    }
                }
            }
        }
    }

    /// Zigzag gives rank r chunks r and 2P−1−r, so the causal work (pairs below the diagonal) is balanced:
    /// within 2·unit·N of the mean (one unit more or less per chunk), while contiguous shards would differ ~P×.
    func testZigzagBalancesCausalWork() {
        let n = 128 * 64, ranks = 4
        let layout = ShardLayout(seqLen: n, ranks: ranks, blockQ: 128, blockK: 64, causal: true)
        XCTAssertTrue(layout.zigzag)
        let work = (0..<ranks).map { r in layout.tokenRanges[r].reduce(0) { $0 + $1.reduce(0) { $0 + $1 + 1 } } }
        let mean = work.reduce(0, +) / ranks
        for w in work { XCTAssertLessThan(abs(w - mean), 2 * 128 * n, "causal work per rank \(work)") }
        XCTAssertEqual(layout.tokenRanges[0], [0..<1024, 7168..<8192])
        let contiguous = ShardLayout(seqLen: n, ranks: ranks, blockQ: 128, blockK: 64, causal: false)
        XCTAssertEqual(contiguous.tokenRanges[1], [2048..<4096])
    }
}

final class RingScheduleTests: XCTestCase {
    /// With every rank needing every block, each payload goes all the way round: P − 1 hops, as a dense ring.
    func testDenseNeedsForwardEverythingUntilTheLastRank() {
        let layout = ShardLayout(seqLen: 1000, ranks: 3, blockQ: 128, blockK: 64, causal: false)
        let all = [UInt8](repeating: 0xFF, count: NeedTable.byteCount(kvHeads: 2, keyBlocks: layout.keyBlockCount))
        let needs = NeedTable(ranks: 3, kvHeads: 2, keyBlocks: layout.keyBlockCount, packed: [all, all, all])
        let schedule = RingSchedule(layout: layout, needs: needs, headDim: 8)
        for origin in 0..<3 {
            XCTAssertEqual(schedule.byteCount(schedule.forwarded(origin: origin, afterStep: 0)),
                           schedule.denseByteCount(origin: origin))
            XCTAssertEqual(schedule.byteCount(schedule.forwarded(origin: origin, afterStep: 1)),
                           schedule.denseByteCount(origin: origin))
            XCTAssertTrue(schedule.forwarded(origin: origin, afterStep: 2).isEmpty, "no step after the last")
        }
        // the partial tail block (1000 = 15·64 + 40) carries 40 rows
        let tail = schedule.forwarded(origin: 2, afterStep: 0).last!
        XCTAssertEqual(tail.block, 15)
        XCTAssertEqual(tail.rows, 40)
    }

    /// Blocks whose keys carry extra bytes (the GPU's int8 layout at D 128: K as 128 one-byte values a row
    /// and a 16-byte scale slot, V in bf16, 256 bytes a row): offsets step by each block's own size over two
    /// kv heads, the partial tail block (40 rows) with the extra once, as a dense message and as a sparse one.
    /// The numbers are worked by hand: a full block is 64·128 + 16 + 64·256 = 24592 bytes, the tail
    /// 40·384 + 16 = 15376; in bf16 K/V they would be 32768 and 20480.
    func testPayloadOffsetsFollowTheBlockLayoutWithExtraKeyBytes() {
        let layout = ShardLayout(seqLen: 1000, ranks: 2, blockQ: 128, blockK: 64, causal: false)
        XCTAssertEqual(layout.keyBlocks(rank: 1), Array(8..<16), "rank 1 holds tokens 512..<1000")
        let nk = layout.keyBlockCount
        func bits(_ blocks: [(kvHead: Int, block: Int)]) -> [UInt8] {
            var b = [UInt8](repeating: 0, count: NeedTable.byteCount(kvHeads: 2, keyBlocks: nk))
            for (g, j) in blocks { b[(g * nk + j) >> 3] |= 1 << UInt8((g * nk + j) & 7) }
            return b
        }
        let int8 = PayloadFormat(keyBytesPerRow: 128, keyExtraBytes: 16, valueBytesPerRow: 256)
        XCTAssertEqual(int8.keyBytes(rows: 40), 40 * 128 + 16, "V starts after the scale slot")
        let all = (0..<2).flatMap { g in (0..<nk).map { (kvHead: g, block: $0) } }
        let dense = RingSchedule(layout: layout, needs: NeedTable(ranks: 2, kvHeads: 2, keyBlocks: nk, packed: [bits(all), bits(all)]),
                                 payload: int8)
        let message = dense.forwarded(origin: 1, afterStep: 0)
        XCTAssertEqual(message.map(\.offset), (0..<8).map { $0 * 24592 } + (0..<8).map { 187520 + $0 * 24592 },
                       "kv head 1 starts after 7 full blocks and the tail of kv head 0")
        XCTAssertEqual(message.map(\.rows), ([Int](repeating: 64, count: 7) + [40]) + ([Int](repeating: 64, count: 7) + [40]))
        XCTAssertEqual(dense.byteCount(message), 2 * (7 * 24592 + 15376))
        XCTAssertEqual(dense.denseByteCount(origin: 1), 375040)
        XCTAssertEqual(dense.denseByteCount(origin: 0), 2 * 8 * 24592)
        let bf16 = RingSchedule(layout: layout, needs: dense.needs, headDim: 128, format: .bf16)
        XCTAssertEqual(bf16.byteCount(bf16.forwarded(origin: 1, afterStep: 0)), 2 * (7 * 32768 + 20480))

        // Rank 0 needs block 15 of kv head 0 and blocks 8 and 15 of kv head 1 from rank 1.
        let sparse = RingSchedule(layout: layout, needs: NeedTable(ranks: 2, kvHeads: 2, keyBlocks: nk,
                                                                   packed: [bits([(0, 15), (1, 8), (1, 15)]), bits([])]),
                                  payload: int8)
        let few = sparse.forwarded(origin: 1, afterStep: 0)
        XCTAssertEqual(few, [PayloadEntry(kvHead: 0, block: 15, rows: 40, offset: 0),
                             PayloadEntry(kvHead: 1, block: 8, rows: 64, offset: 15376),
                             PayloadEntry(kvHead: 1, block: 15, rows: 40, offset: 15376 + 24592)])
        XCTAssertEqual(sparse.byteCount(few), 15376 + 24592 + 15376)
        XCTAssertEqual(sparse.forwarded(origin: 0, afterStep: 0), [], "rank 1 needs nothing of rank 0")
    }

    /// A block needed only by the next rank travels one hop; one needed by nobody else never leaves.
    func testBlocksStopAtTheLastRankThatNeedsThem() {
        let layout = ShardLayout(seqLen: 4 * 256, ranks: 4, blockQ: 128, blockK: 64, causal: false)
        let nk = layout.keyBlockCount  // 16; rank 0 owns key blocks 0...3
        func bits(_ blocks: [Int]) -> [UInt8] {
            var b = [UInt8](repeating: 0, count: NeedTable.byteCount(kvHeads: 1, keyBlocks: nk))
            for j in blocks { b[j >> 3] |= 1 << UInt8(j & 7) }
            return b
        }
        // rank 1 needs block 0, rank 3 needs block 2, nobody else needs 1 or 3
        let needs = NeedTable(ranks: 4, kvHeads: 1, keyBlocks: nk, packed: [bits([0, 1, 2, 3]), bits([0]), bits([]), bits([2])])
        XCTAssertTrue(needs.needs(rank: 1, kvHead: 0, block: 0))
        XCTAssertFalse(needs.needs(rank: 2, kvHead: 0, block: 0))
        let schedule = RingSchedule(layout: layout, needs: needs, headDim: 4)
        XCTAssertEqual(schedule.forwarded(origin: 0, afterStep: 0).map(\.block), [0, 2])
        XCTAssertEqual(schedule.forwarded(origin: 0, afterStep: 1).map(\.block), [2])
        XCTAssertEqual(schedule.forwarded(origin: 0, afterStep: 2).map(\.block), [2], "rank 2 passes it to rank 3")
        XCTAssertEqual(schedule.forwarded(origin: 0, afterStep: 3).map(\.block), [], "no rank after the last")
        XCTAssertEqual(schedule.forwarded(origin: 0, afterStep: 1).first?.offset, 0, "offsets restart per message")
    }

    /// Need bits are per kv head: a block is needed when any query head of the group computes it.
    func testNeedBitsAreTheOrOverTheQueryHeadsOfAGroup() {
        var bits = [UInt8](repeating: 0, count: 4 * 2 * 5)
        bits[(1 * 2 + 0) * 5 + 3] = 1  // head 1 → kv head 0
        bits[(2 * 2 + 1) * 5 + 4] = 1  // head 2 → kv head 1
        let mask = BlockMask(heads: 4, keyBlocks: 5, queryBlocks: [0, 1], dense: bits)
        let packed = NeedTable.localBits(mask: mask, kvHeads: 2)
        let table = NeedTable(ranks: 1, kvHeads: 2, keyBlocks: 5, packed: [packed])
        let set = (0..<2).flatMap { g in (0..<5).filter { table.needs(rank: 0, kvHead: g, block: $0) }.map { [g, $0] } }
        XCTAssertEqual(set, [[0, 3], [1, 4]])
    }

    /// The bitset is the OR of every key of every row, whatever mix of prefix rows (`0..<n`, which take a
    /// shortcut) and other rows a mask holds: fresh random masks against the key-by-key OR.
    func testNeedBitsOfRandomMasksEqualTheKeyByKeyOr() {
        var g = SeededGenerator(seed: UInt64.random(in: 0...UInt64.max))
        for _ in 0..<20 {
            let (kvHeads, group, nk, rows) = (Int.random(in: 1...3, using: &g), Int.random(in: 1...3, using: &g),
                                              Int.random(in: 1...70, using: &g), Int.random(in: 1...6, using: &g))
            var builder = BlockMask.Builder(heads: kvHeads * group, keyBlocks: nk, queryBlocks: Array(0..<rows))
            var expected = Set<[Int]>()
            for h in 0..<(kvHeads * group) {
                for _ in 0..<rows {
                    let keys = Bool.random(using: &g)
                        ? Array(0..<Int.random(in: 0...nk, using: &g))
                        : (0..<nk).filter { _ in Int.random(in: 0..<4, using: &g) == 0 }
                    builder.appendRow(keys)
                    for j in keys { expected.insert([h / group, j]) }
                }
            }
            let table = NeedTable(ranks: 1, kvHeads: kvHeads, keyBlocks: nk,
                                  packed: [NeedTable.localBits(mask: builder.mask, kvHeads: kvHeads)])
            let set = (0..<kvHeads).flatMap { g in (0..<nk).filter { table.needs(rank: 0, kvHead: g, block: $0) }.map { [g, $0] } }
            XCTAssertEqual(Set(set), expected)
            XCTAssertEqual(set.count, expected.count)
        }
    }
}

final class PackedKeySummariesTests: XCTestCase {
    /// Runs of random summaries (random flags too, so that a flag put in the wrong place shows), handed out to
    /// three "ranks" out of block order as a zigzag layout does, packed per rank and concatenated in rank order
    /// as the allgather does: the gathered value holds every block's mean and flag where
    /// `BlockSummaries(concatenating:)` of the runs in block order puts them.
    func testGatheredRunsGiveEveryBlockInPlace() throws {
        var generator = SeededGenerator(seed: 11)
        let (heads, dim) = (3, 5)
        let runBlocks = [0..<2, 2..<3, 3..<7, 7..<8, 8..<11, 11..<12]
        let runs = runBlocks.map { blocks in
            BlockSummaries(heads: heads, dim: dim, blockSize: 64, firstBlock: blocks.lowerBound, count: blocks.count,
                           means: (0..<(heads * blocks.count * dim)).map { _ in Float.random(in: -2...2, using: &generator) },
                           flags: (0..<(heads * blocks.count)).map { _ in UInt8.random(in: 0...1, using: &generator) })
        }
        let ranks = [[0, 5], [1, 4], [2, 3]]  // rank r holds runs ranks[r], in that order
        let sent = ranks.map { PackedKeySummaries.pack($0.map { runs[$0] }) }
        let gathered = try PackedKeySummaries(heads: heads, dim: dim, blockSize: 64, keyBlocks: 12,
                                              blocksOfRanks: ranks.map { $0.map { runBlocks[$0] } }) { all in
            XCTAssertEqual(all.count, sent.reduce(0) { $0 + $1.count })
            all.copyBytes(from: sent.joined())
        }
        let expected = BlockSummaries(concatenating: runs)
        XCTAssertEqual(gathered.summaries, expected)
        XCTAssertEqual(gathered.flags, expected.flags)
        XCTAssertEqual(sent[0].count, PackedKeySummaries.byteCount(blocks: 3, heads: heads, dim: dim))

        // A layout whose runs leave a block out is refused before anything is gathered.
        XCTAssertThrowsError(try PackedKeySummaries(heads: heads, dim: dim, blockSize: 64, keyBlocks: 12,
                                                    blocksOfRanks: [[0..<5], [6..<12]]) { _ in XCTFail("gathered") })
    }
}
