import SpargeKernels
import XCTest

final class ErrorMetricsTests: XCTestCase {
    /// Hand-computed values: o = [1, 2, 2], ref = [1, 2, 3] → Σ|e| = 1, Σ|ref| = 6, ‖o‖ = 3, ‖ref‖ = √14,
    /// o·ref = 11, Σe² = 1. Tolerances are a few Double ulps of the values.
    func testKnownValues() {
        let m = ErrorMetrics(output: [1, 2, 2], reference: [1, 2, 3])
        XCTAssertEqual(m.relativeL1, 1.0 / 6, accuracy: 1e-15)
        XCTAssertEqual(m.cosineSimilarity, 11 / (3 * 14.0.squareRoot()), accuracy: 1e-15)
        XCTAssertEqual(m.rmse, (1.0 / 3).squareRoot(), accuracy: 1e-15)
    }

    func testZeroReference() {
        XCTAssertEqual(ErrorMetrics(output: [0, 0], reference: [0, 0]).relativeL1, 0)
        XCTAssertEqual(ErrorMetrics(output: [1, 0], reference: [0, 0]).relativeL1, .infinity)
        XCTAssertEqual(ErrorMetrics(output: [1, 0], reference: [0, 0]).cosineSimilarity, 0)
    }
}
