import Dispatch
import Synchronization

/// Where the bf16 tiles' visits spend their time, for measurement only: when `enabled` (the `sparge` tool sets
/// it from `SPARGE_PROFILE_VISITS=1`), every visit of `AttentionTile.visit(bf16:keyStart:ahead:)` adds the
/// nanoseconds of its scores, its softmax and its P·V (every worker's, summed) and the keys it visited. Off
/// (the default), a visit pays one test of a flag.
public enum VisitProfile {
    /// Whether visits are timed; set before the first pass, not during one.
    nonisolated(unsafe) public static var enabled = false

    /// Totals since the process started.
    public struct Totals: Sendable, Equatable {
        public var visits = 0, keys = 0, scoresNanoseconds = 0, softmaxNanoseconds = 0, pvNanoseconds = 0

        /// What was added between `earlier` and `self`.
        public func since(_ earlier: Totals) -> Totals {
            Totals(visits: visits - earlier.visits, keys: keys - earlier.keys,
                   scoresNanoseconds: scoresNanoseconds - earlier.scoresNanoseconds,
                   softmaxNanoseconds: softmaxNanoseconds - earlier.softmaxNanoseconds,
                   pvNanoseconds: pvNanoseconds - earlier.pvNanoseconds)
        }
    }

    private final class Counters: Sendable {
        let visits = Atomic<Int>(0), keys = Atomic<Int>(0), scores = Atomic<Int>(0), softmax = Atomic<Int>(0)
        let pv = Atomic<Int>(0)
    }
    private static let counters = Counters()

    /// The totals so far.
    public static var totals: Totals {
        Totals(visits: counters.visits.load(ordering: .relaxed), keys: counters.keys.load(ordering: .relaxed),
               scoresNanoseconds: counters.scores.load(ordering: .relaxed),
               softmaxNanoseconds: counters.softmax.load(ordering: .relaxed),
               pvNanoseconds: counters.pv.load(ordering: .relaxed))
    }

    /// The current time for `add` (nanoseconds, monotonic).
    @inline(__always) static func now() -> Int { Int(DispatchTime.now().uptimeNanoseconds) }

    /// One visit of `keys` keys whose scores ran from `start` to `scored`, its softmax to `normalized` and its
    /// P·V to `end`.
    static func add(keys: Int, start: Int, scored: Int, normalized: Int, end: Int) {
        counters.visits.wrappingAdd(1, ordering: .relaxed)
        counters.keys.wrappingAdd(keys, ordering: .relaxed)
        counters.scores.wrappingAdd(scored - start, ordering: .relaxed)
        counters.softmax.wrappingAdd(normalized - scored, ordering: .relaxed)
        counters.pv.wrappingAdd(end - normalized, ordering: .relaxed)
    }
}
