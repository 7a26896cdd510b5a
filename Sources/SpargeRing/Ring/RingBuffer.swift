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

/// This rank's own K and V rows `[Hkv, rows, D]` for the ring: the caller's tensors as they are when they
/// already are in the ring's storage format (no copy), or one converted copy made before the ring (the only
/// conversion of a run) — or the caller's fp32 rows as they are when the attention rounds them to the ring's
/// format itself, so that only the blocks sent are converted (`HostRingStore.pack`).
struct LocalBlocks {
    let rows: Int
    /// What the ring carries these blocks in.
    let format: StorageFormat
    /// What the rows in memory are: `format`, or f32 rows that stand for their values in `format`.
    var rowFormat: StorageFormat {
        switch storage {
        case .floats: .f32
        case .packed(let keys, _): keys.element
        }
    }
    private enum Storage {
        case floats(Tensor3, Tensor3)
        /// Packed `[Hkv, rows, D]` tensors in `format`, or in f32 where the attention rounds them.
        case packed(Tensor, Tensor)
    }
    private let storage: Storage

    /// `k`, `v` in `format`: borrowed when f32 or when `roundedByAttention` (the attention computes from f32
    /// rows what it would from the rows stored in `format`), else converted once on the pass's threads.
    ///
    /// - Throws: `SpargeError.invalidArgument` when a finite value does not fit the format (f16 beyond ±65504).
    init(keys k: Tensor3, values v: Tensor3, format: StorageFormat, roundedByAttention: Bool = false) throws {
        precondition(!roundedByAttention || format == .bf16, "LocalBlocks: only bf16 storage borrows fp32 rows")
        if format == .f32 || roundedByAttention {
            self.init(rows: k.rows, format: format, storage: .floats(k, v))
            return
        }
        // Straight from the arrays into the format, on the pass's threads (no fp32 copy first).
        let (keys, kOverflow) = Tensor.converting(k, to: format)
        let (values, vOverflow) = Tensor.converting(v, to: format)
        guard !kOverflow && !vOverflow else {
            throw SpargeError.invalidArgument("\(kOverflow ? "K" : "V") holds a value beyond the range of \(format.rawValue) (±65504)")
        }
        self.init(rows: k.rows, format: format, storage: .packed(keys, values))
    }

    /// `k`, `v` (`[Hkv, rows, D]` host tensors of any element type and strides) in `format`: the tensors
    /// themselves when they are packed in it, or when `roundedByAttention` and they are packed f32 (as the
    /// `Tensor3` entry borrows its arrays); else one converted copy each.
    init(keys k: Tensor, values v: Tensor, format: StorageFormat, roundedByAttention: Bool = false) throws {
        precondition(!roundedByAttention || format == .bf16, "LocalBlocks: only bf16 storage borrows fp32 rows")
        if roundedByAttention && [k, v].allSatisfy({ $0.element == .f32 && $0.isContiguous && $0.place == .host }) {
            self.init(rows: k.shape[1], format: format, storage: .packed(k, v))
            return
        }
        let (keys, kOverflow) = try k.packed(as: format)
        let (values, vOverflow) = try v.packed(as: format)
        guard !kOverflow && !vOverflow else {
            throw SpargeError.invalidArgument("\(kOverflow ? "K" : "V") holds a value beyond the range of \(format.rawValue) (±65504)")
        }
        self.init(rows: keys.shape[1], format: format, storage: .packed(keys, values))
    }

    private init(rows: Int, format: StorageFormat, storage: Storage) {
        (self.rows, self.format, self.storage) = (rows, format, storage)
    }

    /// Calls `body` with the keys and values, rows in `rowFormat` (not necessarily `format`), valid during
    /// the call.
    func withPointers<R>(_ body: (UnsafeRawPointer, UnsafeRawPointer) throws -> R) rethrows -> R {
        switch storage {
        case .packed(let keys, let values):
            let size = keys.element.byteSize
            return try withExtendedLifetime((keys, values)) {
                try body(UnsafeRawPointer(keys.buffer.base + keys.offset * size),
                         UnsafeRawPointer(values.buffer.base + values.offset * size))
            }
        case .floats(let keys, let values):
            return try keys.data.withUnsafeBufferPointer { kp in
                try values.data.withUnsafeBufferPointer { vp in
                    try body(UnsafeRawPointer(kp.baseAddress ?? UnsafePointer(bitPattern: 64)!),
                             UnsafeRawPointer(vp.baseAddress ?? UnsafePointer(bitPattern: 64)!))
                }
            }
        }
    }
}
