import Dispatch

/// Where a tensor's elements live.
public enum TensorPlace: Sendable, Equatable, CustomStringConvertible {
    /// Host memory.
    case host
    /// Memory owned by a backend's device (`backend` names it, e.g. `cuda`; `ordinal` is the device).
    case device(backend: String, ordinal: Int)

    public var description: String {
        switch self {
        case .host: "host"
        case .device(let backend, let ordinal): "\(backend):\(ordinal)"
        }
    }
}

/// The bytes behind one or more tensors: allocated here, or borrowed from a caller (a NumPy array, a
/// PyTorch tensor, a device allocation), in which case `owner` keeps the caller's object alive and nothing
/// is freed here.
public final class TensorBuffer: @unchecked Sendable {
    /// The first byte.
    public let base: UnsafeMutableRawPointer
    /// Bytes from `base`.
    public let byteCount: Int
    /// Where the bytes are.
    public let place: TensorPlace
    private let owner: AnyObject?
    private let owned: Bool

    /// `byteCount` uninitialized host bytes, 64-byte aligned, freed with the buffer.
    public init(byteCount: Int) {
        base = .allocate(byteCount: max(1, byteCount), alignment: 64)
        self.byteCount = byteCount
        place = .host
        owner = nil
        owned = true
    }

    /// A caller's memory, borrowed: it must stay valid while `owner` (or, without one, the caller) lives.
    public init(borrowing base: UnsafeMutableRawPointer, byteCount: Int, place: TensorPlace = .host, owner: AnyObject? = nil) {
        self.base = base
        self.byteCount = byteCount
        self.place = place
        self.owner = owner
        owned = false
    }

    deinit { if owned { base.deallocate() } }
}

/// A typed, strided view of a buffer: an element type, a shape, strides (in elements) and an offset.
///
/// `[H, N, D]` and `[N, H, D]` of one buffer are two views (``permuted(_:)``), not two copies. The library's
/// entry points take tensors as the caller has them and convert once, where the data enters
/// (``hostFloats()``, ``packed(as:)``); nothing is converted per ring step.
public struct Tensor: Sendable {
    /// The bytes.
    public let buffer: TensorBuffer
    /// The element type.
    public let element: StorageFormat
    /// The extent of each axis.
    public let shape: [Int]
    /// Elements between neighbours along each axis (may be 0 for a broadcast axis; never negative).
    public let strides: [Int]
    /// Elements from the buffer's start to element `[0, 0, …]`.
    public let offset: Int

    /// A view of `buffer`.
    ///
    /// - Throws: `SpargeError.invalidArgument` when the shape or strides are negative, differ in length, or
    ///   reach past the buffer.
    public init(buffer: TensorBuffer, element: StorageFormat, shape: [Int], strides: [Int]? = nil, offset: Int = 0) throws {
        let strides = strides ?? Tensor.contiguousStrides(shape)
        guard strides.count == shape.count, shape.allSatisfy({ $0 >= 0 }), strides.allSatisfy({ $0 >= 0 }), offset >= 0 else {
            throw SpargeError.invalidArgument("tensor of shape \(shape), strides \(strides), offset \(offset): "
                + "extents and strides must be non-negative and as many")
        }
        if !shape.contains(0) {
            var last = offset
            for (n, s) in zip(shape, strides) {
                let (span, o1) = (n - 1).multipliedReportingOverflow(by: s)
                let (sum, o2) = last.addingReportingOverflow(span)
                guard !o1, !o2 else { throw SpargeError.invalidArgument("tensor of shape \(shape), strides \(strides): its extent overflows") }
                last = sum
            }
            let (bytes, o3) = (last + 1).multipliedReportingOverflow(by: element.byteSize)
            guard !o3, bytes <= buffer.byteCount else {
                throw SpargeError.invalidArgument("tensor of shape \(shape), strides \(strides), offset \(offset) "
                    + "(\(element.rawValue)) reaches past its buffer of \(buffer.byteCount) bytes")
            }
        }
        self.buffer = buffer
        self.element = element
        self.shape = shape
        self.strides = strides
        self.offset = offset
    }

    /// A contiguous host copy of `values` with shape `shape`.
    public init(_ values: [Float], shape: [Int]) throws {
        guard shape.reduce(1, *) == values.count else {
            throw SpargeError.invalidArgument("\(values.count) values for a tensor of shape \(shape)")
        }
        let buffer = TensorBuffer(byteCount: values.count * 4)
        values.withUnsafeBytes { if let b = $0.baseAddress { buffer.base.copyMemory(from: b, byteCount: $0.count) } }
        try self.init(buffer: buffer, element: .f32, shape: shape)
    }

    /// A host copy of `t` as `[heads, rows, dim]` f32.
    public init(_ t: Tensor3) {
        self = Tensor.converting(t, to: .f32).tensor
    }

    /// `t` as a packed `[heads, rows, dim]` host tensor of `format`, converted straight from its values on
    /// `HostParallelism.threads` threads (every core when unbound); `overflowed` says whether a finite value
    /// left the format's range (f16 beyond ±65504).
    public static func converting(_ t: Tensor3, to format: StorageFormat) -> (tensor: Tensor, overflowed: Bool) {
        let count = t.data.count, piece = 1 << 16
        let buffer = TensorBuffer(byteCount: count * format.byteSize)
        let pieces = (count + piece - 1) / piece
        let fits = UnsafeMutableBufferPointer<Bool>.allocate(capacity: max(1, pieces))
        defer { fits.deallocate() }
        fits.initialize(repeating: true)
        t.data.withUnsafeBufferPointer { source in
            HostParallelism.forEach(pieces) { c in
                let at = c * piece
                fits[c] = format.convert(source.baseAddress! + at, count: min(piece, count - at),
                                         to: buffer.base + at * format.byteSize)
            }
        }
        // The shape always fits its own values.
        return (try! Tensor(buffer: buffer, element: format, shape: t.shape), !fits.allSatisfy { $0 })
    }

    /// Row-major strides of `shape`.
    public static func contiguousStrides(_ shape: [Int]) -> [Int] {
        var strides = [Int](repeating: 1, count: shape.count)
        for i in stride(from: shape.count - 2, through: 0, by: -1) { strides[i] = strides[i + 1] * shape[i + 1] }
        return strides
    }

    /// The same elements with the axes in the order `axes` (`permuted([1, 0, 2])` turns `[N, H, D]` into
    /// `[H, N, D]`): a view, no copy.
    public func permuted(_ axes: [Int]) throws -> Tensor {
        guard axes.sorted() == Array(shape.indices) else {
            throw SpargeError.invalidArgument("axes \(axes) are not a permutation of a \(shape.count)-axis tensor's")
        }
        return try Tensor(buffer: buffer, element: element, shape: axes.map { shape[$0] },
                          strides: axes.map { strides[$0] }, offset: offset)
    }

    /// Whether the elements are row-major and gap-free (a plain `[H, N, D]` array, say).
    public var isContiguous: Bool { shape.contains(0) || strides == Tensor.contiguousStrides(shape) }

    /// Where the elements are.
    public var place: TensorPlace { buffer.place }

    /// This `[heads, rows, dim]` host tensor as packed f32 (the CPU kernels' and the summaries' input):
    /// converted once, on `HostParallelism.threads` threads (every core when unbound), whatever the element
    /// type and strides.
    ///
    /// - Throws: `SpargeError.invalidArgument` for a tensor that is not 3-D or not in host memory.
    public func hostFloats() throws -> Tensor3 {
        var storage: [Float] = []
        return try hostFloats(reusing: &storage)
    }

    /// `hostFloats()` written into `storage` where it holds as many values, so that a caller converting
    /// tensors of one shape call after call reuses one array and its pages, faulted in once; else into a new
    /// array, left in `storage`. The result shares `storage`'s array. (Where something else still holds that
    /// array, it is copied first, on this thread: keep `storage` the only holder between calls.)
    public func hostFloats(reusing storage: inout [Float]) throws -> Tensor3 {
        try checkHost3D()
        let (h, n, d) = (shape[0], shape[1], shape[2])
        if storage.count != h * n * d {
            // Left uninitialised (Floats have no invariants to break): the conversion below writes every
            // value, and its threads take the new pages' faults (a fill on this thread took them one by one).
            storage = [Float](unsafeUninitializedCapacity: h * n * d) { _, initialized in initialized = h * n * d }
        }
        storage.withUnsafeMutableBufferPointer { values in
            if let target = values.baseAddress {
                convertRows(heads: h, rows: n, dim: d, format: .f32, into: UnsafeMutableRawPointer(target))
            }
        }
        return Tensor3(heads: h, rows: n, dim: d, data: storage)
    }

    /// This `[heads, rows, dim]` host tensor in `format`, packed row-major: the tensor itself when it
    /// already is (no copy), else one converted copy.
    ///
    /// - Returns: the packed tensor and whether a finite value overflowed the format (f16 beyond ±65504).
    public func packed(as format: StorageFormat) throws -> (tensor: Tensor, overflowed: Bool) {
        try checkHost3D()
        if element == format && isContiguous { return (self, false) }
        let (h, n, d) = (shape[0], shape[1], shape[2])
        let buffer = TensorBuffer(byteCount: h * n * d * format.byteSize)
        let fits = convertRows(heads: h, rows: n, dim: d, format: format, into: buffer.base)
        return (try Tensor(buffer: buffer, element: format, shape: shape), !fits)
    }

    private func checkHost3D() throws {
        guard shape.count == 3 else {
            throw SpargeError.invalidArgument("a tensor of shape \(shape) where [heads, rows, dim] was expected")
        }
        guard place == .host else {
            throw SpargeError.invalidArgument("a tensor on \(place) where host memory was expected (device tensors "
                + "enter through the GPU pipeline)")
        }
    }

    /// Converts every row into packed `[heads, rows, dim]` of `format` at `target`; false when a finite
    /// value overflowed.
    @discardableResult
    private func convertRows(heads h: Int, rows n: Int, dim d: Int, format: StorageFormat,
                             into target: UnsafeMutableRawPointer) -> Bool {
        guard h > 0, n > 0, d > 0 else { return true }
        let (sh, sn, sd) = (strides[0], strides[1], strides[2])
        let source = UnsafeRawPointer(buffer.base), size = element.byteSize, out = format.byteSize
        let chunk = 256
        let chunks = (n + chunk - 1) / chunk
        let overflow = UnsafeMutableBufferPointer<Bool>.allocate(capacity: h * chunks)
        overflow.initialize(repeating: false)
        defer { overflow.deallocate() }
        let element = self.element, offset = self.offset
        HostParallelism.forEach(h * chunks) { item in
            let head = item / chunks, first = (item % chunks) * chunk
            let row = UnsafeMutablePointer<Float>.allocate(capacity: d)
            defer { row.deallocate() }
            for r in first..<min(n, first + chunk) {
                let at = offset + head * sh + r * sn, rowTarget = target + ((head * n + r) * d) * out
                // Into f32 the widened values are the output: written in place, not copied a second time.
                let widened = format == .f32 ? rowTarget.assumingMemoryBound(to: Float.self) : row
                if sd == 1 {
                    element.widen(source + at * size, count: d, to: widened)
                } else {
                    for i in 0..<d { element.widen(source + (at + i * sd) * size, count: 1, to: widened + i) }
                }
                if format != .f32 && !format.convert(row, count: d, to: rowTarget) { overflow[item] = true }
            }
        }
        return !overflow.contains(true)
    }
}
