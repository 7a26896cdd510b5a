import SpargeKernels

/// Tensors entering a device for a resident pass: uploaded once when they are on the host, then converted
/// on the device to the packed types the pass keeps — or used in place when they already are packed in
/// them; and the output leaving into a caller's device tensor.
struct TensorEntry {
    let device: CUDADevice
    /// Where `convert` enqueues (nil: the main stream).
    var stream: UnsafeMutableRawPointer? = nil

    /// `t` on this device: itself when it is there, else one packed upload in its own element type.
    ///
    /// - Throws: `SpargeError.invalidArgument` naming `name` when `t` is on another device.
    func onDevice(_ t: Tensor, _ name: String) throws -> Tensor {
        if t.place == .host { return try device.upload(t) }
        guard t.place == device.place else {
            throw SpargeError.invalidArgument("\(name) \(t.shape) is on \(t.place); the engine runs on \(device.place)")
        }
        return t
    }

    /// `t` (`[H, rows, D]` on this device, any element type and strides) packed in `format`: `t`'s own
    /// memory when it already is. With `range`, a stored value that is finite and beyond fp16's range sets it.
    ///
    /// - Throws: `SpargeError.invalidArgument` naming `name` when a value does not fit f16.
    func packed(_ t: Tensor, as format: StorageFormat, _ name: String, range: DeviceBuffer? = nil) throws -> DeviceBuffer {
        let source = try device.deviceBuffer(of: t, label: name)
        let count = t.shape.reduce(1, *)
        if t.isContiguous && t.element == format {
            if let range { try markBeyondHalf(source, count: count, format: format, into: range) }
            return source
        }
        let out = try DeviceBuffer(device: device, bytes: count * format.byteSize, label: "\(name) as \(format.rawValue)")
        guard count > 0 else { return out }
        let flag = try DeviceBuffer(device: device, bytes: 4, zeroed: true, label: "overflow flag")
        if t.isContiguous {
            try convert(source, from: t.element, count: count, into: out, as: format, overflow: flag, range: range)
        } else {
            try device.launch(device.residentKernel("sparge_enter"), grid: (count + 255) / 256, block: 256, [
                .pointer(source.address), .int(ResidentKernelSource.code(of: t.element)), .int64(Int64(t.strides[0])),
                .int64(Int64(t.strides[1])), .int64(Int64(t.strides[2])), .int(Int32(t.shape[0])), .int(Int32(t.shape[1])),
                .int(Int32(t.shape[2])), .pointer(out.address), .int(ResidentKernelSource.code(of: format)),
                .pointer(flag.address),
            ])
            if let range { try markBeyondHalf(out, count: count, format: format, into: range) }
        }
        if format == .f16, try raised(flag) {
            throw SpargeError.invalidArgument("\(name) \(t.shape) holds a value beyond the range of f16 (±65504)")
        }
        return out
    }

    /// Enqueues `count` packed values of `source` (in `from`) converted into `destination` (in `to`), rounded
    /// to nearest even: `overflow` is set when a finite value leaves fp16's range (`to` fp16: it is ±∞ there),
    /// `range`, where given, when a stored value is finite and beyond fp16's range.
    func convert(_ source: DeviceBuffer, from: StorageFormat, count: Int, into destination: DeviceBuffer,
                 as to: StorageFormat, overflow: DeviceBuffer, range: DeviceBuffer? = nil) throws {
        guard count > 0 else { return }
        try device.launch(device.residentKernel("sparge_enter_packed"), grid: ((count + 3) / 4 + 255) / 256, block: 256,
                          on: stream, [
            .pointer(source.address), .int(ResidentKernelSource.code(of: from)), .int64(Int64(count)),
            .pointer(destination.address), .int(ResidentKernelSource.code(of: to)), .pointer(overflow.address),
            .pointer(range?.address ?? 0),
        ])
    }

    /// Writes `source` (packed f32 on this device) into `destination` (the same shape on this device, any
    /// element type and strides), rounding to nearest even.
    func write(_ source: Tensor, into destination: Tensor) throws {
        guard source.element == .f32, source.isContiguous, source.shape == destination.shape, source.shape.count == 3 else {
            throw SpargeError.invalidArgument("a \(source.element.rawValue) tensor \(source.shape) written into "
                + "\(destination.element.rawValue) \(destination.shape): expected packed f32 of the same [H, rows, D] shape")
        }
        let (from, to) = (try device.deviceBuffer(of: source, label: "output"), try device.deviceBuffer(of: destination, label: "out"))
        let count = source.shape.reduce(1, *)
        guard count > 0 else { return }
        let flag = try DeviceBuffer(device: device, bytes: 4, zeroed: true, label: "overflow flag")
        try device.launch(device.residentKernel("sparge_leave"), grid: (count + 255) / 256, block: 256, [
            .pointer(from.address), .int(Int32(source.shape[0])), .int(Int32(source.shape[1])), .int(Int32(source.shape[2])),
            .pointer(to.address), .int(ResidentKernelSource.code(of: destination.element)),
            .int64(Int64(destination.strides[0])), .int64(Int64(destination.strides[1])), .int64(Int64(destination.strides[2])),
            .pointer(flag.address),
        ])
        try device.synchronize()
    }

    /// Sets `flag` when one of `count` values of `buffer` (in `format`) is finite and beyond fp16's range.
    private func markBeyondHalf(_ buffer: DeviceBuffer, count: Int, format: StorageFormat, into flag: DeviceBuffer) throws {
        guard format != .f16 && count > 0 else { return }
        try device.launch(device.residentKernel("sparge_exceeds_half"), grid: (count + 255) / 256, block: 256, [
            .pointer(buffer.address), .int(ResidentKernelSource.code(of: format)), .int64(Int64(count)),
            .pointer(flag.address),
        ])
    }

    /// Whether a kernel set `flag` (waits for the device).
    func raised(_ flag: DeviceBuffer) throws -> Bool {
        try device.synchronize()
        var value: Int32 = 0
        try withUnsafeMutableBytes(of: &value) { try flag.download(into: $0.baseAddress!, count: 4) }
        return value != 0
    }
}
