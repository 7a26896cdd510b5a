import SpargeTestSupport
import XCTest
@testable import SpargeKernels

/// `Tensor`: typed, strided views of one buffer, converted once where they enter.
final class TensorTests: XCTestCase {
    /// An `[N, H, D]` buffer viewed as `[H, N, D]` is the transpose, element for element, without a copy.
    func testPermutedViewIsTheTransposeWithoutACopy() throws {
        var g = SeededGenerator(seed: UInt64.random(in: 1...1_000_000))
        let (n, h, d) = (Int.random(in: 1...40), Int.random(in: 1...4), Int.random(in: 1...20))
        let values = (0..<(n * h * d)).map { _ in g.normal() }
        let nhd = try Tensor(values, shape: [n, h, d])
        let hnd = try nhd.permuted([1, 0, 2])
        XCTAssertTrue(hnd.buffer === nhd.buffer, "a view shares its buffer")
        XCTAssertEqual(hnd.shape, [h, n, d])
        if h > 1 && n > 1 { XCTAssertFalse(hnd.isContiguous, "the view is strided") }
        let floats = try hnd.hostFloats()
        for head in 0..<h { for row in 0..<n { for i in 0..<d {
            XCTAssertEqual(floats[head, row, i], values[(row * h + head) * d + i], "[\(head), \(row), \(i)]")
        } } }
    }

    /// 16-bit tensors widen exactly; packing into the element type they already have is no copy; packing
    /// f32 into bf16/f16 rounds to nearest; an f16 overflow is reported.
    func testConversionsHappenOnceAndRoundToNearest() throws {
        var g = SeededGenerator(seed: 7)
        let values = (0..<(3 * 5 * 8)).map { _ in g.normal() * 10 }
        let f32 = try Tensor(values, shape: [3, 5, 8])
        for format in [StorageFormat.bf16, .f16] {
            let (packed, overflowed) = try f32.packed(as: format)
            XCTAssertFalse(overflowed)
            XCTAssertEqual(try packed.hostFloats().data, values.map(format.rounded), "\(format): f32 → \(format) → f32")
            let (again, _) = try packed.packed(as: format)
            XCTAssertTrue(again.buffer === packed.buffer, "\(format): already packed, no copy")
            // Rounding is to nearest: within half an ulp of the format.
            for (x, y) in zip(values, try packed.hostFloats().data) {
                XCTAssertLessThanOrEqual(Double(abs(x - y)), Double(abs(x)) * format.unitRoundoff, "\(format): \(x) → \(y)")
            }
        }
        let large = try Tensor([70000, 1], shape: [1, 1, 2])
        XCTAssertTrue(try large.packed(as: .f16).overflowed, "70000 does not fit fp16")
    }

    /// Rounding in place (`StorageFormat.round`, what the CPU's fp16 and bf16 precisions do to Q and to each
    /// block) is `rounded(_:)` of every value, bit for bit: fresh random values of every magnitude, f16's
    /// halfway points, its overflow edge and infinities, over a count that spans several of the f16 path's
    /// 1024-value pieces and ends inside one; and an empty tensor.
    func testRoundingInPlaceIsRoundedOfEachValue() {
        var g = SeededGenerator(seed: UInt64.random(in: 1...UInt64.max))
        var values = (0..<2600).map { _ in Float.random(in: -1...1, using: &g) * Float(pow(2.0, Double(Int.random(in: -30...18, using: &g)))) }
        values += [1 + 1.0 / 2048, 1 + 3.0 / 2048, 65504, 65519.996, 65520, -70000, .infinity, -.infinity, 0, -0, 6e-8]
        for format in StorageFormat.allCases {
            var rounded = values
            rounded.withUnsafeMutableBufferPointer { format.round($0.baseAddress!, count: $0.count) }
            XCTAssertEqual(rounded.map(\.bitPattern), values.map { format.rounded($0).bitPattern }, "\(format)")
            XCTAssertEqual(Tensor3(heads: 1, rows: 0, dim: 4, data: []).rounded(to: format).data, [], "\(format), empty")
        }
    }

    /// Views past their buffer, non-3-D and device tensors are refused with errors, not traps.
    func testBadViewsThrow() throws {
        let buffer = TensorBuffer(byteCount: 64)
        XCTAssertThrowsError(try Tensor(buffer: buffer, element: .f32, shape: [2, 3, 4]), "96 bytes in 64")
        XCTAssertNoThrow(try Tensor(buffer: buffer, element: .bf16, shape: [2, 2, 8]))
        XCTAssertThrowsError(try Tensor(buffer: buffer, element: .f32, shape: [2, 2], strides: [Int.max, 1]))
        XCTAssertThrowsError(try Tensor([1, 2], shape: [2]).hostFloats(), "not 3-D")
        let device = TensorBuffer(borrowing: buffer.base, byteCount: 64, place: .device(backend: "cuda", ordinal: 0), owner: buffer)
        XCTAssertThrowsError(try Tensor(buffer: device, element: .f32, shape: [1, 4, 4]).hostFloats()) { error in
            XCTAssertTrue("\(error)".contains("cuda:0"), "\(error)")
        }
    }

    /// `hostFloats(reusing:)` converts into the array it is given while the shape stays (its base address
    /// stays: no new pages), into a new one when the shape changes, and gives `hostFloats()`'s values either
    /// way, from a strided view as from a packed tensor.
    func testHostFloatsReuseTheirArrayWhileTheShapeStays() throws {
        var g = SeededGenerator(seed: UInt64.random(in: 1...1_000_000))
        var storage: [Float] = []
        var bases: [UnsafePointer<Float>?] = []
        for (h, n, d) in [(2, 70, 16), (2, 70, 16), (3, 33, 8), (3, 33, 8)] {
            let values = (0..<(h * n * d)).map { _ in g.normal() }
            let view = try Tensor(values, shape: [n, h, d]).permuted([1, 0, 2])
            let reused = try view.hostFloats(reusing: &storage)
            XCTAssertEqual(reused.data, try view.hostFloats().data, "[\(h), \(n), \(d)]")
            XCTAssertEqual(storage.count, h * n * d)
            bases.append(storage.withUnsafeBufferPointer { $0.baseAddress })
        }
        // A view whose rows are strided too ([D, N, H] seen as [H, N, D]), in f32 and in bf16.
        let (h, n, d) = (3, 9, 5)
        let values = (0..<(h * n * d)).map { _ in g.normal() }
        for format in [StorageFormat.f32, .bf16] {
            let dnh = try Tensor(values, shape: [d, n, h]).packed(as: format).tensor
            let floats = try dnh.permuted([2, 1, 0]).hostFloats(reusing: &storage)
            for head in 0..<h { for row in 0..<n { for i in 0..<d {
                XCTAssertEqual(floats[head, row, i], format.rounded(values[(i * n + row) * h + head]),
                               "\(format) [\(head), \(row), \(i)]")
            } } }
        }
        XCTAssertEqual(bases[0], bases[1], "the same shape reuses the array")
        XCTAssertEqual(bases[2], bases[3], "the same shape reuses the array")
        XCTAssertNotEqual(bases[1], bases[2], "a new shape takes a new array")
    }

    /// A borrowed view of a Tensor3 is its values, in place: the same shape and every value bit for bit.
    func testBorrowedTensorOfATensor3IsItsValues() throws {
        var rng = SeededGenerator(seed: UInt64.random(in: 0...UInt64.max))
        let t = Tensor3.random(heads: 3, rows: 17, dim: 5, scale: 2, shift: 0.5, using: &rng)
        try t.withBorrowedTensor { view in
            XCTAssertEqual(view.shape, [3, 17, 5])
            XCTAssertEqual(view.element, .f32)
            XCTAssertEqual(try view.hostFloats().data.map(\.bitPattern), t.data.map(\.bitPattern))
        }
    }
}
