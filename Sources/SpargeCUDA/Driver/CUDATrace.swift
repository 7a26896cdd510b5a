import Dispatch
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Host-side phase timings of the CUDA backend, written to stderr when an engine is made with
/// `CUDAOptions.trace`: where a GPU run spends its time outside the kernels (conversions, transfers, list
/// building). One switch per process.
enum CUDATrace {
    nonisolated(unsafe) static var enabled = false

    /// Now, for a later `note`.
    static func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    /// Writes `label` and the milliseconds since `start`; returns now (the start of the next phase).
    @discardableResult
    static func note(_ label: String, since start: UInt64) -> UInt64 {
        let t = now()
        if enabled {
            let ms = Double(t - start) * 1e-6
            fputs("sparge cuda trace: \(label) \((ms * 1000).rounded() / 1000) ms\n", stderr)
        }
        return t
    }

    /// Writes `line`, a fact rather than a phase (a kernel compiled, say).
    static func say(_ line: String) {
        if enabled { fputs("sparge cuda trace: \(line)\n", stderr) }
    }

    /// `note`, after waiting for `device`'s queued work when tracing (so that the phase's kernels count in
    /// it, not in the next phase); nothing waits when the trace is off.
    @discardableResult
    static func step(_ label: String, since start: UInt64, on device: CUDADevice) throws -> UInt64 {
        if enabled { try device.synchronize() }
        return note(label, since: start)
    }
}
