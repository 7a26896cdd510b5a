import Dispatch
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Host-side phase timings of the CUDA backend, written to stderr when an engine is made with
/// `CUDAOptions.trace`: where a GPU run spends its time outside the kernels (conversions, transfers, list
/// building). One switch per process.
///
/// Two ways: waiting (each step waits for the device, so that a phase's kernels count in it), or — with
/// `CUDAOptions.traceWaits` off — nothing waits and each line says when its phase ended, from the pass's
/// first phase on: the pass runs as it does untraced, and the gaps between phases are host work outside the
/// traced steps or waits for the device. Those lines are kept and written when the pass finishes, when
/// the next one starts (a pass that failed never finishes) or when the process exits (`flush`), so that
/// writing them costs nothing inside the pass.
enum CUDATrace {
    nonisolated(unsafe) static var enabled = false
    nonisolated(unsafe) static var waits = true
    nonisolated(unsafe) private static var kept: [String] = []
    nonisolated(unsafe) private static var flushesAtExit = false
    nonisolated(unsafe) private static var origin: UInt64?

    /// Now, for a later `note`.
    static func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    /// Writes `label` and the milliseconds since `start`; returns now (the start of the next phase).
    @discardableResult
    static func note(_ label: String, since start: UInt64) -> UInt64 {
        let t = now()
        guard enabled else { return t }
        func ms(_ ns: UInt64) -> Double { (Double(ns) * 1e-3).rounded() / 1e3 }
        if waits {
            fputs("sparge cuda trace: \(label) \(ms(t - start)) ms\n", stderr)
        } else {
            if !flushesAtExit {
                flushesAtExit = true
                atexit { CUDATrace.flush() }  // the process's last lines, also after a pass that failed
            }
            let first = origin ?? start
            origin = first
            kept.append("sparge cuda trace: at \(ms(t - first)) ms: \(label) \(ms(t - start)) ms")
        }
        return t
    }

    /// Writes `line`, a fact rather than a phase (a kernel compiled, say); kept with the phases' lines when
    /// nothing waits.
    static func say(_ line: String) {
        guard enabled else { return }
        if waits { fputs("sparge cuda trace: \(line)\n", stderr) } else { kept.append("sparge cuda trace: \(line)") }
    }

    /// `note`, after waiting for `device`'s queued work when tracing with waits (so that the phase's kernels
    /// count in it, not in the next phase); nothing waits otherwise.
    @discardableResult
    static func step(_ label: String, since start: UInt64, on device: CUDADevice) throws -> UInt64 {
        if enabled && waits { try device.synchronize() }
        return note(label, since: start)
    }

    /// A pass begins: what an earlier pass left unwritten (it failed before finishing) is written now.
    static func beginPass() { flush() }

    /// Writes the lines kept by a trace without waits, and starts the next pass's clock.
    static func flush() {
        guard enabled && !waits else { return }
        for line in kept { fputs(line + "\n", stderr) }
        kept.removeAll(keepingCapacity: true)
        origin = nil
    }
}
