import Foundation
import SpargeKernels
import SpargeTestSupport
import XCTest
@testable import SpargeCUDA

/// The quantization kernels of the Hopper kernel's int8 Q·Kᵀ and e4m3 P·V (sparge_resident.cu), compiled as
/// C++ for the host and compared bit for bit with `SageQuantization` below: the same Float operations in the
/// same order, and an e4m3 rounding written independently (the nearest of the format's 127 magnitudes,
/// ties to the even code) against the kernel's bit arithmetic.
final class SageQuantizationTests: XCTestCase {
    /// What the kernels compute, written plainly.
    enum SageQuantization {
        static func rows(_ q: [Float], heads: Int, dim: Int, group: Int, mean: [Float],
                         softmaxScale: Float) -> (n: [Int8], scales: [Float], shifts: [Float]) {
            var n = [Int8](), scales = [Float](), shifts = [Float]()
            let rows = q.count / dim / heads
            for r in 0..<(q.count / dim) {
                let row = q[(r * dim)..<((r + 1) * dim)]
                let m = row.reduce(Float(0)) { max($0, abs($1)) }
                let scale = int8Scale(m)
                n += row.map { int8(($0 / scale).rounded(.toNearestOrEven)) }
                scales.append(scale)
                let mu = mean[(r / rows / group * dim)...]
                var dot: Float = 0
                for (x, u) in zip(row, mu) { dot += x * u }
                shifts.append(dot * softmaxScale)
            }
            return (n, scales, shifts)
        }

        static func keyBlocks(_ k: [Float], mean: [Float], heads: Int, rows: Int, kvRows: Int, dim: Int,
                              blockK: Int) -> (n: [Int8], scales: [Float]) {
            var n = [Int8](repeating: 0, count: heads * kvRows * dim), scales = [Float]()
            for h in 0..<heads {
                for first in stride(from: 0, to: kvRows, by: blockK) {
                    let last = min(rows, first + blockK)
                    func centered(_ r: Int, _ d: Int) -> Float { r < last ? k[(h * rows + r) * dim + d] - mean[h * dim + d] : 0 }
                    var m: Float = 0
                    for r in first..<max(first, last) { for d in 0..<dim { m = max(m, abs(centered(r, d))) } }
                    let scale = int8Scale(m)
                    for r in first..<(first + blockK) {
                        for d in 0..<dim { n[(h * kvRows + r) * dim + d] = int8((centered(r, d) / scale).rounded(.toNearestOrEven)) }
                    }
                    scales.append(scale)
                }
            }
            return (n, scales)
        }

        /// The int8 scale of values whose largest magnitude is `m`: m / 127, or 1 where that is 0.
        static func int8Scale(_ m: Float) -> Float { m / 127 > 0 ? m / 127 : 1 }

        /// A rounded quotient within ±127: past it only where the scale rounded among the subnormals.
        static func int8(_ x: Float) -> Int8 { Int8(max(-127, min(127, x))) }

        static let e4m3Magnitudes: [Float] = (0..<127).map { c in
            let (e, m) = (c >> 3, Float(c & 7))
            return e == 0 ? m / 8 * 0x1p-6 : (1 + m / 8) * Float(sign: .plus, exponent: e - 7, significand: 1)
        }

        static func e4m3(_ x: Float) -> UInt8 {
            let a = min(abs(x), 448)
            var best = 0
            for c in 1..<127 {
                let (dc, db) = (abs(e4m3Magnitudes[c] - a), abs(e4m3Magnitudes[best] - a))
                if dc < db || (dc == db && c % 2 == 0) { best = c }
            }
            return UInt8(best) | (x.sign == .minus ? 0x80 : 0)
        }

        static func valuesTransposed(_ v: [Float], heads: Int, rows: Int, kvRows: Int, dim: Int) -> (t: [UInt8], scales: [Float]) {
            var t = [UInt8](repeating: 0, count: heads * dim * kvRows), scales = [Float]()
            for h in 0..<heads {
                for d in 0..<dim {
                    var m: Float = 0
                    for r in 0..<rows { m = max(m, abs(v[(h * rows + r) * dim + d])) }
                    let scale = m > 0 ? m / 448 : 1
                    for pos in 0..<kvRows {
                        let (within, a, i) = (pos % 16, pos % 16 / 4, pos % 4)
                        let key = pos - within + 8 * (i / 2) + 2 * a + i % 2
                        t[(h * dim + d) * kvRows + pos] = e4m3(key < rows ? v[(h * rows + key) * dim + d] / scale : 0)
                    }
                    scales.append(scale)
                }
            }
            return (t, scales)
        }
    }

    private func program() throws -> HostKernelProgram {
        try HostKernelProgram.build(name: "resident",
                                    source: HostKernelProgram.prelude + ResidentKernelSource.source
                                        + ResidentKernelEmulationTests.harness, defines: [:])
    }

    func testQueryRowsEqualTheirTwin() throws {
        let seed = UInt64.random(in: 0...UInt64.max)
        var rng = SeededGenerator(seed: seed)
        // Four query heads on two K heads (GQA): each row's shift takes its own K head's mean. Rows over
        // more than one 32-row thread block with a partial last one; D past one 128-column pass; Q handed
        // over in f32 and in bf16 (a model's tensors, read where they lie: the twin sees them widened).
        for (heads, rows, dim, group, bf16) in [(4, 51, 128, 2, false), (2, 40, 192, 1, false), (4, 37, 128, 2, true)] {
            var q = (0..<(heads * rows * dim)).map { _ in Float.random(in: -4...4, using: &rng) }
            for d in 0..<dim { q[5 * dim + d] = 0 }                 // a zero row: scale 1, all zeros
            q[7 * dim + 3] = 127 * 0.5 + 0.25                          // halfway cases after the division
            // Subnormal rows: max 190·2⁻¹⁴⁹ makes a scale of 2⁻¹⁴⁹ and quotients of 190, held at 127; max 2⁻¹⁴⁹
            // makes a scale that underflows to 0, taken as 1 (zeros).
            for d in 0..<dim { q[9 * dim + d] = Float(bitPattern: UInt32(d % 191)) * (d % 2 == 0 ? 1 : -1) }
            for d in 0..<dim { q[11 * dim + d] = d == 4 ? Float(bitPattern: 1) : 0 }
            if bf16 { q = q.map { StorageFormat.bf16.rounded($0) } }
            let mean = (0..<(heads / group * dim)).map { _ in Float.random(in: -1...1, using: &rng) }
            let softmaxScale = Float.random(in: 0.05...0.2, using: &rng)
            var input = Data()
            input.append(ints: [rows, heads, dim, group, bf16 ? 1 : 0])
            input.append(floats: [softmaxScale])
            if bf16 {
                q.map { StorageFormat.bf16Bits($0) }.withUnsafeBytes { input.append(contentsOf: $0) }
            } else {
                input.append(floats: q)
            }
            input.append(floats: mean)
            let out = try program().run("qrows", input)
            let count = heads * rows
            let n = out.values(Int8.self, count: count * dim), scales = out.values(Float.self, at: count * dim, count: count)
            let shifts = out.values(Float.self, at: count * dim + 4 * count, count: count)
            let twin = SageQuantization.rows(q, heads: heads, dim: dim, group: group, mean: mean, softmaxScale: softmaxScale)
            let label = "H=\(heads) N=\(rows) D=\(dim) bf16=\(bf16) seed \(seed)"
            XCTAssertEqual(n, twin.n, label)
            XCTAssertEqual(scales.map(\.bitPattern), twin.scales.map(\.bitPattern), label)
            XCTAssertEqual(shifts.map(\.bitPattern), twin.shifts.map(\.bitPattern), label)
        }
    }

    func testKeyBlocksEqualTheirTwin() throws {
        let seed = UInt64.random(in: 0...UInt64.max)
        var rng = SeededGenerator(seed: seed)
        // A partial last block (rows < kvRows), two heads, the head's mean of an offset K; placed from f32 and
        // from bf16 storage (the ring's formats), which the twin sees widened.
        for (heads, rows, blockK, bf16) in [(2, 300, 64, false), (1, 256, 128, false), (2, 200, 128, true)] {
            let dim = 128, kvRows = (rows + blockK - 1) / blockK * blockK
            var k = (0..<(heads * rows * dim)).map { i in Float.random(in: -2...2, using: &rng) + Float(i % dim) * 0.01 }
            // Each block's largest |k − μ| in its last row (the partial block's last real one): every row counts.
            for h in 0..<heads {
                for first in stride(from: 0, to: rows, by: blockK) {
                    let last = min(rows, first + blockK) - 1
                    k[(h * rows + last) * dim + Int.random(in: 0..<dim, using: &rng)] = Float.random(in: 6...8, using: &rng)
                }
            }
            if bf16 { k = k.map { Float(bitPattern: UInt32(StorageFormat.bf16Bits($0)) << 16) } }
            let mean = (0..<(heads * dim)).map { i in Float(i % dim) * 0.01 + Float.random(in: -0.1...0.1, using: &rng) }
            var input = Data()
            input.append(ints: [heads, rows, kvRows, dim, blockK, bf16 ? 1 : 0])
            if bf16 {
                k.map { UInt16(truncatingIfNeeded: $0.bitPattern >> 16) }.withUnsafeBytes { input.append(contentsOf: $0) }
            } else {
                input.append(floats: k)
            }
            input.append(floats: mean)
            let out = try program().run("qkeys", input)
            let n = out.values(Int8.self, count: heads * kvRows * dim)
            let scales = out.values(Float.self, at: heads * kvRows * dim, count: heads * kvRows / blockK)
            let twin = SageQuantization.keyBlocks(k, mean: mean, heads: heads, rows: rows, kvRows: kvRows, dim: dim, blockK: blockK)
            let label = "rows \(rows), blockK \(blockK), bf16 \(bf16), seed \(seed)"
            XCTAssertEqual(n, twin.n, label)
            XCTAssertEqual(scales.map(\.bitPattern), twin.scales.map(\.bitPattern), label)
        }
    }

    func testValuesEqualTheirTwin() throws {
        let seed = UInt64.random(in: 0...UInt64.max)
        var rng = SeededGenerator(seed: seed)
        let (heads, rows, kvRows, dim) = (2, 150, 256, 128)
        // Magnitudes over the whole e4m3 range after scaling: normals, subnormals, exact halfway points.
        var v = (0..<(heads * rows * dim)).map { _ in
            Float.random(in: -1...1, using: &rng) * Float(pow(2.0, Double(Int.random(in: -12...0, using: &rng))))
        }
        for d in 0..<dim { v[d] = d % 2 == 0 ? 448 : -448 }         // each column's scale is 1
        for d in 0..<dim { v[dim + d] = SageQuantization.e4m3Magnitudes[d % 127] }
        for d in 0..<(dim - 1) {                                    // halfway between neighbours
            let c = d % 126
            v[2 * dim + d] = (SageQuantization.e4m3Magnitudes[c] + SageQuantization.e4m3Magnitudes[c + 1]) / 2
        }
        var input = Data()
        input.append(ints: [heads, rows, kvRows, dim])
        input.append(floats: v)
        let out = try program().run("qvalues", input)
        let t = out.values(UInt8.self, count: heads * dim * kvRows)
        let scales = out.values(Float.self, at: heads * dim * kvRows, count: heads * dim)
        let twin = SageQuantization.valuesTransposed(v, heads: heads, rows: rows, kvRows: kvRows, dim: dim)
        XCTAssertEqual(scales.map(\.bitPattern), twin.scales.map(\.bitPattern), "seed \(seed)")
        let differing = zip(t, twin.t).filter { $0 != $1 }.count
        XCTAssertEqual(differing, 0, "e4m3 codes differing from the twin's, seed \(seed)")
    }
}
