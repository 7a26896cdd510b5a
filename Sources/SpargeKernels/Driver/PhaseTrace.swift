#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Dispatch
import Synchronization

/// For measurement: when `enabled` (the `sparge` tool sets it from `SPARGE_PROFILE_PHASES=1`), the steps of a CPU
/// forward pass (the K mean, each side's summaries, the mask rows, the ring's local rows, the block table, the
/// workers, the finish) print on stderr as `phase STEP MS ms`, the milliseconds since the process's previous
/// mark.
///
/// Off by default: a mark then tests one flag. The marks of passes run at once on several threads of one
/// process interleave; `benchmarks/cpu-amx-phase-marks.sh` reads them from `sparge bench`.
public enum PhaseTrace {
    /// Whether the steps are printed; set before the first pass, not during one.
    nonisolated(unsafe) public static var enabled = false
    private static let last = Mutex<UInt64?>(nil)

    /// Prints `step` with the milliseconds since the previous mark (nothing for the process's first mark).
    public static func mark(_ step: @autoclosure () -> String) {
        guard enabled else { return }
        let now = DispatchTime.now().uptimeNanoseconds
        let previous = last.withLock { value in
            defer { value = now }
            return value
        }
        guard let previous else { return }
        fputs("phase \(step()) \(milliseconds(now &- previous)) ms\n", stderr)
    }

    /// `nanoseconds` as milliseconds with three decimals (without Foundation's formatting).
    private static func milliseconds(_ nanoseconds: UInt64) -> String {
        let thousandths = (nanoseconds + 500) / 1000
        let fraction = String(thousandths % 1000)
        return "\(thousandths / 1000)." + String(repeating: "0", count: 3 - fraction.count) + fraction
    }
}
