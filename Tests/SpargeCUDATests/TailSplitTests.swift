import Foundation
import SpargeKernels
import SpargeTestSupport
import XCTest
@testable import SpargeCUDA

/// The tail split of one rank's Hopper launch (`TailSplit`): which launches split, the split
/// list laid out by `sparge_work_split` and the parts combined by `sparge_merge_parts`, both compiled as C++ for
/// the host (`ResidentKernelEmulationTests`' harness). The Hopper kernel's side, each part's state left in its
/// slot, runs in `sparge selftest-cuda` on the device machine against the CPU.
final class TailSplitTests: XCTestCase {
    func testSplitOnlyWhereTheLastWaveEndsSooner() throws {
        // The shape: 2048 CTAs on 132 SMs, 68 in the last wave; 7 parts end it after ⌈476/132⌉/7 = 4/7.
        let long = TailSplit.minimumSteps
        XCTAssertEqual(TailSplit.choose(ctas: 2048, multiprocessors: 132, shortestSteps: long),
                       TailSplit(kept: 1980, splitCTAs: 68, parts: 7))
        XCTAssertNil(TailSplit.choose(ctas: 2048, multiprocessors: 132, shortestSteps: long - 1), "short lists")
        XCTAssertNil(TailSplit.choose(ctas: 2112, multiprocessors: 132, shortestSteps: long), "whole waves")
        XCTAssertNil(TailSplit.choose(ctas: 100, multiprocessors: 132, shortestSteps: long), "one partial wave")
        XCTAssertNil(TailSplit.choose(ctas: 256, multiprocessors: 132, shortestSteps: long), "124 of 132: no split ends it sooner")
        // The gate's list length: a dense row's blocks in steps; a causal mask's first row is one step.
        let dense = BlockMask.full(heads: 2, keyBlocks: 160, queryBlocks: Array(0..<80), causalShape: nil)
        XCTAssertEqual(TailSplit.shortestSteps(of: dense, blockK: 64), 80)
        XCTAssertEqual(TailSplit.shortestSteps(of: dense, blockK: 128), 160)
        let causal = BlockMask.full(heads: 2, keyBlocks: 160, queryBlocks: Array(0..<80), causalShape: (128, 64))
        XCTAssertEqual(TailSplit.shortestSteps(of: causal, blockK: 64), 1)
        var rng = SeededGenerator(seed: UInt64.random(in: 0...UInt64.max))
        for _ in 0..<2000 {
            let sms = Int.random(in: 1...200, using: &rng), ctas = Int.random(in: 1...5000, using: &rng)
            guard let split = TailSplit.choose(ctas: ctas, multiprocessors: sms, shortestSteps: TailSplit.minimumSteps) else { continue }
            XCTAssertEqual(split.kept + split.splitCTAs, ctas)
            XCTAssertEqual(split.kept % sms, 0, "the kept CTAs fill whole waves")
            XCTAssertTrue((2...TailSplit.mostParts).contains(split.parts))
            XCTAssertLessThan(Double((split.splitCTAs * split.parts + sms - 1) / sms) / Double(split.parts), 0.75)
        }
    }

    /// Every split CTA's parts cover its tiles' lists once, in order, in runs of whole steps shared by its
    /// tiles, each with its own slot; the CTAs before them are the unsplit list's. Random masks, causal and
    /// not (a CTA's two tiles then have lists of different lengths), 64- and 128-key blocks (two entries a
    /// step and one), with SM counts that make a split.
    func testSplitPartsCoverEachListOnceInWholeSteps() throws {
        let seed = UInt64.random(in: 0...UInt64.max)
        var rng = SeededGenerator(seed: seed)
        for (heads, seqLen, blockK, causal) in [(2, 2000, 64, false), (3, 1500, 128, true), (4, 2048, 64, true), (1, 3000, 128, false)] {
            let (blockQ, tileQ, perCTA) = (128, 64, 2)
            let (nq, nk) = ((seqLen + blockQ - 1) / blockQ, (seqLen + blockK - 1) / blockK)
            var bits = [UInt8](repeating: 0, count: heads * nq * nk)
            for row in 0..<(heads * nq) {
                let r = row % nq, p = row % 7 == 0 ? 1.0 : Double.random(in: 0...0.7, using: &rng)
                let last = causal ? min(nk - 1, (min(seqLen, (r + 1) * blockQ) - 1) / blockK) : nk - 1
                for j in 0...last where Double.random(in: 0..<1, using: &rng) < p { bits[row * nk + j] = 1 }
            }
            let mask = BlockMask(heads: heads, keyBlocks: nk, queryBlocks: Array(0..<nq), dense: bits)
            let shape = DeviceWorkList.Shape(heads: Int32(heads), queryBlocks: Int32(nq), blockQ: Int32(blockQ),
                                             tileQ: Int32(tileQ), blockK: Int32(blockK), seqLen: Int32(seqLen),
                                             causal: causal ? 1 : 0, perCTA: Int32(perCTA), keyBlocks: Int32(nk))
            let (tiles, ctas) = DeviceWorkList.counts(shape)
            let split = try XCTUnwrap((2..<ctas).reversed().lazy.compactMap {
                TailSplit.choose(ctas: ctas, multiprocessors: $0 * 2 / 3, shortestSteps: TailSplit.minimumSteps)
            }.first { $0.splitCTAs > 1 })
            let stepEntries = TailSplit.stepEntries(blockK: blockK)
            let context = "H=\(heads) N=\(seqLen) ×\(blockK) causal \(causal), \(split), seed \(seed)"
            var input = Data()
            input.append(ints: [heads, nq, blockQ, tileQ, blockK, seqLen, causal ? 1 : 0, perCTA, nk, tiles, ctas, 8,
                                split.kept, split.splitCTAs, split.parts, stepEntries])
            input.append(ints: mask.rowStarts)
            mask.keys.withUnsafeBytes { input.append(contentsOf: $0) }
            let out = try program().run("worklist", input)
            let whole = out.values(Int32.self, at: tiles * 16, count: ctas * perCTA * 4)
            let parted = out.values(Int32.self, at: tiles * 16 + ctas * perCTA * 16, count: split.ctas * perCTA * 4)
            func entry(_ list: [Int32], cta: Int, _ c: Int) -> [Int32] { Array(list[(4 * (cta * perCTA + c))..<(4 * (cta * perCTA + c) + 4)]) }

            XCTAssertEqual(split.apply(to: whole, perCTA: perCTA, stepEntries: stepEntries), parted,
                           "the host's split (a dense pass's list) differs from the device's, " + context)
            XCTAssertEqual(Array(parted.prefix(split.kept * perCTA * 4)), Array(whole.prefix(split.kept * perCTA * 4)), context)
            var slots = Set<Int32>()
            for j in 0..<split.splitCTAs {
                let own = (0..<perCTA).map { entry(whole, cta: split.kept + j, $0) }
                let parts = (0..<split.parts).map { p in (0..<perCTA).map { entry(parted, cta: split.kept + j * split.parts + p, $0) } }
                var stepsOfParts: [Int] = []
                for p in 0..<split.parts {
                    // The CTA's tiles read one list from one place: a part's offset is shared, in whole steps.
                    let offsets = Set((0..<perCTA).filter { own[$0][0] >= 0 }.map { parts[p][$0][1] - own[$0][1] })
                    XCTAssertEqual(offsets.count, 1, "CTA \(j) part \(p)'s tiles start apart, " + context)
                    XCTAssertEqual(Int(offsets.first!) % stepEntries, 0, "CTA \(j) part \(p) starts inside a step, " + context)
                    stepsOfParts.append((parts[p].map { Int($0[2]) }.max()! + stepEntries - 1) / stepEntries)
                }
                for c in 0..<perCTA {
                    guard own[c][0] >= 0 else {
                        for p in 0..<split.parts { XCTAssertEqual(parts[p][c], [-1, 0, 0, 0], "CTA \(j)'s empty partner, " + context) }
                        continue
                    }
                    var covered: [Int32] = []
                    for p in 0..<split.parts {
                        XCTAssertEqual(parts[p][c][0], own[c][0], "CTA \(j) part \(p)'s tile, " + context)
                        XCTAssertEqual(parts[p][c][3], Int32(1 + (j * split.parts + p) * perCTA + c), "slot, " + context)
                        XCTAssertTrue(slots.insert(parts[p][c][3]).inserted, "slot \(parts[p][c][3]) twice, " + context)
                        covered += (0..<parts[p][c][2]).map { parts[p][c][1] + $0 }
                    }
                    XCTAssertEqual(covered, (0..<own[c][2]).map { own[c][1] + $0 }, "CTA \(j) tile \(c)'s list, " + context)
                }
                // The longest list's steps go evenly to the parts.
                XCTAssertLessThanOrEqual(stepsOfParts.max()! - stepsOfParts.min()!, 1, "CTA \(j): \(stepsOfParts), " + context)
            }
        }
    }

    /// The merged parts are the softmax over all their keys: each part's state (m, l, O) is formed in Double
    /// from random scores and values and rounded to Float as the kernel leaves it; the merge must give
    /// O / l and the LSE of the whole row (with int8's row shift). Parts without keys (m = −∞, l = 0), a row
    /// no part visited (zeros and −∞), an empty partner and D = 42 included; a partial tile of 36 rows is
    /// merged last, after the tile whose rows follow its own, and the slot rows past it hold NaN, so that a
    /// merge writing or reading past a tile's rows shows. Tolerance 1e-5 on outputs of |v| ≤ 2: each part's
    /// state was formed against its exact maximum but carries it rounded to Float, and a maximum up to 44
    /// moves by half an ulp, 2⁻¹⁹, which scales the part's weight by up to 1.3e-6 (×ln 2); two parts so
    /// weighed can move an output by 2 · 1.3e-6 · 2 = 5.3e-6 (2.2e-6 was seen), beside the states' own Float
    /// roundings (2⁻²⁴ each). A part weighed wrongly or left out errs by O(1).
    func testMergedPartsAreTheSoftmaxOfTheWholeRow() throws {
        let seed = UInt64.random(in: 0...UInt64.max)
        var rng = SeededGenerator(seed: seed)
        let (heads, rows, dim, tileRows, perCTA, parts) = (2, 100, 42, 64, 2, 3)
        // Tiles: (head, first row, rows, first token); CTA 0 is kept whole, CTAs 1 and 2 are split:
        // CTA 1 holds tile 2 and an empty partner, CTA 2 tiles 0 and 1 (whose 36 rows end where tile 2's
        // begin); tile 3 is not split (not written).
        let table: [Int32] = [0, 0, 64, 0, 0, 64, 36, 64, 1, 0, 64, 0, 1, 64, 36, 64]
        let splitTiles: [[Int32]] = [[2, -1], [0, 1]]
        var work: [Int32] = [3, 0, 0, 0, -1, 0, 0, 0]
        for (j, pair) in splitTiles.enumerated() {
            for p in 0..<parts {
                for (c, tile) in pair.enumerated() {
                    work += tile < 0 ? [-1, 0, 0, 0] : [tile, 0, 0, Int32(1 + (j * parts + p) * perCTA + c)]
                }
            }
        }
        let slots = splitTiles.count * parts * perCTA
        var partialO = [Float](repeating: .nan, count: slots * tileRows * dim)
        var partialML = [Float](repeating: .nan, count: slots * tileRows * 2)
        let shifts = (0..<(heads * rows)).map { _ in Float.random(in: -3...3, using: &rng) }
        var expectedO = [Float](repeating: 1e30, count: heads * rows * dim), expectedLSE = [Float](repeating: 1e30, count: heads * rows)
        for (j, pair) in splitTiles.enumerated() {
            for (c, tile) in pair.enumerated() where tile >= 0 {
                let (head, first, count) = (Int(table[4 * Int(tile)]), Int(table[4 * Int(tile) + 1]), Int(table[4 * Int(tile) + 2]))
                for r in 0..<count {
                    let row = head * rows + first + r
                    var all: [(score: Double, value: [Double])] = []
                    for p in 0..<parts {
                        let slotRow = ((j * parts + p) * perCTA + c) * tileRows + r
                        let keys = (r == 5 || (r + p) % 4 == 0) ? 0 : Int.random(in: 1...9, using: &rng)
                        let part = (0..<keys).map { _ in
                            (score: Double.random(in: -30...30, using: &rng) + Double(p * 7),
                             value: (0..<dim).map { _ in Double.random(in: -2...2, using: &rng) })
                        }
                        all += part
                        let m = part.map(\.score).max() ?? -.infinity
                        let weights = part.map { exp2($0.score - m) }
                        partialML[2 * slotRow] = Float(m)
                        partialML[2 * slotRow + 1] = Float(weights.reduce(0, +))
                        for d in 0..<dim {
                            partialO[slotRow * dim + d] = Float(zip(weights, part).reduce(0) { $0 + $1.0 * $1.1.value[d] })
                        }
                    }
                    guard let m = all.map(\.score).max() else {
                        for d in 0..<dim { expectedO[row * dim + d] = 0 }
                        expectedLSE[row] = -.infinity
                        continue
                    }
                    let weights = all.map { exp2($0.score - m) }, l = weights.reduce(0, +)
                    for d in 0..<dim {
                        expectedO[row * dim + d] = Float(zip(weights, all).reduce(0) { $0 + $1.0 * $1.1.value[d] } / l)
                    }
                    expectedLSE[row] = Float((m + log2(l)) * log(2.0)) + shifts[row]
                }
            }
        }
        var input = Data()
        input.append(ints: [1, splitTiles.count, parts, perCTA, table.count / 4, rows, dim, tileRows, heads, 1])
        work.withUnsafeBytes { input.append(contentsOf: $0) }
        table.withUnsafeBytes { input.append(contentsOf: $0) }
        input.append(floats: partialO)  // NaN in the slot rows no part writes
        input.append(floats: partialML)
        input.append(floats: shifts)
        let out = try program().run("merge", input)
        let o = out.values(Float.self, count: heads * rows * dim)
        let lse = out.values(Float.self, at: heads * rows * dim * 4, count: heads * rows)
        var worst = 0.0
        for i in 0..<o.count {
            if expectedO[i] == 1e30 { XCTAssertEqual(o[i], 1e30, "element \(i) of a tile that is not split, seed \(seed)"); continue }
            worst = max(worst, abs(Double(o[i] - expectedO[i])))
        }
        XCTAssertLessThan(worst, 1e-5, "output, seed \(seed)")
        for i in 0..<lse.count {
            if expectedLSE[i].isInfinite || expectedLSE[i] == 1e30 {
                XCTAssertEqual(lse[i], expectedLSE[i], "row \(i), seed \(seed)")
            } else {
                XCTAssertEqual(Double(lse[i]), Double(expectedLSE[i]), accuracy: 2e-6 * max(1, abs(Double(expectedLSE[i]))),
                               "LSE of row \(i), seed \(seed)")
            }
        }
    }

    private func program() throws -> HostKernelProgram {
        try HostKernelProgram.build(name: "resident", source: HostKernelProgram.prelude + ResidentKernelSource.source
                                        + ResidentKernelEmulationTests.harness, defines: [:])
    }
}
