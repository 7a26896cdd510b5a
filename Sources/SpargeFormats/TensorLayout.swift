/// How a 3-D attention tensor is laid out in a file.
public enum TensorLayout: String, Sendable, CaseIterable {
    /// `[heads, seqLen, headDim]`: one head's rows are contiguous (SpargeRing's own order, the default).
    case hnd
    /// `[seqLen, heads, headDim]`: one position's heads are contiguous (what many models keep before the
    /// head transpose).
    case nhd

    /// The file shape of a tensor of `shape` in this layout.
    public func fileShape(_ shape: TensorShape) -> [Int] {
        switch self {
        case .hnd: [shape.heads, shape.seqLen, shape.headDim]
        case .nhd: [shape.seqLen, shape.heads, shape.headDim]
        }
    }

    /// The logical shape of a 3-D file shape in this layout; a shape of another rank reads as
    /// `[H=0, N=0, D=0]` (callers check the rank first, as `TensorSource` does).
    public func logicalShape(_ fileShape: [Int]) -> TensorShape {
        guard fileShape.count == 3 else { return TensorShape(heads: 0, seqLen: 0, headDim: 0) }
        switch self {
        case .hnd: return TensorShape(heads: fileShape[0], seqLen: fileShape[1], headDim: fileShape[2])
        case .nhd: return TensorShape(heads: fileShape[1], seqLen: fileShape[0], headDim: fileShape[2])
        }
    }
}

/// The logical shape of an attention tensor, whatever its layout in the file.
public struct TensorShape: Sendable, Equatable, Hashable, CustomStringConvertible {
    public var heads: Int
    public var seqLen: Int
    public var headDim: Int

    public init(heads: Int, seqLen: Int, headDim: Int) {
        self.heads = heads
        self.seqLen = seqLen
        self.headDim = headDim
    }

    /// Number of elements.
    public var elementCount: Int { heads * seqLen * headDim }

    /// `[H, N, D]` with the names, e.g. `[H=4, N=1024, D=64]`.
    public var description: String { "[H=\(heads), N=\(seqLen), D=\(headDim)]" }
}
