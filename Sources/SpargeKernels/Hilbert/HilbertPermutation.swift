/// The token order of a T×H×W grid along a generalized 3-D Hilbert curve (DESIGN.md §1, non-causal only).
///
/// Tokens are numbered row-major, `index = (t·H + y)·W + x`. Reordering Q, K and V by ``order`` and
/// undoing it on the output gives the same attention (`Attn(PQ, PK, PV) = P·Attn(Q, K, V)`) while
/// neighbouring tokens of the grid fall into the same blocks, which raises block self-similarity.
/// See ``HilbertCurve`` for the construction and what it guarantees about steps.
public struct HilbertPermutation: Sendable, Equatable {
    public let frames: Int
    public let height: Int
    public let width: Int
    /// `order[new position] = old token index`.
    public let order: [Int]

    /// The curve over a `frames × height × width` grid (any positive sides).
    public init(frames: Int, height: Int, width: Int) {
        precondition(frames > 0 && height > 0 && width > 0, "HilbertPermutation: empty grid \(frames)×\(height)×\(width)")
        self.frames = frames
        self.height = height
        self.width = width
        order = HilbertCurve.cells(sides: SIMD3(frames, height, width)).map { ($0[0] * height + $0[1]) * width + $0[2] }
    }

    /// `old position → new position` (the inverse permutation).
    public var inverse: [Int] {
        var inv = [Int](repeating: 0, count: order.count)
        for (new, old) in order.enumerated() { inv[old] = new }
        return inv
    }

    /// Rows reordered along the curve: row `i` of the result is row `order[i]` of `x` (every head).
    public func apply(_ x: Tensor3) -> Tensor3 { permuteRows(x, inverse: false) }

    /// The inverse of ``apply(_:)``: row `order[i]` of the result is row `i` of `x`.
    public func undo(_ x: Tensor3) -> Tensor3 { permuteRows(x, inverse: true) }

    private func permuteRows(_ x: Tensor3, inverse: Bool) -> Tensor3 {
        precondition(x.rows == order.count, "HilbertPermutation: \(x.rows) rows for a grid of \(order.count)")
        var out = x
        let (d, n) = (x.dim, x.rows)
        out.data.withUnsafeMutableBufferPointer { ob in
            x.data.withUnsafeBufferPointer { xb in
                for h in 0..<x.heads {
                    for (new, old) in order.enumerated() {
                        let (src, dst) = inverse ? (new, old) : (old, new)
                        (ob.baseAddress! + (h * n + dst) * d).update(from: xb.baseAddress! + (h * n + src) * d, count: d)
                    }
                }
            }
        }
        return out
    }
}
