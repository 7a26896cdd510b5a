import Foundation

/// The CPU seconds the whole process and the calling thread spent while `body` ran: equal where `body` kept
/// to the calling thread, more for the process where other threads computed too.
public func cpuSeconds(_ body: () throws -> Void) rethrows -> (process: Double, thread: Double) {
    func now(_ clock: clockid_t) -> Double {
        var t = timespec()
        clock_gettime(clock, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
    }
    let (process, thread) = (now(CLOCK_PROCESS_CPUTIME_ID), now(CLOCK_THREAD_CPUTIME_ID))
    try body()
    return (now(CLOCK_PROCESS_CPUTIME_ID) - process, now(CLOCK_THREAD_CPUTIME_ID) - thread)
}
