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
