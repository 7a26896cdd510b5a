import Foundation
import SpargeRing
import SpargeWorkloads
import XCTest

/// How long one rank takes to generate its shard at N = 1M, D = 128, 1 head: half the rows (512K) of Q, K
/// and V. Opt-in (set `SPARGE_WORKLOAD_SPEED=1`), and meaningful only in a release build:
/// `SPARGE_WORKLOAD_SPEED=1 swift test -c release --filter WorkloadSpeedTests`.
final class WorkloadSpeedTests: XCTestCase {
    func testHalfOfAMillionRows() throws {
        guard ProcessInfo.processInfo.environment["SPARGE_WORKLOAD_SPEED"] != nil else {
            throw XCTSkip("set SPARGE_WORKLOAD_SPEED=1 to time workload generation")
        }
        let n = 1 << 20
        let shape = WorkloadShape(queryHeads: 1, kvHeads: 1, seqLen: n, headDim: 128)
        for workload in Workload.allCases {
            let g = try WorkloadGenerator(workload, shape: shape, seed: 1)
            let start = Date()
            // a zigzag shard of rank 0 of 2: chunks 0 and 3 of 4
            let (q, k, v) = g.generate(rows: [0..<n / 4, 3 * n / 4..<n])
            let seconds = Date().timeIntervalSince(start)
            print("\(workload): 3 × \(q.rows) rows × 128 in \(String(format: "%.2f", seconds)) s "
                + "(\(ProcessInfo.processInfo.activeProcessorCount) cores)")
            XCTAssertEqual(k.rows + v.rows, n)
        }
    }
}
