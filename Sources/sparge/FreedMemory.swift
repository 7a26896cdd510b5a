#if canImport(Glibc)
import Glibc
#endif

/// Keeps the memory a pass frees for the next pass of this process instead of handing it back to the kernel.
///
/// A pass allocates its output, its K/V in the ring's format and the kernels' packed blocks, and frees all
/// but the output when it ends: at N = 16384, 4 heads, D = 128 about 26 MB of fresh pages a pass, which the
/// kernel faults in one by one on first touch (~6600 faults, 7% of a sparse bf16 pass on two Zen 5 cores).
/// glibc returns freed memory to the kernel above its trim threshold and maps allocations above 128 KB–32 MiB
/// on their own, so every pass paid those faults again. With no separate mappings and no trimming, the
/// second and later passes of a process (`bench --repeat`, `verify`, a model's layers) reuse the same pages:
/// ~1700 faults a pass. The process keeps its peak memory until it exits, which suits a tool that runs passes
/// of one shape.
///
/// Not applied when `GLIBC_TUNABLES` is set (the user's own malloc settings win), and only to the `sparge`
/// tool: the library leaves its host process's allocator alone.
func keepFreedMemoryForTheNextPass() {
    #if canImport(Glibc)
    guard getenv("GLIBC_TUNABLES") == nil else { return }
    // mallopt is glibc's (malloc.h, which Swift's Glibc module does not bring in): looked up by name.
    typealias Mallopt = @convention(c) (Int32, Int32) -> Int32
    guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "mallopt") else { return }
    let mallopt = unsafeBitCast(symbol, to: Mallopt.self)
    let trimThreshold: Int32 = -1, mmapMax: Int32 = -4  // malloc.h's M_TRIM_THRESHOLD, M_MMAP_MAX
    _ = mallopt(mmapMax, 0)
    _ = mallopt(trimThreshold, Int32.max)
    #endif
}
