import Dispatch
import SpargeKernels

/// A payload buffer of the ring: bytes at a stable address (MPI reads or writes it while workers compute).
final class RingBuffer {
    let capacity: Int
    let base: UnsafeMutableRawPointer

    init(capacity: Int) {
        self.capacity = capacity
        base = .allocate(byteCount: max(1, capacity), alignment: 64)
    }

    deinit { base.deallocate() }

    func bytes(count: Int) -> UnsafeMutableRawBufferPointer {
        precondition(count <= capacity, "ring payload of \(count) bytes exceeds the buffer's \(capacity)")
        return UnsafeMutableRawBufferPointer(start: base, count: count)
    }
}

/// This rank's own K and V rows `[Hkv, rows, D]` in the ring's storage format: the caller's fp32 tensors
/// as they are, or one converted copy made before the ring (the only conversion of a run).
struct LocalBlocks {
    let rows: Int
    let format: StorageFormat
    private let keys: Tensor3, values: Tensor3
    private let converted: RingBuffer?

    /// `k`, `v` in `format`, converted once (on every core) when it is not f32.
    ///
    /// - Throws: `SpargeError.invalidArgument` when a finite value does not fit the format (f16 beyond ±65504).
    init(keys k: Tensor3, values v: Tensor3, format: StorageFormat) throws {
        rows = k.rows
        self.format = format
        keys = k
        values = v
        guard format != .f32 else { converted = nil; return }
        let count = k.data.count
        let buffer = RingBuffer(capacity: 2 * count * format.byteSize)
        let piece = 1 << 16
        let pieces = (count + piece - 1) / piece
        let fits = UnsafeMutableBufferPointer<Bool>.allocate(capacity: 2 * max(1, pieces))
        defer { fits.deallocate() }
        fits.initialize(repeating: true)
        for (t, tensor) in [k, v].enumerated() {
            tensor.data.withUnsafeBufferPointer { source in
                let target = buffer.base + t * count * format.byteSize
                DispatchQueue.concurrentPerform(iterations: pieces) { c in
                    let at = c * piece
                    fits[t * pieces + c] = format.convert(source.baseAddress! + at, count: min(piece, count - at),
                                                          to: target + at * format.byteSize)
                }
            }
        }
        guard fits.allSatisfy({ $0 }) else {
            throw SpargeError.invalidArgument("K or V holds a value beyond the range of \(format.rawValue) (±65504)")
        }
        converted = buffer
    }

    /// Calls `body` with the keys and values, valid during the call.
    func withPointers<R>(_ body: (UnsafeRawPointer, UnsafeRawPointer) throws -> R) rethrows -> R {
        if let converted {
            return try body(UnsafeRawPointer(converted.base),
                            UnsafeRawPointer(converted.base + keys.data.count * format.byteSize))
        }
        return try keys.data.withUnsafeBufferPointer { kp in
            try values.data.withUnsafeBufferPointer { vp in
                try body(UnsafeRawPointer(kp.baseAddress ?? UnsafePointer(bitPattern: 64)!),
                         UnsafeRawPointer(vp.baseAddress ?? UnsafePointer(bitPattern: 64)!))
            }
        }
    }
}
