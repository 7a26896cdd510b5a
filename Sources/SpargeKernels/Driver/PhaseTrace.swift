#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import Synchronization

/// For measurement: with `SPARGE_PROFILE_PHASES=1` in the environment, the steps of a CPU forward pass (the K
/// mean, each side's summaries, the mask rows, the ring's local rows, the blocks' packing, the workers, the
/// finish) print on stderr as `phase STEP MS ms`, the milliseconds since the process's previous mark.
///
/// Off by default: a mark then tests one constant. The marks of passes run at once on several threads of one
/// process interleave; `benchmarks/cpu-amx-phase-marks.sh` reads them from `sparge bench`.
public enum PhaseTrace {
    /// Whether `SPARGE_PROFILE_PHASES=1` was set when the process first marked.
    public static let isOn: Bool = getenv("SPARGE_PROFILE_PHASES").map { String(cString: $0) == "1" } ?? false
    private static let last = Mutex<UInt64?>(nil)

    /// Prints `step` with the milliseconds since the previous mark (nothing for the process's first mark).
    public static func mark(_ step: @autoclosure () -> String) {
        guard isOn else { return }
        let now = DispatchTime.now().uptimeNanoseconds
        let previous = last.withLock { value in
            defer { value = now }
            return value
        }
        guard let previous else { return }
        fputs("phase \(step()) \(Format3.ms(Double(now &- previous) * 1e-6)) ms\n", stderr)
    }
}

/// Milliseconds with three decimals, without Foundation.
private enum Format3 {
    static func ms(_ x: Double) -> String {
        let thousandths = Int((x * 1000).rounded())
        let fraction = String(thousandths % 1000)
        return "\(thousandths / 1000)." + String(repeating: "0", count: 3 - fraction.count) + fraction
    }
}
