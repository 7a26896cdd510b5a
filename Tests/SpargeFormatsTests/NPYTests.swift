import SpargeFormats
import SpargeTestSupport
import XCTest

final class NPYFixtureTests: XCTestCase {
    /// The fixture headers are what their README says: float32 [H, N, D] tensors and uint8 masks.
    func testReadsFixtureShapes() throws {
        let q = try Fixtures.tensor("mask/gqa_sink_q.npy")
        XCTAssertEqual(q.shape, [4, 1152, 64])
        let mask = try Fixtures.mask("mask/gqa_sink_mask.npy")
        XCTAssertEqual([mask.heads, mask.rowCount, mask.keyBlocks], [4, 9, 18])
        XCTAssertTrue(mask.denseBits().allSatisfy { $0 <= 1 })
        XCTAssertGreaterThan(mask.computedCount, 0)
        // float values are not all zero and are finite: the reader did not misplace the data offset
        XCTAssertTrue(q.data.allSatisfy { $0.isFinite })
        XCTAssertGreaterThan(q.data.map(abs).max()!, 0.1)
    }
}
