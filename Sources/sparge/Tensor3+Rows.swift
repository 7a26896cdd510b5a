import SpargeRing

extension Tensor3 {
    /// The rows of `ranges`, concatenated, of every head.
    func rows(_ ranges: [Range<Int>]) -> Tensor3 {
        let count = ranges.reduce(0) { $0 + $1.count }
        var out = Tensor3(heads: heads, rows: count, dim: dim)
        for h in 0..<heads {
            var at = 0
            for r in ranges {
                let src = offset(head: h, row: r.lowerBound)
                let dst = out.offset(head: h, row: at)
                out.data.replaceSubrange(dst..<(dst + r.count * dim), with: data[src..<(src + r.count * dim)])
                at += r.count
            }
        }
        return out
    }
}
