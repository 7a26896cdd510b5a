/// A float32 tensor of shape `[heads, rows, dim]`, contiguous, row-major (the `hnd` layout).
///
/// Q is `[Hq, N, D]`, K and V are `[Hkv, N, D]`; a rank's shard holds only its own rows.
public struct Tensor3: Sendable, Equatable {
    public let heads: Int
    public let rows: Int
    public let dim: Int
    public var data: [Float]

    /// A tensor filled with `value`.
    public init(heads: Int, rows: Int, dim: Int, repeating value: Float = 0) {
        precondition(heads >= 0 && rows >= 0 && dim >= 0, "negative tensor shape")
        self.heads = heads
        self.rows = rows
        self.dim = dim
        self.data = [Float](repeating: value, count: heads * rows * dim)
    }

    /// A tensor over `data`, which must hold exactly `heads · rows · dim` values.
    public init(heads: Int, rows: Int, dim: Int, data: [Float]) {
        precondition(data.count == heads * rows * dim,
                     "Tensor3: \(data.count) values for shape [\(heads), \(rows), \(dim)]")
        self.heads = heads
        self.rows = rows
        self.dim = dim
        self.data = data
    }

    /// The shape as `[heads, rows, dim]`.
    public var shape: [Int] { [heads, rows, dim] }

    /// Offset of element `(head, row, 0)` in `data`.
    @inlinable public func offset(head: Int, row: Int) -> Int { (head * rows + row) * dim }

    /// Element `(head, row, d)`.
    @inlinable public subscript(head: Int, row: Int, d: Int) -> Float {
        get { data[offset(head: head, row: row) + d] }
        set { data[offset(head: head, row: row) + d] = newValue }
    }
}

extension Tensor3 {
    /// This tensor with every value rounded to `format` and back: the values a computation on blocks
    /// stored in `format` sees.
    public func rounded(to format: StorageFormat) -> Tensor3 {
        var copy = self
        copy.data.withUnsafeMutableBufferPointer { if let base = $0.baseAddress { format.round(base, count: $0.count) } }
        return copy
    }
}

extension Tensor3 {
    /// Calls `body` with this tensor's values as a borrowed `[heads, rows, dim]` f32 `Tensor` (no copy),
    /// valid during the call.
    public func withBorrowedTensor<R>(_ body: (Tensor) throws -> R) throws -> R {
        try data.withUnsafeBufferPointer { values in
            let base = UnsafeMutableRawPointer(mutating: values.baseAddress ?? UnsafePointer(bitPattern: 64)!)
            let buffer = TensorBuffer(borrowing: base, byteCount: values.count * 4)
            return try body(try Tensor(buffer: buffer, element: .f32, shape: shape))
        }
    }
}

