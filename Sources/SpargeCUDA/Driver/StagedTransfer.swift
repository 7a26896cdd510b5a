import Dispatch

/// Large host↔device transfers through two pinned chunks: the host's work on one chunk (converting into it,
/// or copying out of it on several threads) overlaps the DMA of the other, and no gigabyte-sized pinned
/// buffer is ever allocated. A copy from pageable memory instead runs at a few GB/s on one thread.
///
/// Transfers run on the device's copy stream and return when complete; the caller synchronizes the kernel
/// stream first where a download must see a kernel's results.
final class StagedTransfer: @unchecked Sendable {
    let device: CUDADevice
    /// Bytes per chunk.
    let chunkBytes: Int
    private let chunks: [PinnedBuffer]
    private let done: [CUDAEvent]

    init(device: CUDADevice, chunkBytes: Int = 32 << 20) throws {
        self.device = device
        self.chunkBytes = chunkBytes
        chunks = [try PinnedBuffer(device: device, bytes: chunkBytes), try PinnedBuffer(device: device, bytes: chunkBytes)]
        done = [try CUDAEvent(device: device), try CUDAEvent(device: device)]
    }

    /// Writes `count` bytes at `offset` of `destination`; `fill(start, length, chunk)` puts bytes
    /// `start..<start+length` of what is sent into `chunk` (it may use threads).
    func upload(to destination: DeviceBuffer, offset: Int = 0, count: Int,
                fill: (_ start: Int, _ length: Int, _ chunk: UnsafeMutableRawPointer) -> Void) throws {
        precondition(offset + count <= destination.bytes, "StagedTransfer: upload past the end")
        try device.makeCurrent()
        var pending = [false, false]
        for (i, start) in stride(from: 0, to: count, by: chunkBytes).enumerated() {
            let slot = i % 2
            if pending[slot] { try done[slot].synchronize() }
            let length = min(chunkBytes, count - start)
            fill(start, length, chunks[slot].pointer)
            try device.api.check(device.api.cuMemcpyHtoDAsync(destination.address + UInt64(offset + start), chunks[slot].pointer,
                                                              length, device.copyStream), "cuMemcpyHtoDAsync(\(length) B)")
            try done[slot].record(on: device.copyStream)
            pending[slot] = true
        }
        for slot in 0..<2 where pending[slot] { try done[slot].synchronize() }
    }

    /// Fills `destination`, a `[heads][total][dim]` Float array, in chunks of whole rows: `fill(rows, chunk)`
    /// writes rows `rows` of every head into `chunk` as `[heads][rows.count][dim]` (a file read straight into
    /// pinned memory, say) while the chunk before goes up; each head's part goes to its place.
    func uploadRows(to destination: DeviceBuffer, heads: Int, total: Int, dim: Int,
                    fill: (_ rows: Range<Int>, _ chunk: UnsafeMutableBufferPointer<Float>) throws -> Void) throws {
        precondition(heads * total * dim * 4 <= destination.bytes, "StagedTransfer: rows past the end")
        try device.makeCurrent()
        try device.orderAfterQueuedWork(device.copyStream)
        let rowsPerChunk = max(1, chunkBytes / max(1, heads * dim * 4))
        precondition(rowsPerChunk * heads * dim * 4 <= chunkBytes, "StagedTransfer: a row of every head exceeds a chunk")
        var pending = [false, false]
        for (i, first) in stride(from: 0, to: total, by: rowsPerChunk).enumerated() {
            let slot = i % 2
            if pending[slot] { try done[slot].synchronize() }
            let rows = first..<min(total, first + rowsPerChunk)
            let floats = chunks[slot].pointer.bindMemory(to: Float.self, capacity: heads * rows.count * dim)
            try fill(rows, UnsafeMutableBufferPointer(start: floats, count: heads * rows.count * dim))
            for h in 0..<heads {
                let bytes = rows.count * dim * 4
                try device.api.check(device.api.cuMemcpyHtoDAsync(destination.address + UInt64((h * total + first) * dim * 4),
                                                                  chunks[slot].pointer + h * bytes, bytes, device.copyStream),
                                     "cuMemcpyHtoDAsync(\(bytes) B)")
            }
            try done[slot].record(on: device.copyStream)
            pending[slot] = true
        }
        for slot in 0..<2 where pending[slot] { try done[slot].synchronize() }
    }

    /// Copies `count` bytes of host memory at `source` up to `offset` of `destination`, several threads copying.
    func upload(to destination: DeviceBuffer, offset: Int = 0, from source: UnsafeRawPointer, count: Int) throws {
        try upload(to: destination, offset: offset, count: count) { start, length, chunk in
            Self.parallelCopy(to: chunk, from: source + start, count: length)
        }
    }

    /// Reads the first `count` bytes of `source`; `drain(start, length, chunk)` takes bytes
    /// `start..<start+length` out of `chunk` while the next chunk is on its way.
    func download(from source: DeviceBuffer, count: Int,
                  drain: (_ start: Int, _ length: Int, _ chunk: UnsafeRawPointer) -> Void) throws {
        precondition(count <= source.bytes, "StagedTransfer: download past the end")
        try device.makeCurrent()
        let starts = Array(stride(from: 0, to: count, by: chunkBytes))
        func enqueue(_ i: Int) throws {
            let slot = i % 2, length = min(chunkBytes, count - starts[i])
            try device.api.check(device.api.cuMemcpyDtoHAsync(chunks[slot].pointer, source.address + UInt64(starts[i]), length,
                                                              device.copyStream), "cuMemcpyDtoHAsync(\(length) B)")
            try done[slot].record(on: device.copyStream)
        }
        if !starts.isEmpty { try enqueue(0) }
        for i in starts.indices {
            if i + 1 < starts.count { try enqueue(i + 1) }
            try done[i % 2].synchronize()
            drain(starts[i], min(chunkBytes, count - starts[i]), chunks[i % 2].pointer)
        }
    }

    /// Copies `count` bytes of `source` to host memory at `destination`, several threads copying out.
    func download(from source: DeviceBuffer, into destination: UnsafeMutableRawPointer, count: Int) throws {
        try download(from: source, count: count) { start, length, chunk in
            Self.parallelCopy(to: destination + start, from: chunk, count: length)
        }
    }

    /// `memcpy` on several threads (one for small copies).
    static func parallelCopy(to destination: UnsafeMutableRawPointer, from source: UnsafeRawPointer, count: Int) {
        let piece = 4 << 20
        let pieces = (count + piece - 1) / piece
        DispatchQueue.concurrentPerform(iterations: pieces) { p in
            let start = p * piece
            (destination + start).copyMemory(from: source + start, byteCount: min(piece, count - start))
        }
    }
}
