import Synchronization

/// One of the two staging areas of a `CUDABlockSparseAttention`: what one `attend` call sends to the device.
///
/// A call fills the pinned host area (16-bit K/V blocks, then the block entries, the work list and the block
/// lists), copies it to the device area on the copy stream, and the kernels that read it run on the kernel
/// stream after the copy. The call returns without waiting; the next call fills the *other* slot, so its
/// conversion and copy overlap this call's kernel. A slot is reused only once the kernel that read it is
/// done (`retire`).
///
/// Pinning host memory is slow (tens of milliseconds for the hundreds of MiB a call at 32K tokens stages),
/// so the areas outlive their slot: a slot that goes away gives them to a per-device pool, and the next
/// attention's slots take them from there. The pool keeps at most two pairs per device (the largest).
final class StagingSlot {
    let device: CUDADevice
    private(set) var host: PinnedBuffer?
    private(set) var deviceArea: DeviceBuffer?
    let copied: CUDAEvent
    let consumed: CUDAEvent
    let kernelStart: CUDAEvent
    let kernelStop: CUDAEvent
    /// Work was enqueued and not yet waited for.
    var inFlight = false
    /// The enqueued work includes a timed attention kernel.
    var timed = false

    init(device: CUDADevice) throws {
        self.device = device
        copied = try CUDAEvent(device: device)
        consumed = try CUDAEvent(device: device)
        kernelStart = try CUDAEvent(device: device)
        kernelStop = try CUDAEvent(device: device)
    }

    /// Waits until the work that read this slot is done; returns the attention kernel's device seconds.
    func retire() throws -> Double {
        guard inFlight else { return 0 }
        try consumed.synchronize()
        inFlight = false
        return timed ? try kernelStop.seconds(since: kernelStart) : 0
    }

    /// Makes both areas hold at least `bytes` (the slot must be retired).
    func reserve(_ bytes: Int) throws {
        precondition(!inFlight, "StagingSlot: reserve while in flight")
        // Both areas: pinned buffers come in powers of two, so the host area may be the larger one.
        if min(host?.bytes ?? 0, deviceArea?.bytes ?? 0) < bytes {
            if let pooled = Self.take(atLeast: bytes, device: device) {
                (host, deviceArea) = (pooled.host, pooled.device)
                return
            }
            // A quarter of headroom: parts of about the same size then fit without a new pinned allocation.
            let size = max(bytes + bytes / 4, (deviceArea?.bytes ?? 0) * 3 / 2)
            host = nil
            deviceArea = nil
            host = try PinnedBuffer(device: device, bytes: size)
            deviceArea = try DeviceBuffer(device: device, bytes: size, label: "staged blocks and lists")
        }
    }

    deinit {
        // Work still in flight reads the areas: keep them out of the pool then (they are freed instead).
        if let host, let deviceArea, !inFlight { Self.give(host, deviceArea, device: device) }
    }

    private struct Areas: @unchecked Sendable { let host: PinnedBuffer, device: DeviceBuffer }
    private static let pool = Mutex<[Int: [Areas]]>([:])

    private static func take(atLeast bytes: Int, device: CUDADevice) -> Areas? {
        pool.withLock { pool in
            guard let i = pool[device.ordinal]?.firstIndex(where: { $0.host.bytes >= bytes && $0.device.bytes >= bytes }) else {
                return nil
            }
            return pool[device.ordinal]!.remove(at: i)
        }
    }

    private static func give(_ host: PinnedBuffer, _ area: DeviceBuffer, device: CUDADevice) {
        pool.withLock { pool in
            var areas = pool[device.ordinal, default: []] + [Areas(host: host, device: area)]
            areas.sort { $0.host.bytes > $1.host.bytes }
            pool[device.ordinal] = Array(areas.prefix(2))
        }
    }

    /// Byte offsets of the parts: K/V blocks at 0, then entries, work, blocks, each 16-byte aligned.
    struct Layout {
        let entries: Int, work: Int, blocks: Int, total: Int

        init(kvBytes: Int, entries: Int, launches: Int, blocks: Int) {
            func align(_ x: Int) -> Int { (x + 15) / 16 * 16 }
            self.entries = align(kvBytes)
            work = align(self.entries + entries * 8)
            self.blocks = align(work + launches * 16)
            total = align(self.blocks + blocks * 4)
        }
    }
}
