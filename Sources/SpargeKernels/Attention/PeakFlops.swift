import Dispatch

/// The fp32 FMA ceiling of this machine as Swift reaches it: the figure every GFLOP/s is reported against.
public enum PeakFlops {
    /// Measured GFLOP/s of independent `SIMD16<Float>` FMA chains on `threads` threads for about `seconds`.
    ///
    /// Each thread runs two probes for half the time each and keeps the faster: 16 chains (enough to hide a
    /// 4-cycle FMA latency on two 512-bit pipes, in 16 of AVX-512's 32 registers) and 6 chains (12 of
    /// AVX2's 16 registers, where a SIMD16 is two 256-bit halves: 16 chains would spill and measure the
    /// spills — 68–74 GFLOP/s on two Zen 3 cores instead of their ~180). 2 FLOPs per lane per FMA. The
    /// result is the sum over threads of each thread's rate; on a shared machine it is only as clean as the
    /// load.
    ///
    /// - Parameters:
    ///   - threads: worker threads (default 1).
    ///   - seconds: measuring time per thread (default 0.5; longer smooths frequency ramps).
    public static func measure(threads: Int = 1, seconds: Double = 0.5) -> Double {
        precondition(threads >= 1, "PeakFlops: threads must be ≥ 1")
        var rates = [Double](repeating: 0, count: threads)
        rates.withUnsafeMutableBufferPointer { out in
            DispatchQueue.concurrentPerform(iterations: threads) { t in
                out[t] = max(chains(seconds: seconds / 2), sixChains(seconds: seconds / 2))
            }
        }
        return rates.reduce(0, +)
    }

    /// One thread's GFLOP/s with 6 chains (AVX2's register file). The two probes repeat their timing loop on
    /// purpose: the chains must be plain local variables in straight-line code for the compiler to keep them
    /// in registers, which a shared closure or array would not guarantee.
    static func sixChains(seconds: Double) -> Double {
        let a = Vec16(repeating: 0.999_9), b = Vec16(repeating: 1e-4)
        var c0 = Vec16(repeating: 1), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0
        let inner = 1 << 14
        var rounds = 0
        let start = DispatchTime.now().uptimeNanoseconds
        var elapsed: UInt64 = 0
        let budget = UInt64(seconds * 1e9)
        repeat {
            for _ in 0..<inner {
                c0 = b.addingProduct(c0, a); c1 = b.addingProduct(c1, a); c2 = b.addingProduct(c2, a)
                c3 = b.addingProduct(c3, a); c4 = b.addingProduct(c4, a); c5 = b.addingProduct(c5, a)
            }
            rounds += 1
            elapsed = DispatchTime.now().uptimeNanoseconds - start
        } while elapsed < budget
        // Keeps the chains alive: the sum is never 0 (each chain converges to 1).
        if (c0 + c1 + c2 + c3 + c4 + c5)[0] == 0 { return -1 }
        return Double(rounds) * Double(inner) * 6 * 16 * 2 / Double(elapsed)
    }

    /// One thread's GFLOP/s with 16 chains (AVX-512's register file).
    static func chains(seconds: Double) -> Double {
        let a = Vec16(repeating: 0.999_9), b = Vec16(repeating: 1e-4)
        var c0 = Vec16(repeating: 1), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0
        var c8 = c0, c9 = c0, c10 = c0, c11 = c0, c12 = c0, c13 = c0, c14 = c0, c15 = c0
        let inner = 1 << 14
        var rounds = 0
        let start = DispatchTime.now().uptimeNanoseconds
        var elapsed: UInt64 = 0
        let budget = UInt64(seconds * 1e9)
        repeat {
            for _ in 0..<inner {
                c0 = b.addingProduct(c0, a); c1 = b.addingProduct(c1, a)
                c2 = b.addingProduct(c2, a); c3 = b.addingProduct(c3, a)
                c4 = b.addingProduct(c4, a); c5 = b.addingProduct(c5, a)
                c6 = b.addingProduct(c6, a); c7 = b.addingProduct(c7, a)
                c8 = b.addingProduct(c8, a); c9 = b.addingProduct(c9, a)
                c10 = b.addingProduct(c10, a); c11 = b.addingProduct(c11, a)
                c12 = b.addingProduct(c12, a); c13 = b.addingProduct(c13, a)
                c14 = b.addingProduct(c14, a); c15 = b.addingProduct(c15, a)
            }
            rounds += 1
            elapsed = DispatchTime.now().uptimeNanoseconds - start
        } while elapsed < budget
        let sink = c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10 + c11 + c12 + c13 + c14 + c15
        // Keeps the chains alive: the sum is never 0 (each chain converges to 1).
        if sink[0] == 0 { return -1 }
        let flops = Double(rounds) * Double(inner) * 16 * 16 * 2
        return flops / Double(elapsed)
    }
}
