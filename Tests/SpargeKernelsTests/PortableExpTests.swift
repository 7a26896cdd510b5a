import Foundation
import SpargeKernels
import SpargeTestSupport
import XCTest

final class PortableExpTests: XCTestCase {
    /// The recipe against the correctly rounded value (Double `exp` rounded to Float) on a dense sweep of the
    /// range the softmax uses (x ≤ 0) plus fresh random points: equal, except that a value whose exact `eˣ`
    /// lies almost halfway between two Floats may round the other way — so at most 1 ulp, and rarely.
    func testMatchesCorrectlyRoundedExp() {
        var rng = SeededGenerator(seed: UInt64.random(in: 0...UInt64.max))
        var xs: [Float] = stride(from: Float(-103.9), through: 88.7, by: 0.0137).map { $0 }
        xs += (0..<200_000).map { _ in Float.random(in: -30...0, using: &rng) }
        xs += [0, -0.0, 1, -1, Float.ulpOfOne, -Float.ulpOfOne, -Float.leastNonzeroMagnitude]
        var offByOne = 0
        for x in xs {
            let expected = Float(Foundation.exp(Double(x)))
            let got = PortableExp.exp(x)
            if got == expected { continue }
            XCTAssertEqual(abs(Int64(got.bitPattern) - Int64(expected.bitPattern)), 1, "exp(\(x)) = \(got), expected \(expected)")
            offByOne += 1
        }
        // A halfway case needs eˣ within ~1e-15 of a rounding boundary: about 1e-8 of all inputs.
        XCTAssertLessThanOrEqual(offByOne, 2, "\(offByOne) of \(xs.count) values off by 1 ulp")
    }

    func testEdges() {
        XCTAssertEqual(PortableExp.exp(0), 1)
        XCTAssertEqual(PortableExp.exp(-200), 0)
        XCTAssertEqual(PortableExp.exp(-.infinity), 0)
        XCTAssertEqual(PortableExp.exp(100), .infinity)
        XCTAssertTrue(PortableExp.exp(.nan).isNaN)
        // The smallest subnormal results come out rounded, not flushed.
        XCTAssertEqual(PortableExp.exp(-103.5), Float(Foundation.exp(-103.5)))
    }
}
