import CSpargeKernels
@testable import SpargeKernels

/// The C kernel sets this CPU runs, by name, for tests that hold every set to the same bits: the portable
/// one (what a CPU without AVX2 runs, forced with SPARGE_CPU_ISA=portable in the CLI), AVX2 and the AVX-512
/// source compiled for AVX2 (its blocking) where this CPU has AVX2, and the AVX-512 sets where it has them.
enum TileKernelSets {
    static var runnable: [(String, sparge_tile_kernels)] {
        var sets = [("portable", sparge_kernels(Int32(SPARGE_ISA_PORTABLE.rawValue)))]
        #if arch(x86_64)
        if CPUISA.avx2.isSupported {
            sets += [("avx2", sparge_kernels(Int32(SPARGE_ISA_AVX2.rawValue))),
                     ("avx512 blocking", sparge_kernels_avx512_blocking())]
        }
        for isa in [CPUISA.avx512, .avx512bf16] where isa.isSupported { sets.append((isa.rawValue, isa.kernels)) }
        #endif
        return sets
    }
}
