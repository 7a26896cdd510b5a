import Foundation

/// A test-only seam: `SPARGE_TEST_PAUSE=POINT:SECONDS` makes `sparge` announce itself on standard error and
/// sleep at `POINT`, so that the tests can send a signal, or change a destination, at a known moment.
///
/// Points: `before-commit` (every rank, when every output is written and none is committed yet),
/// `between-commits` (rank 0, before moving the second and later outputs into place) and `bench-last-ring`
/// (every rank, once in the ring phase of the last pass of each of `bench`'s timed series). Unset — as in any real use — it does nothing.
enum TestPause: String {
    case beforeCommit = "before-commit"
    case betweenCommits = "between-commits"
    case benchLastRing = "bench-last-ring"

    static func at(_ point: TestPause, rank: Int) {
        guard let setting = ProcessInfo.processInfo.environment["SPARGE_TEST_PAUSE"] else { return }
        let parts = setting.split(separator: ":")
        guard parts.count == 2, parts[0] == point.rawValue, let seconds = Double(parts[1]) else { return }
        FileHandle.standardError.write(Data("sparge: test: rank \(rank) pid \(getpid()) pausing \(seconds) s \(point.rawValue)\n".utf8))
        Thread.sleep(forTimeInterval: seconds)
    }
}
