import CSpargeKernels
import Dispatch

/// The ceiling of this machine for a kernel set and what its tiles multiply with (the fp32 FMA, int8's integer
/// multiply-adds, or the bf16 products' instruction): the figure every CPU GFLOP/s is reported against.
public enum PeakFlops {
    /// Measured GFLOP/s of independent chains of `isa`'s multiply-adds on `threads` threads for about
    /// `seconds` (FMAs unless `products` says otherwise).
    ///
    /// The probe is compiled with the micro-kernels (CSpargeKernels), for the same ISA: 12 chains of 8
    /// floats on AVX2 (16 registers; FMA latency 4 × 2 pipes = 8 in flight), 16 of 16 on AVX-512, 8 of 4
    /// (multiply and add, 2 FLOPs) on the portable path. 2 FLOPs per lane per FMA. The result is the sum
    /// over threads of each thread's rate; on a shared machine it is only as clean as the load. (A probe of
    /// Swift `SIMD16` chains measured its own register spills on AVX2: 68–74 GFLOP/s on two Zen 3 cores,
    /// where a C probe reached 183.)
    ///
    /// - Parameters:
    ///   - threads: worker threads (default 1).
    ///   - seconds: measuring time per thread (default 0.5; longer smooths frequency ramps).
    ///   - isa: the kernel set whose ceiling is measured (default: the best this CPU has).
    ///   - products: what the tiles multiply with (`TileProducts.chosen`): fp32 measures the FMA; int8 the
    ///     int16 multiply-adds of its products (independent chains of the kernels' step: vpmaddwd then vpaddd
    ///     on AVX2, vpdpwssd with VNNI), 2 operations each, so that the figure compares with GFLOP/s (the
    ///     ceiling of the int8 kernels, 1.35–1.45× the FMA's on Zen 3); bf16Tiles the set's bf16 instruction
    ///     (VDPBF16PS chains, or TDPBF16PS on tiles).
    public static func measure(threads: Int = 1, seconds: Double = 0.5, isa: CPUISA = .detected,
                               products: TileProducts = .fp32) -> Double {
        precondition(threads >= 1, "PeakFlops: threads must be ≥ 1")
        let kernels = isa.kernels
        precondition(products != .bf16Tiles || kernels.bf16.probe != nil, "PeakFlops: \(isa.rawValue) has no bf16 products")
        var rates = [Double](repeating: 0, count: threads)
        rates.withUnsafeMutableBufferPointer { out in
            DispatchQueue.concurrentPerform(iterations: threads) { t in
                switch products {
                case .fp32: out[t] = rate(kernels, seconds: seconds)
                case .int8: out[t] = integerRate(kernels, seconds: seconds)
                case .bf16Tiles: out[t] = bf16Rate(kernels.bf16, seconds: seconds)
                }
            }
        }
        return rates.reduce(0, +)
    }

    /// One thread's GFLOP/s on the set's bf16 instruction.
    static func bf16Rate(_ kernels: sparge_bf16_tile_kernels, seconds: Double) -> Double {
        let iterations = 1 << 12
        // Each round returns at least 1: the sum keeps the products alive.
        let (rounds, elapsed) = timed(seconds: seconds, zero: Float(0), { $0 + $1 }) { kernels.probe(iterations) }
        return Double(rounds * iterations) * Double(kernels.probeFlops) / Double(elapsed)
    }

    /// One thread's int16 multiply-add rate, in G operations per second (2 per multiply-add).
    static func integerRate(_ kernels: sparge_tile_kernels, seconds: Double) -> Double {
        let iterations = 1 << 14
        // The chains never all cancel to 0: the sum keeps them alive.
        let (rounds, elapsed) = timed(seconds: seconds, zero: Int32(0), { $0 &+ $1 }) { kernels.maddProbe(iterations) }
        return Double(rounds * iterations) * Double(kernels.probeChains * kernels.vectorWidth) * 2 * 2 / Double(elapsed)
    }

    /// One thread's GFLOP/s on FMA chains.
    static func rate(_ kernels: sparge_tile_kernels, seconds: Double) -> Double {
        let iterations = 1 << 14
        // Every chain converges to 1, so the sum is never 0: it keeps the probe's result alive.
        let (rounds, elapsed) = timed(seconds: seconds, zero: Float(0), { $0 + $1 }) { kernels.fmaProbe(iterations) }
        return Double(rounds * iterations) * Double(kernels.probeChains * kernels.vectorWidth) * 2 / Double(elapsed)
    }

    /// Rounds of `probe` until `seconds` have passed: how many, and the nanoseconds they took (∞ when every
    /// result summed to `zero`, which a live probe never does, so that the rate reads 0 rather than a figure
    /// of work the compiler might have dropped).
    static func timed<T: Equatable>(seconds: Double, zero: T, _ add: (T, T) -> T,
                                    _ probe: () -> T) -> (rounds: Int, nanoseconds: Double) {
        var rounds = 0, sink = zero
        let start = DispatchTime.now().uptimeNanoseconds
        var elapsed: UInt64 = 0
        repeat {
            sink = add(sink, probe())
            rounds += 1
            elapsed = DispatchTime.now().uptimeNanoseconds - start
        } while elapsed < UInt64(seconds * 1e9)
        return (rounds, sink == zero ? .infinity : Double(elapsed))
    }
}
