import Dispatch
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Host-side phase timings of the CUDA backend, written to stderr when `SPARGE_CUDA_TRACE` is set: where a
/// GPU run spends its time outside the kernels (conversions, transfers, list building).
enum CUDATrace {
    static let enabled = Environment.value("SPARGE_CUDA_TRACE") != nil

    /// Now, for a later `note`.
    static func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    /// Writes `label` and the milliseconds since `start`; returns now (the start of the next phase).
    @discardableResult
    static func note(_ label: String, since start: UInt64) -> UInt64 {
        let t = now()
        if enabled {
            let ms = Double(t - start) * 1e-6
            fputs("sparge cuda trace: \(label) \((ms * 10).rounded() / 10) ms\n", stderr)
        }
        return t
    }
}
