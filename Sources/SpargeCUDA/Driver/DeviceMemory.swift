import Synchronization

/// Device memory from `cuMemAlloc` (or the device's pool), given back with the buffer — or a caller's
/// device memory, borrowed.
final class DeviceBuffer {
    let device: CUDADevice
    let address: UInt64
    let bytes: Int
    /// What keeps borrowed memory alive (nil for memory this buffer allocated).
    private let owner: AnyObject?
    private let owned: Bool

    /// `bytes` of device memory (at least 1), uninitialised unless `zeroed`.
    init(device: CUDADevice, bytes: Int, zeroed: Bool = false, label: String) throws {
        self.device = device
        self.bytes = max(1, bytes)
        try device.makeCurrent()
        var address: UInt64 = 0
        if let reused = device.pool.take(bytes: self.bytes) {
            address = reused
        } else {
            try device.api.check(device.api.cuMemAlloc(&address, self.bytes), "cuMemAlloc(\(self.bytes) B for \(label))")
        }
        self.address = address
        owner = nil
        owned = true
        if zeroed { try zero() }
    }

    /// `bytes` of device memory at `address` that `owner` (a caller's tensor) keeps alive; never freed here.
    init(device: CUDADevice, borrowing address: UInt64, bytes: Int, owner: AnyObject?) {
        self.device = device
        self.address = address
        self.bytes = bytes
        self.owner = owner
        owned = false
    }

    deinit {
        if owned && !device.pool.give(address: address, bytes: bytes) { _ = device.api.cuMemFree(address) }
    }

    /// Sets every byte to 0 (`cuMemsetD8` runs on the legacy default stream, which the device's blocking
    /// streams are ordered with: later kernels see zeros).
    func zero() throws {
        try zero(offset: 0, count: bytes)
    }

    /// Sets `count` bytes from `offset` to 0 (ordered as `zero()`).
    func zero(offset: Int, count: Int) throws {
        precondition(offset >= 0 && offset + count <= bytes, "DeviceBuffer: zeroing past the end")
        guard count > 0 else { return }
        try device.api.check(device.api.cuMemsetD8(address + UInt64(offset), 0, count), "cuMemsetD8")
    }

    /// Copies `count` bytes from host memory to offset `offset`, in the stream's order: up to 4 MiB through
    /// a pinned copy without waiting for the device (`CUDADevice.uploadAsync`), more synchronously (pinning
    /// costs about a millisecond per MiB). Kernels enqueued later see the bytes either way.
    func upload(_ source: UnsafeRawPointer, count: Int, offset: Int = 0) throws {
        precondition(offset + count <= bytes, "DeviceBuffer: upload past the end")
        guard count > 0 else { return }
        if count <= 4 << 20 {
            try device.uploadAsync(to: address + UInt64(offset), from: source, count: count)
        } else {
            try device.api.check(device.api.cuMemcpyHtoD(address + UInt64(offset), source, count), "cuMemcpyHtoD(\(count) B)")
        }
    }

    /// Copies an array of plain values to the start of the buffer (as `upload(_:count:offset:)`).
    func upload<T: BitwiseCopyable>(_ values: [T]) throws {
        guard !values.isEmpty else { return }
        try values.withUnsafeBytes { try upload($0.baseAddress!, count: $0.count) }
    }

    /// Copies `count` bytes from offset `offset` into host memory (synchronous: the copy waits for the work
    /// queued on the device's blocking streams). Up to 4 MiB go through a pooled pinned buffer, unless
    /// `destination` is pinned itself: a copy into pageable memory is staged by the driver and took 50–80 µs
    /// for the 64–200 KB a GPU pass brings down (its mask lists, its counters), on the pass's critical path.
    func download(into destination: UnsafeMutableRawPointer, count: Int, offset: Int = 0, pinned: Bool = false) throws {
        precondition(offset + count <= bytes, "DeviceBuffer: download past the end")
        guard count > 0 else { return }
        let source = address + UInt64(offset)
        guard count <= 4 << 20 && !pinned else {
            try device.api.check(device.api.cuMemcpyDtoH(destination, source, count), "cuMemcpyDtoH(\(count) B)")
            return
        }
        let staging = try PinnedBuffer(device: device, bytes: count)
        try device.api.check(device.api.cuMemcpyDtoH(staging.pointer, source, count), "cuMemcpyDtoH(\(count) B, pinned)")
        destination.copyMemory(from: staging.pointer, byteCount: count)
    }
}

/// Page-locked host memory from `cuMemHostAlloc`: what an asynchronous copy to the device reads from.
final class PinnedBuffer {
    let device: CUDADevice
    let pointer: UnsafeMutableRawPointer
    let bytes: Int

    /// At least `bytes` of pinned memory (a power of two of them, so that the device's pool can hand the
    /// same buffer to the next request of about the same size: pinning costs about a millisecond per MiB).
    init(device: CUDADevice, bytes: Int) throws {
        self.device = device
        self.bytes = 1 << (Int.bitWidth - (max(1, bytes) - 1).leadingZeroBitCount)
        if let reused = device.pinnedPool.take(bytes: self.bytes) {
            pointer = UnsafeMutableRawPointer(bitPattern: UInt(reused))!
            return
        }
        try device.makeCurrent()
        var p: UnsafeMutableRawPointer?
        try device.api.check(device.api.cuMemHostAlloc(&p, self.bytes, 0), "cuMemHostAlloc(\(self.bytes) B)")
        pointer = p!
    }

    deinit {
        if !device.pinnedPool.give(address: UInt64(UInt(bitPattern: pointer)), bytes: bytes) {
            _ = device.api.cuMemFreeHost(pointer)
        }
    }

    /// Enqueues a copy of the first `count` bytes to `destination` on `stream` (default: the kernels').
    func copyAsync(to destination: DeviceBuffer, count: Int, stream: UnsafeMutableRawPointer? = nil) throws {
        precondition(count <= bytes && count <= destination.bytes, "PinnedBuffer: copy past the end")
        guard count > 0 else { return }
        try device.api.check(device.api.cuMemcpyHtoDAsync(destination.address, pointer, count, stream ?? device.stream),
                             "cuMemcpyHtoDAsync(\(count) B)")
    }
}

/// Device bytes on their way into pooled pinned memory: async copies enqueued on the device's stream (so
/// after the work queued before them) and an event after them, so that the host waits for these bytes alone,
/// not for everything the stream holds (a synchronisation, or a copy on the legacy stream, would). The pinned
/// buffer goes back to the pool only once the copies have landed — also when the bytes are never read (a
/// pass that failed) — because the pool's next user writes it from the host at once.
final class PendingDownload {
    private let staging: PinnedBuffer
    private let landed: CUDAEvent
    /// Bytes coming down: the parts' counts, one after the other.
    let count: Int

    /// Enqueues copies of `parts` (a buffer, an offset in it, bytes), laid one after the other, on `stream`
    /// (default: the main stream).
    init(device: CUDADevice, parts: [(buffer: DeviceBuffer, offset: Int, count: Int)],
         on stream: UnsafeMutableRawPointer? = nil) throws {
        count = parts.reduce(0) { $0 + $1.count }
        staging = try PinnedBuffer(device: device, bytes: max(1, count))
        var at = 0
        for part in parts where part.count > 0 {
            precondition(part.offset + part.count <= part.buffer.bytes, "PendingDownload: past the end of a buffer")
            try device.api.check(device.api.cuMemcpyDtoHAsync(staging.pointer + at, part.buffer.address + UInt64(part.offset),
                                                              part.count, stream ?? device.stream),
                                 "cuMemcpyDtoHAsync(\(part.count) B)")
            at += part.count
        }
        landed = try CUDAEvent(device: device)
        try landed.record(on: stream)
    }

    /// Makes the main stream's later work wait for the copies (and for the work before them on their stream).
    func orderMainStreamAfter() throws {
        try landed.makeWait()
    }

    /// The bytes, once they have landed (waits for the copies alone).
    func bytes() throws -> UnsafeRawBufferPointer {
        try landed.synchronize()
        return UnsafeRawBufferPointer(start: staging.pointer, count: count)
    }

    deinit {
        try? staging.device.makeCurrent()
        try? landed.synchronize()
    }
}

/// A CUDA event: a point in a stream that the host or another stream can wait for, and time against.
final class CUDAEvent {
    let device: CUDADevice
    let handle: UnsafeMutableRawPointer?

    init(device: CUDADevice) throws {
        self.device = device
        var e: UnsafeMutableRawPointer?
        try device.api.check(device.api.cuEventCreate(&e, 0), "cuEventCreate")
        handle = e
    }

    /// (A stream still waiting for the event is unaffected: the driver frees it once that is done.)
    deinit { _ = device.api.cuEventDestroy(handle) }

    /// Marks the current end of `stream` (default: the kernels' stream).
    func record(on stream: UnsafeMutableRawPointer? = nil) throws {
        try device.api.check(device.api.cuEventRecord(handle, stream ?? device.stream), "cuEventRecord")
    }

    /// Makes later work of `stream` (default: the kernels' stream) wait for this event.
    func makeWait(_ stream: UnsafeMutableRawPointer? = nil) throws {
        try device.api.check(device.api.cuStreamWaitEvent(stream ?? device.stream, handle, 0), "cuStreamWaitEvent")
    }

    /// Blocks the host until the event has happened.
    func synchronize() throws {
        try device.api.check(device.api.cuEventSynchronize(handle), "cuEventSynchronize")
    }

    /// Seconds from `start` to this event (both recorded and complete).
    func seconds(since start: CUDAEvent) throws -> Double {
        var ms: Float = 0
        try device.api.check(device.api.cuEventElapsedTime(&ms, start.handle, handle), "cuEventElapsedTime")
        return Double(ms) * 1e-3
    }
}

/// Allocations given back by buffers (device memory, or pinned host memory), kept for the next buffer of
/// the same size: a forward pass
/// allocates the same sizes every time, and `cuMemAlloc`/`cuMemFree` of large buffers cost tens of
/// microseconds to milliseconds each. At most `limit` bytes are kept; beyond it memory is freed.
///
/// Reuse is ordered: kernels run on the device's stream in order, and uploads, downloads and `cuMemsetD8`
/// run on the legacy stream, which waits for the device's (blocking) streams — so a reused buffer is
/// written only after the work that read it before. Work on the copy and side streams is ordered after the
/// main stream's queued work before it uses a buffer the pool handed out (`orderAfterQueuedWork`), and the
/// main stream waits for its event before such a buffer can go back. Pinned host buffers are written by the
/// host at once: one that an async copy writes (`cuMemcpyDtoHAsync`) must not be given back before the copy
/// has landed (`PendingDownload` waits for its copies' event before it gives its buffer back).
final class DeviceMemoryPool: @unchecked Sendable {
    private let state = Mutex<(free: [Int: [UInt64]], held: Int)>(([:], 0))
    let limit: Int

    init(limit: Int) { self.limit = limit }

    /// An allocation of exactly `bytes` bytes given back earlier, if any.
    func take(bytes: Int) -> UInt64? {
        state.withLock { s in
            guard let address = s.free[bytes]?.popLast() else { return nil }
            s.held -= bytes
            return address
        }
    }

    /// Keeps `address` for reuse unless that would exceed the limit (then the caller frees it).
    func give(address: UInt64, bytes: Int) -> Bool {
        state.withLock { s in
            guard s.held + bytes <= limit else { return false }
            s.free[bytes, default: []].append(address)
            s.held += bytes
            return true
        }
    }
}
