import SpargeKernels

extension CUDADevice {
    /// Where this device's tensors are.
    public var place: TensorPlace { .device(backend: "cuda", ordinal: ordinal) }

    /// A packed copy of host tensor `t` on this device, in `t`'s element type and shape (strided views are
    /// packed on the host first).
    public func upload(_ t: Tensor) throws -> Tensor {
        guard t.place == .host else {
            throw SpargeError.invalidArgument("upload: a tensor on \(t.place), not on the host")
        }
        let packed = try t.packed(as: t.element).tensor
        let bytes = packed.shape.reduce(1, *) * packed.element.byteSize
        let buffer = try DeviceBuffer(device: self, bytes: bytes, label: "uploaded tensor \(packed.shape)")
        try stagedTransfer().upload(to: buffer, from: packed.buffer.base + packed.offset * packed.element.byteSize,
                                    count: bytes)
        return try buffer.tensor(packed.element, shape: packed.shape)
    }

    /// A `[heads, rows, dim]` f32 tensor on this device whose rows `read(rows, into:)` writes as
    /// `[heads][rows.count][dim]` into pinned chunks (tens of MiB each, two in turn): inputs read from files
    /// land on the device without a host copy of the whole tensor, the reading overlapping the copies.
    public func tensor(heads: Int, rows: Int, dim: Int,
                       readingRows read: (_ rows: Range<Int>, _ into: UnsafeMutableBufferPointer<Float>) throws -> Void) throws -> Tensor {
        let buffer = try DeviceBuffer(device: self, bytes: heads * rows * dim * 4, label: "tensor read from a file")
        try stagedTransfer().uploadRows(to: buffer, heads: heads, total: rows, dim: dim, fill: read)
        return try buffer.tensor(.f32, shape: [heads, rows, dim])
    }

    /// A host copy of tensor `t` of this device (packed, the same element type and shape).
    public func download(_ t: Tensor) throws -> Tensor {
        let buffer = try deviceBuffer(of: t, label: "download")
        guard t.isContiguous else {
            throw SpargeError.invalidArgument("download: a strided device tensor \(t.shape) (strides \(t.strides))")
        }
        let bytes = t.shape.reduce(1, *) * t.element.byteSize
        let host = TensorBuffer(byteCount: bytes)
        try makeCurrent()
        try synchronize()
        try stagedTransfer().download(from: buffer, into: host.base, count: bytes)
        return try Tensor(buffer: host, element: t.element, shape: t.shape)
    }

    /// The device memory of `t` from its first element on, borrowed (it stays the caller's).
    ///
    /// - Throws: `SpargeError.invalidArgument` when `t` is not on this device.
    func deviceBuffer(of t: Tensor, label: String) throws -> DeviceBuffer {
        guard t.place == place else {
            throw SpargeError.invalidArgument("\(label): a tensor on \(t.place) for the device \(place)")
        }
        let start = t.offset * t.element.byteSize
        return DeviceBuffer(device: self, borrowing: UInt64(UInt(bitPattern: t.buffer.base)) + UInt64(start),
                            bytes: t.buffer.byteCount - start, owner: t.buffer)
    }
}

extension DeviceBuffer {
    /// This buffer as a packed tensor of `element` and `shape`; the tensor keeps the buffer alive.
    func tensor(_ element: StorageFormat, shape: [Int]) throws -> Tensor {
        let buffer = TensorBuffer(borrowing: UnsafeMutableRawPointer(bitPattern: UInt(address))!, byteCount: bytes,
                                  place: device.place, owner: self)
        return try Tensor(buffer: buffer, element: element, shape: shape)
    }
}
