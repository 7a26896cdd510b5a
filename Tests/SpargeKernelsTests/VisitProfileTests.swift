@testable import SpargeKernels
import XCTest

final class VisitProfileTests: XCTestCase {
    /// A visit's times go to its three parts and its keys are counted; `since` gives what was added between two
    /// readings, whatever came before (other tests' visits, where the profile is on).
    func testAVisitAddsItsPartsAndKeys() {
        let before = VisitProfile.totals
        VisitProfile.add(keys: 192, start: 1_000, scored: 1_700, normalized: 1_750, end: 2_350)
        VisitProfile.add(keys: 64, start: 5_000, scored: 5_100, normalized: 5_110, end: 5_200)
        let added = VisitProfile.totals.since(before)
        XCTAssertEqual(added, VisitProfile.Totals(visits: 2, keys: 256, scoresNanoseconds: 800, softmaxNanoseconds: 60,
                                                  pvNanoseconds: 690))
    }
}
