extension AttentionTile {
    /// Computes one key block against the tile: scores, token-level causal mask, online-softmax update, the
    /// λ rule, and `P·V`.
    ///
    /// Edge cases: a block entirely above the causal diagonal for every row of the tile is skipped without
    /// counting as visited; rows whose keys are all masked so far keep `m = -inf, l = 0` and never produce
    /// NaN. The λ rule: `Δ = max over the tile's rows of (rowmax(S) − m_prev)` in log2 units; `P·V` and the
    /// row sums are computed iff `Δ + pvThreshold > 0`. The first computed block always computes (`Δ` is
    /// `+inf` there). A skipped block leaves the state unchanged, which is exact up to the dropped mass:
    /// every row's block max is at least `pvThreshold` below its running max.
    ///
    /// - Parameters:
    ///   - keys: `keyCount × D` row-major rows of the K head that this query head uses.
    ///   - values: `keyCount × D` row-major rows of the matching V head.
    ///   - keyCount: `0...blockK` (a partial last block is allowed).
    ///   - keyStart: global token index of key row 0.
    /// - Returns: whether `P·V` was computed (false when skipped by λ or entirely masked).
    @discardableResult @_optimize(speed)
    public func visit(keys: UnsafePointer<Float>, values: UnsafePointer<Float>, keyCount: Int,
                      keyStart: Int) -> Bool {
        precondition(keyCount >= 0 && keyCount <= arena.blockK,
                     "AttentionTile: \(keyCount) keys in a block of \(arena.blockK)")
        let rows = header[0], queryStart = header[1]
        guard keyCount > 0, rows > 0 else { return false }
        var diagonal = false
        if arena.causal {
            // Key c is masked for query r iff queryStart + r < keyStart + c.
            if keyStart > queryStart + rows - 1 { return false }
            diagonal = keyStart + keyCount - 1 > queryStart
        }
        let d = arena.headDim, lanes = arena.lanes
        let vectors = lanes / 16

        // Sᵀ[c][r] = Σ_i K[c][i] · Q̂ᵀ[i][r], and the row maxima of the block (vertical, in the kernels'
        // epilogue while the scores are still in registers).
        let negInf = Vec16(repeating: -.infinity)
        rowMax.update(repeating: -.infinity, count: lanes)
        let keyQuads = keyCount & ~3
        for g in stride(from: 0, to: lanes, by: 64) {
            var c = 0
            while c < keyQuads {
                scoresKernel4x64(queriesT + g, lanes: lanes, keys: keys + c * d, dim: d,
                                 out: scores + c * lanes + g, rowMax: rowMax + g)
                c += 4
            }
            while c < keyCount {
                scoresKernel1x64(queriesT + g, lanes: lanes, keys: keys + c * d, dim: d,
                                 out: scores + c * lanes + g, rowMax: rowMax + g)
                c += 1
            }
        }
        if diagonal {
            applyCausalMask(keyCount: keyCount, offset: keyStart - queryStart)
            for v in 0..<vectors {
                var mx = negInf
                var p = scores + v * 16
                for _ in 0..<keyCount {
                    let x = load16(p)
                    mx = mx.replacing(with: x, where: x .> mx)
                    p += lanes
                }
                store16(mx, rowMax + v * 16)
            }
        }

        // Δ over the valid rows for the λ rule.
        let iota = SIMD16<Int32>(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
        var delta = negInf
        for v in 0..<vectors {
            let mx = load16(rowMax + v * 16)
            var rise = mx - load16(runningMax + v * 16)
            rise = rise.replacing(with: negInf, where: mx .== negInf)
            rise = rise.replacing(with: negInf, where: (iota &+ Int32(v * 16)) .>= Int32(rows))
            delta = delta.replacing(with: rise, where: rise .> delta)
        }
        header[2] += 1
        if header[3] > 0 && !(delta.max() + arena.pvThreshold > 0) {
            header[4] += 1
            return false
        }
        header[3] += 1

        // m ← max(m, rowmax), α = 2^(m_prev − m), Pᵀ = 2^(Sᵀ − m), l ← α·l + Σ_c Pᵀ (OnlineSoftmax merge,
        // with the block's own weight folded into its exponentials).
        for v in 0..<vectors {
            let mPrev = load16(runningMax + v * 16)
            let w = OnlineSoftmax.mergeWeights(mPrev, load16(rowMax + v * 16))
            let shift = w.m.replacing(with: 0, where: w.m .== negInf)
            store16(w.m, runningMax + v * 16)
            store16(w.alpha, rowMax + v * 16)
            var sum = Vec16()
            var p = scores + v * 16
            for _ in 0..<keyCount {
                let e = exp2Vector(load16(p) - shift)
                store16(e, p)
                sum += e
                p += lanes
            }
            store16(sum.addingProduct(load16(runningSum + v * 16), w.alpha), runningSum + v * 16)
        }

        // Oᵀ[i][r] = α[r]·Oᵀ[i][r] + Σ_c V[c][i] · Pᵀ[c][r]
        let dimQuads = d & ~3
        for g in stride(from: 0, to: lanes, by: 64) {
            var i = 0
            while i < dimQuads {
                pvKernel4x64(scores + g, lanes: lanes, values: values + i, dim: d, keyCount: keyCount,
                             alpha: rowMax + g, out: outputT + i * lanes + g)
                i += 4
            }
            while i < d {
                pvKernel1x64(scores + g, lanes: lanes, values: values + i, dim: d, keyCount: keyCount,
                             alpha: rowMax + g, out: outputT + i * lanes + g)
                i += 1
            }
        }
        return true
    }

    /// Sets `Sᵀ[c][r] = -inf` where query `r` precedes key `c` (`r < c + offset`, offset = keyStart −
    /// queryStart).
    @inline(__always)
    func applyCausalMask(keyCount: Int, offset: Int) {
        let lanes = arena.lanes
        let negInf = Vec16(repeating: -.infinity)
        let iota = SIMD16<Int32>(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
        for c in 0..<keyCount {
            let limit = c + offset
            if limit <= 0 { continue }
            let row = scores + c * lanes
            for v in 0..<(lanes / 16) {
                let lane = iota &+ Int32(v * 16)
                let x = load16(row + v * 16)
                store16(x.replacing(with: negInf, where: lane .< Int32(Swift.min(limit, lanes))), row + v * 16)
            }
        }
    }
}

// MARK: - Micro-kernels (64 query lanes = 4 vectors)

/// Scores of 4 keys against 64 query lanes: 16 accumulators, one pass over D.
@inline(__always) @_optimize(speed)
func scoresKernel4x64(_ q: UnsafeMutablePointer<Float>, lanes: Int, keys: UnsafePointer<Float>, dim: Int,
                      out: UnsafeMutablePointer<Float>, rowMax: UnsafeMutablePointer<Float>) {
    var a00 = Vec16(), a01 = Vec16(), a02 = Vec16(), a03 = Vec16()
    var a10 = Vec16(), a11 = Vec16(), a12 = Vec16(), a13 = Vec16()
    var a20 = Vec16(), a21 = Vec16(), a22 = Vec16(), a23 = Vec16()
    var a30 = Vec16(), a31 = Vec16(), a32 = Vec16(), a33 = Vec16()
    let k0 = keys, k1 = keys + dim, k2 = keys + 2 * dim, k3 = keys + 3 * dim
    var qp = q
    for i in 0..<dim {
        let q0 = load16(qp), q1 = load16(qp + 16), q2 = load16(qp + 32), q3 = load16(qp + 48)
        let b0 = Vec16(repeating: k0[i]), b1 = Vec16(repeating: k1[i])
        let b2 = Vec16(repeating: k2[i]), b3 = Vec16(repeating: k3[i])
        a00 = a00.addingProduct(q0, b0); a01 = a01.addingProduct(q1, b0)
        a02 = a02.addingProduct(q2, b0); a03 = a03.addingProduct(q3, b0)
        a10 = a10.addingProduct(q0, b1); a11 = a11.addingProduct(q1, b1)
        a12 = a12.addingProduct(q2, b1); a13 = a13.addingProduct(q3, b1)
        a20 = a20.addingProduct(q0, b2); a21 = a21.addingProduct(q1, b2)
        a22 = a22.addingProduct(q2, b2); a23 = a23.addingProduct(q3, b2)
        a30 = a30.addingProduct(q0, b3); a31 = a31.addingProduct(q1, b3)
        a32 = a32.addingProduct(q2, b3); a33 = a33.addingProduct(q3, b3)
        qp += lanes
    }
    let o0 = out, o1 = out + lanes, o2 = out + 2 * lanes, o3 = out + 3 * lanes
    store16(a00, o0); store16(a01, o0 + 16); store16(a02, o0 + 32); store16(a03, o0 + 48)
    store16(a10, o1); store16(a11, o1 + 16); store16(a12, o1 + 32); store16(a13, o1 + 48)
    store16(a20, o2); store16(a21, o2 + 16); store16(a22, o2 + 32); store16(a23, o2 + 48)
    store16(a30, o3); store16(a31, o3 + 16); store16(a32, o3 + 32); store16(a33, o3 + 48)
    store16(max4(load16(rowMax), a00, a10, a20, a30), rowMax)
    store16(max4(load16(rowMax + 16), a01, a11, a21, a31), rowMax + 16)
    store16(max4(load16(rowMax + 32), a02, a12, a22, a32), rowMax + 32)
    store16(max4(load16(rowMax + 48), a03, a13, a23, a33), rowMax + 48)
}

@inline(__always) @_optimize(speed)
func max2(_ a: Vec16, _ b: Vec16) -> Vec16 { a.replacing(with: b, where: b .> a) }

@inline(__always) @_optimize(speed)
func max4(_ m: Vec16, _ a: Vec16, _ b: Vec16, _ c: Vec16, _ d: Vec16) -> Vec16 {
    max2(max2(m, max2(a, b)), max2(c, d))
}

/// Scores of 1 key against 64 query lanes (the tail of a block whose key count is not a multiple of 4).
@inline(__always) @_optimize(speed)
func scoresKernel1x64(_ q: UnsafeMutablePointer<Float>, lanes: Int, keys: UnsafePointer<Float>, dim: Int,
                      out: UnsafeMutablePointer<Float>, rowMax: UnsafeMutablePointer<Float>) {
    var a0 = Vec16(), a1 = Vec16(), a2 = Vec16(), a3 = Vec16()
    var qp = q
    for i in 0..<dim {
        let b = Vec16(repeating: keys[i])
        a0 = a0.addingProduct(load16(qp), b); a1 = a1.addingProduct(load16(qp + 16), b)
        a2 = a2.addingProduct(load16(qp + 32), b); a3 = a3.addingProduct(load16(qp + 48), b)
        qp += lanes
    }
    store16(a0, out); store16(a1, out + 16); store16(a2, out + 32); store16(a3, out + 48)
    store16(max2(load16(rowMax), a0), rowMax); store16(max2(load16(rowMax + 16), a1), rowMax + 16)
    store16(max2(load16(rowMax + 32), a2), rowMax + 32); store16(max2(load16(rowMax + 48), a3), rowMax + 48)
}

/// `Oᵀ[i..<i+4][64 lanes] = α·Oᵀ + Σ_c V[c][i..<i+4] · Pᵀ[c]`: 16 accumulators, the rescale fused into the
/// load.
@inline(__always) @_optimize(speed)
func pvKernel4x64(_ p: UnsafeMutablePointer<Float>, lanes: Int, values: UnsafePointer<Float>, dim: Int,
                  keyCount: Int, alpha: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>) {
    let s0 = load16(alpha), s1 = load16(alpha + 16), s2 = load16(alpha + 32), s3 = load16(alpha + 48)
    let o0 = out, o1 = out + lanes, o2 = out + 2 * lanes, o3 = out + 3 * lanes
    var a00 = load16(o0) * s0, a01 = load16(o0 + 16) * s1, a02 = load16(o0 + 32) * s2, a03 = load16(o0 + 48) * s3
    var a10 = load16(o1) * s0, a11 = load16(o1 + 16) * s1, a12 = load16(o1 + 32) * s2, a13 = load16(o1 + 48) * s3
    var a20 = load16(o2) * s0, a21 = load16(o2 + 16) * s1, a22 = load16(o2 + 32) * s2, a23 = load16(o2 + 48) * s3
    var a30 = load16(o3) * s0, a31 = load16(o3 + 16) * s1, a32 = load16(o3 + 32) * s2, a33 = load16(o3 + 48) * s3
    var pp = p
    var vp = values
    for _ in 0..<keyCount {
        let p0 = load16(pp), p1 = load16(pp + 16), p2 = load16(pp + 32), p3 = load16(pp + 48)
        let b0 = Vec16(repeating: vp[0]), b1 = Vec16(repeating: vp[1])
        let b2 = Vec16(repeating: vp[2]), b3 = Vec16(repeating: vp[3])
        a00 = a00.addingProduct(p0, b0); a01 = a01.addingProduct(p1, b0)
        a02 = a02.addingProduct(p2, b0); a03 = a03.addingProduct(p3, b0)
        a10 = a10.addingProduct(p0, b1); a11 = a11.addingProduct(p1, b1)
        a12 = a12.addingProduct(p2, b1); a13 = a13.addingProduct(p3, b1)
        a20 = a20.addingProduct(p0, b2); a21 = a21.addingProduct(p1, b2)
        a22 = a22.addingProduct(p2, b2); a23 = a23.addingProduct(p3, b2)
        a30 = a30.addingProduct(p0, b3); a31 = a31.addingProduct(p1, b3)
        a32 = a32.addingProduct(p2, b3); a33 = a33.addingProduct(p3, b3)
        pp += lanes
        vp += dim
    }
    store16(a00, o0); store16(a01, o0 + 16); store16(a02, o0 + 32); store16(a03, o0 + 48)
    store16(a10, o1); store16(a11, o1 + 16); store16(a12, o1 + 32); store16(a13, o1 + 48)
    store16(a20, o2); store16(a21, o2 + 16); store16(a22, o2 + 32); store16(a23, o2 + 48)
    store16(a30, o3); store16(a31, o3 + 16); store16(a32, o3 + 32); store16(a33, o3 + 48)
}

/// One output dimension of `pvKernel4x64` (the tail when D is not a multiple of 4).
@inline(__always) @_optimize(speed)
func pvKernel1x64(_ p: UnsafeMutablePointer<Float>, lanes: Int, values: UnsafePointer<Float>, dim: Int,
                  keyCount: Int, alpha: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>) {
    var a0 = load16(out) * load16(alpha), a1 = load16(out + 16) * load16(alpha + 16)
    var a2 = load16(out + 32) * load16(alpha + 32), a3 = load16(out + 48) * load16(alpha + 48)
    var pp = p
    var vp = values
    for _ in 0..<keyCount {
        let b = Vec16(repeating: vp[0])
        a0 = a0.addingProduct(load16(pp), b); a1 = a1.addingProduct(load16(pp + 16), b)
        a2 = a2.addingProduct(load16(pp + 32), b); a3 = a3.addingProduct(load16(pp + 48), b)
        pp += lanes
        vp += dim
    }
    store16(a0, out); store16(a1, out + 16); store16(a2, out + 32); store16(a3, out + 48)
}
