import Foundation
import SpargeKernels
import SpargeTestSupport
import XCTest
@testable import SpargeCUDA

/// `--precision int8` on the `mma.sync` kernel, run on the host (`MMAKernelEmulation`): Q and K quantized as
/// the resident pass quantizes them (`SageQuantizationTests.SageQuantization`, the quantizing kernels' twin),
/// int8 fragments → int32 scores on the bits of the bias → scaled scores → online softmax → P·V in 16 bits,
/// against a Double reference on the same int8 values and scales, on fresh random inputs: partial tiles and a
/// partial last key block, the causal diagonal, GQA, a query shard that starts mid-sequence, a tile with no
/// key, sparse block lists, and the softmax state carried across two launches and normalised by
/// `sparge_finish`.
final class MMAKernelInt8Tests: XCTestCase {
    /// The default tile shape (64 rows, 64-key blocks, D 128, P·V in fp16), and 128-key blocks at D 64 (int8
    /// rows of 64 bytes, swizzled in pairs) with two m-tiles a warp and P·V in bf16.
    static let shapes: [MMAKernelEmulation.Shape] = [
        .init(dim: 128, blockK: 64, warps: 4, mTiles: 1),
        .init(dim: 64, blockK: 128, warps: 2, mTiles: 2, valuesInBF16: true),
    ]

    func testInt8TilesMatchTheDoubleReference() throws {
        let seed = UInt64.random(in: 0...UInt64.max)
        var rng = SeededGenerator(seed: seed)
        for shape in Self.shapes {
            let emulation = try MMAKernelEmulation(shape)
            for (causal, launches) in [(false, 1), (true, 2)] {
                let label = "\(shape), causal \(causal), \(launches) launches, seed \(seed)"
                let call = Self.call(shape: shape, causal: causal, launches: launches, using: &rng)
                let (output, lse) = try emulation.run(call)
                let reference = Self.reference(call, shape: shape)
                check(output: output, lse: lse, against: reference, call: call, shape: shape, label: label)
            }
        }
    }

    /// The kernel's λ switch (`lambda` in its parameters, from `SpargeConfig.lambdaActive`), as the CPU's tiles
    /// take it: a key block ~100 log2 units below the one before is computed at λ = 50 (off) and skipped at
    /// 49.5, where the tile's first block is always computed. One 64-row tile, two 64-key blocks: queries and
    /// the first block's keys near +3, the second block's near −3 (D 128, scores ≈ ±1150 times the scale).
    func testLambdaOffComputesBlocksFarBelowTheRunningMax() throws {
        var rng = SeededGenerator(seed: UInt64.random(in: 0...UInt64.max))
        let shape = Self.shapes[0]
        let emulation = try MMAKernelEmulation(shape)
        let (d, rows) = (shape.dim, 64)
        let q = (0..<(rows * d)).map { _ in 3 + Float.random(in: -0.3...0.3, using: &rng) }
        let k = (0..<(2 * rows * d)).map { i in (i / d < rows ? 3 : -3) + Float.random(in: -0.3...0.3, using: &rng) }
        let mean = [Float](repeating: 0, count: d)
        typealias Sage = SageQuantizationTests.SageQuantization
        let qn = Sage.rows(q, heads: 1, dim: d, group: 1, mean: mean, softmaxScale: 1 / Float(d).squareRoot())
        let kn = Sage.keyBlocks(k, mean: mean, heads: 1, rows: 2 * rows, kvRows: 2 * rows, dim: d,
                                blockK: shape.blockK)
        let values = (0..<(2 * rows * d)).map { _ in Float16(Float.random(in: -1...1, using: &rng)).bitPattern }
        for (threshold, skipped) in [(SpargeConfig.lambdaOff, 0), (SpargeConfig.lambdaOff - 0.5, 1)] {
            let call = MMAKernelEmulation.Call(
                queryHeads: 1, kvHeads: 1, rows: rows, seqLen: 2 * rows, kvRows: 2 * rows, causal: false,
                qScale: 1.442_695_040_888_963_4 / Float(d).squareRoot(), pvThreshold: threshold,
                queries: qn.n, queryScales: qn.scales, rowShifts: qn.shifts, keys: kn.n, keyScales: kn.scales,
                values: values, tiles: [(0, 0, rows, 0)], blocks: [0, 1], launches: [[(0, 0, 2)]])
            let counters = try emulation.runCounting(call).counters[0]
            XCTAssertEqual(counters.visited, 2, "λ = \(threshold)")
            XCTAssertEqual(counters.skipped, skipped, "λ = \(threshold): blocks skipped")
            XCTAssertEqual(counters.computed, 2 - skipped, "λ = \(threshold): blocks computed")
        }
    }

    /// The tolerance, from what the kernel rounds that the reference does not: P to fp16 (bf16) before P·V,
    /// 2⁻¹¹ (2⁻⁸) of each P, so at most that fraction of max|V| in an output (Σ P·|v| / Σ P ≤ max|V|; the row
    /// sum itself takes the unrounded P); plus 2⁻¹³ of max|V| for the rest: the fp32 exponent's addend, which
    /// holds the scaled bias 2^23.6·unit and so is rounded to ~0.75 of a score unit (about 1e-4 in log2 here),
    /// fp16's subnormal P (2⁻²⁵ each), fp32 sums. The LSE takes the unrounded P: 2⁻¹² (natural log units) for
    /// the addend's rounding and fp32 sums of a few hundred terms.
    private func check(output: [Float], lse: [Float], against reference: (output: [Double], lse: [Double]),
                       call: MMAKernelEmulation.Call, shape: MMAKernelEmulation.Shape, label: String) {
        let d = shape.dim
        let maxV = call.values.reduce(0.0) { max($0, abs(Double(shape.valuesInBF16 ? Float(bitPattern: UInt32($1) << 16)
                                                                                    : Float(Float16(bitPattern: $1))))) }
        let bound = maxV * ((shape.valuesInBF16 ? 0x1p-8 : 0x1p-11) + 0x1p-13)
        var worst = 0.0, worstLSE = 0.0, empty = 0
        for row in 0..<(call.queryHeads * call.rows) {
            if reference.lse[row] == -.infinity {
                empty += 1
                XCTAssertEqual(lse[row], -.infinity, "row \(row) saw no key: LSE, \(label)")
                XCTAssertTrue(output[(row * d)..<((row + 1) * d)].allSatisfy { $0 == 0 }, "row \(row) saw no key: output, \(label)")
                continue
            }
            worstLSE = max(worstLSE, abs(Double(lse[row]) - reference.lse[row]))
            for i in (row * d)..<((row + 1) * d) { worst = max(worst, abs(Double(output[i]) - reference.output[i])) }
        }
        XCTAssertLessThanOrEqual(worst, bound, "largest output error against Double, \(label)")
        XCTAssertLessThanOrEqual(worstLSE, 0x1p-12, "largest LSE error against Double, \(label)")
        XCTAssertGreaterThan(empty, 0, "the case meant to have rows that see no key has none: \(label)")
        XCTAssertLessThanOrEqual(empty, shape.rowsPerTile, "only the tile without blocks has rows that see no key: \(label)")
    }

    /// A random call of `shape`: 2 query heads on 1 K/V head, a sequence ending inside a key block, the
    /// query rows of a shard from `q0` on (the last tile partial), each tile's blocks a random subset of those
    /// it may see (the causal diagonal kept), one tile with none, in `launches` launches of ascending parts.
    static func call(shape: MMAKernelEmulation.Shape, causal: Bool, launches: Int,
                     using rng: inout SeededGenerator) -> MMAKernelEmulation.Call {
        let (d, bk, bq) = (shape.dim, shape.blockK, shape.rowsPerTile)
        let (heads, kvHeads) = (2, 1)
        let seqLen = bk * Int.random(in: 2...3, using: &rng) + Int.random(in: 1..<bk, using: &rng)
        let keyBlocks = (seqLen + bk - 1) / bk, kvRows = keyBlocks * bk
        let q0 = Int.random(in: 1..<bq, using: &rng), rows = seqLen - q0
        // Queries and keys with an offset per dimension (what smoothing by the mean takes out), values in fp16/bf16.
        let offset = (0..<d).map { _ in Float.random(in: -1...1, using: &rng) }
        let q = (0..<(heads * rows * d)).map { i in Float.random(in: -2...2, using: &rng) + offset[i % d] }
        let k = (0..<(kvHeads * seqLen * d)).map { i in Float.random(in: -2...2, using: &rng) + offset[i % d] }
        let mean = (0..<(kvHeads * d)).map { j in offset[j % d] + Float.random(in: -0.1...0.1, using: &rng) }
        let softmaxScale = 1 / Float(d).squareRoot()
        typealias Sage = SageQuantizationTests.SageQuantization
        let qn = Sage.rows(q, heads: heads, dim: d, group: heads / kvHeads, mean: mean, softmaxScale: softmaxScale)
        let kn = Sage.keyBlocks(k, mean: mean, heads: kvHeads, rows: seqLen, kvRows: kvRows, dim: d, blockK: bk)
        let values: [UInt16] = (0..<(kvHeads * kvRows * d)).map { i in
            guard i / d % kvRows < seqLen else { return 0 }  // rows past the sequence are zeros, as the ring leaves them
            let x = Float.random(in: -1...1, using: &rng)
            return shape.valuesInBF16 ? StorageFormat.bf16Bits(x) : Float16(x).bitPattern
        }
        var tiles: [(head: Int, localRow: Int, rowCount: Int, queryStart: Int)] = []
        for h in 0..<heads {
            for first in stride(from: 0, to: rows, by: bq) { tiles.append((h, first, min(bq, rows - first), q0 + first)) }
        }
        let silent = Int.random(in: 0..<tiles.count, using: &rng)
        var lists: [[Int32]] = []
        for (i, tile) in tiles.enumerated() {
            let last = causal ? (tile.queryStart + tile.rowCount - 1) / bk : keyBlocks - 1
            let diagonal = causal ? tile.queryStart / bk : last  // kept: every row of the tile sees a key
            lists.append(i == silent ? [] : (0...last).filter { j in j >= diagonal || Double.random(in: 0..<1, using: &rng) < 0.7 }.map(Int32.init))
        }
        var blocks: [Int32] = []
        var parts = [[(tile: Int, first: Int, count: Int)]](repeating: [], count: launches)
        for (i, list) in lists.enumerated() {
            for part in 0..<launches {
                let range = (list.count * part / launches)..<(list.count * (part + 1) / launches)
                // One launch: every tile, with blocks or none, since it writes the output; several: only tiles
                // with blocks, as the ring launches them.
                guard !range.isEmpty || launches == 1 else { continue }
                parts[part].append((i, blocks.count, range.count))
                blocks += list[range]
            }
        }
        return .init(queryHeads: heads, kvHeads: kvHeads, rows: rows, seqLen: seqLen, kvRows: kvRows, causal: causal,
                     qScale: softmaxScale * 1.442_695_040_888_963_4, pvThreshold: SpargeConfig.lambdaOff,
                     queries: qn.n, queryScales: qn.scales, rowShifts: qn.shifts, keys: kn.n, keyScales: kn.scales,
                     values: values, tiles: tiles, blocks: blocks, launches: parts)
    }

    /// Attention in Double over the int8 values and their scales: score = softmax scale · q_s · k_s · Σ q·k for
    /// the keys of the tile's listed blocks up to the sequence's end (and the row, causal); the LSE plus the
    /// row's shift.
    static func reference(_ call: MMAKernelEmulation.Call, shape: MMAKernelEmulation.Shape) -> (output: [Double], lse: [Double]) {
        let (d, bk) = (shape.dim, shape.blockK)
        let scale = Double(call.qScale) / 1.442_695_040_888_963_4
        var output = [Double](repeating: 0, count: call.queryHeads * call.rows * d)
        var lse = [Double](repeating: -.infinity, count: call.queryHeads * call.rows)
        var lists = [[Int32]](repeating: [], count: call.tiles.count)
        for launch in call.launches { for item in launch { lists[item.tile] += call.blocks[item.first..<(item.first + item.count)] } }
        let group = call.queryHeads / call.kvHeads
        for (t, tile) in call.tiles.enumerated() {
            let g = tile.head / group
            for r in 0..<tile.rowCount {
                let row = tile.head * call.rows + tile.localRow + r, query = tile.queryStart + r
                var keys: [(key: Int, score: Double)] = []
                for j in lists[t].map(Int.init) {
                    for key in (j * bk)..<min(call.seqLen, (j + 1) * bk) where !call.causal || key <= query {
                        var dot = 0
                        for e in 0..<d { dot += Int(call.queries[row * d + e]) * Int(call.keys[(g * call.kvRows + key) * d + e]) }
                        let unit = scale * Double(call.queryScales[row]) * Double(call.keyScales[g * (call.kvRows / bk) + j])
                        keys.append((key, unit * Double(dot)))
                    }
                }
                guard let m = keys.map(\.score).max() else { continue }
                var sum = 0.0
                for (key, score) in keys {
                    let p = exp(score - m)
                    sum += p
                    for e in 0..<d {
                        let bits = call.values[(g * call.kvRows + key) * d + e]
                        let v = shape.valuesInBF16 ? Float(bitPattern: UInt32(bits) << 16) : Float(Float16(bitPattern: bits))
                        output[row * d + e] += p * Double(v)
                    }
                }
                for e in 0..<d { output[row * d + e] /= sum }
                lse[row] = m + log(sum) + Double(call.rowShifts[row])
            }
        }
        return (output, lse)
    }
}
