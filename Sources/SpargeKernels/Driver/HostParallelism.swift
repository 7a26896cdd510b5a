import Dispatch
import Synchronization

/// How many threads the host's parallel loops outside the tiles may use — the conversions of the tensors as
/// they enter, the K mean, the block summaries and the mask rows — so that a rank keeps to its share of a
/// node (`--threads`, or cores / ranks per node) in every phase, not only in the attention.
///
/// The width is bound around a piece of work with `HostParallelism.$threads.withValue(n) { … }` and read on the
/// calling thread; nil (the default) is every core, as `DispatchQueue.concurrentPerform` gives, and a width
/// below 1 is one thread. The binding does not reach the pool's worker threads: a `forEach` started inside
/// another parallel loop's body would run on every core (none is).
public enum HostParallelism {
    /// Threads a parallel loop started on this thread may use; nil: every core.
    @TaskLocal public static var threads: Int?

    /// `body(i)` for every i in `0..<count`, on at most `threads` threads (the caller one of them), each
    /// claiming the next unclaimed index. Which thread runs an index does not change what it computes.
    public static func forEach(_ count: Int, _ body: (Int) -> Void) {
        guard count > 0 else { return }
        guard let width = threads, width < count else {
            DispatchQueue.concurrentPerform(iterations: count, execute: body)
            return
        }
        let next = WorkCounter()
        DispatchQueue.concurrentPerform(iterations: max(1, width)) { _ in
            while true {
                let i = next.claim()
                if i >= count { break }
                body(i)
            }
        }
    }
}

/// A shared counter from which workers claim work items (an `Atomic` in a class, so closures can share it).
final class WorkCounter: @unchecked Sendable {
    private let value = Atomic<Int>(0)

    /// The next unclaimed index.
    @inline(__always) func claim() -> Int { value.wrappingAdd(1, ordering: .relaxed).oldValue }
}
