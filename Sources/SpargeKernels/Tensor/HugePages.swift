#if canImport(Glibc)
import Glibc
#endif

/// Asks the kernel to back a large buffer with transparent huge pages (2 MiB) before it is first touched.
///
/// A pass's output (`[Hq, rows, D]` floats, 134 MB at 32K tokens and 8 heads) is fresh memory on every call:
/// touched in 4 KiB pages it costs one page fault per page (32 768 of them) on the threads that zero it, which
/// was most of the ring's setup (BENCHMARKS.md). Where the system's THP mode is `madvise` this makes them 2 MiB
/// faults; where it is `always` or `never`, or the platform has no `madvise`, it changes nothing. Only the
/// whole 2 MiB pages inside the buffer are advised; the buffer's contents and ownership are untouched.
enum HugePages {
    /// Buffers below this are left alone (fewer than two whole huge pages could be advised).
    static let minimumBytes = 4 << 20

    /// Advises the whole 2 MiB pages of `bytes` bytes from `start`.
    static func advise(_ start: UnsafeMutableRawPointer, bytes: Int) {
        #if canImport(Glibc)
        guard bytes >= minimumBytes else { return }
        let page = 2 << 20, address = UInt(bitPattern: start)
        let first = (address + UInt(page - 1)) & ~UInt(page - 1), end = (address + UInt(bytes)) & ~UInt(page - 1)
        guard end > first, let aligned = UnsafeMutableRawPointer(bitPattern: first) else { return }
        _ = madvise(aligned, Int(end - first), MADV_HUGEPAGE)
        #endif
    }
}
