/// A generalized 3-D Hilbert curve over a box of any side lengths (not only powers of two).
///
/// Construction (recursive, every sub-box traversed the same way): a box is given by a corner `p` and three
/// axis-aligned edge vectors `a` (major), `b`, `c`. The curve starts at `p` and ends at `p + a − unit(a)`,
/// the corner one major edge away. A box is
/// - a line when `b` and `c` have length 1;
/// - cut across `a` into two halves when it is long (`2|a| > 3·max(|b|, |c|)`): first half, then second;
/// - otherwise cut into a "U" in the plane of `a` and `e`, the longer of `b`, `c` (with `f` the other):
///   the near half of `e` over the first half of `a` (major `e/2`), the far part of `e` over all of `a`
///   (major `a`), then the near half of `e` over the second half of `a`, back towards the end corner.
///   Consecutive parts meet at neighbouring cells by the invariant above.
/// Halves are rounded to even lengths where the side allows it, because a box whose major side is even
/// always has a unit-step path between those two corners (the grid is bipartite: the corners have opposite
/// colours exactly when the major side is even).
///
/// Guarantee: the order is always a permutation of the cells. Every step moves to a face neighbour
/// (Manhattan distance 1) on every box tested — all boxes with sides 1…16, odd sides included, and the larger
/// shapes of the tests; the parity argument above is why, but only the tested range is promised. The one
/// branch that could jump (a major side of 1 under a larger face) is not reached on those boxes.
enum HilbertCurve {
    typealias Vec = SIMD3<Int>

    /// The cells of the box `sides` in curve order.
    static func cells(sides: Vec) -> [Vec] {
        var out: [Vec] = []
        out.reserveCapacity(sides[0] * sides[1] * sides[2])
        guard sides[0] > 0 && sides[1] > 0 && sides[2] > 0 else { return out }
        // Major axis: the longest even side (so the guarantee holds), else the longest side.
        let axes = [0, 1, 2].sorted { sides[$0] > sides[$1] }
        let major = axes.first { sides[$0] % 2 == 0 } ?? axes[0]
        let others = axes.filter { $0 != major }
        func edge(_ axis: Int) -> Vec { var v = Vec(repeating: 0); v[axis] = sides[axis]; return v }
        walk(Vec(repeating: 0), edge(major), edge(others[0]), edge(others[1]), &out)
        return out
    }

    @inline(__always) static func length(_ v: Vec) -> Int { abs(v[0]) + abs(v[1]) + abs(v[2]) }
    @inline(__always) static func unit(_ v: Vec) -> Vec { Vec(v[0].signum(), v[1].signum(), v[2].signum()) }
    /// Half of an edge, rounded towards zero.
    @inline(__always) static func half(_ v: Vec) -> Vec { Vec(v[0] / 2, v[1] / 2, v[2] / 2) }

    static func walk(_ p: Vec, _ a: Vec, _ b: Vec, _ c: Vec, _ out: inout [Vec]) {
        let (w, h, d) = (length(a), length(b), length(c))
        let (da, db, dc) = (unit(a), unit(b), unit(c))
        if h == 1 && d == 1 {
            for i in 0..<w { out.append(p &+ i &* da) }
            return
        }
        if w == 1 {
            // A major side of 1 cannot end where it started: snake through the b×c face (the one place a
            // jump to the next part can happen).
            for j in 0..<d {
                for i in 0..<h { out.append(p &+ j &* dc &+ (j % 2 == 0 ? i : h - 1 - i) &* db) }
            }
            return
        }
        if 2 * w > 3 * max(h, d) {
            var a2 = half(a)
            if length(a2) % 2 == 1 && w > 2 { a2 &+= da }
            walk(p, a2, b, c, &out)
            walk(p &+ a2, a &- a2, b, c, &out)
            return
        }
        let (e, f) = h >= d ? (b, c) : (c, b)
        let de = unit(e), df = unit(f)
        if w == 2 && length(e) == 2 {
            // 2×2×|f|: four columns along f, alternating up and down, around the 2×2 square.
            for (k, (i, j)) in [(0, 0), (0, 1), (1, 1), (1, 0)].enumerated() {
                for s in 0..<length(f) {
                    out.append(p &+ i &* da &+ j &* de &+ (k % 2 == 0 ? s : length(f) - 1 - s) &* df)
                }
            }
            return
        }
        let a2 = half(a)
        var e2 = half(e)
        if length(e2) % 2 == 1 && length(e) > 2 { e2 &+= de }
        walk(p, e2, f, a2, &out)
        walk(p &+ e2, a, e &- e2, f, &out)
        walk(p &+ (a &- da) &+ (e2 &- de), 0 &- e2, f, 0 &- (a &- a2), &out)
    }
}
