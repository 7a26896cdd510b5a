import CSpargeKernels

extension AttentionTile {
    /// Computes one key block against the tile: scores, token-level causal mask, online-softmax update, the
    /// λ rule, and `P·V`.
    ///
    /// Edge cases: a block entirely above the causal diagonal for every row of the tile is skipped without
    /// counting as visited; rows whose keys are all masked so far keep `m = -inf, l = 0` and never produce
    /// NaN. The λ rule, where it runs (`SpargeConfig.lambdaActive`; off, every block computes): `Δ = max
    /// over the tile's rows of (rowmax(S) − m_prev)` in log2 units; `P·V` and the row sums are computed iff
    /// `Δ + pvThreshold > 0`. The first computed block always computes (`Δ` is `+inf` there). A skipped block
    /// leaves the state unchanged, which is exact up to the dropped mass: every row's block max is at least
    /// `pvThreshold` below its running max.
    ///
    /// - Parameters:
    ///   - keys: `keyCount × D` row-major rows of the K head that this query head uses.
    ///   - values: `keyCount × D` row-major rows of the matching V head.
    ///   - keyCount: `0...blockK` (a partial last block is allowed).
    ///   - keyStart: global token index of key row 0.
    ///   - upcoming: the block the caller visits next, brought towards the cache meanwhile (default none).
    /// - Returns: whether `P·V` was computed (false when skipped by λ or entirely masked).
    @discardableResult @_optimize(speed)
    public func visit(keys: UnsafePointer<Float>, values: UnsafePointer<Float>, keyCount: Int,
                      keyStart: Int, upcoming: UpcomingBlock? = nil) -> Bool {
        precondition(arena.products == .fp32, "AttentionTile: a tile of \(arena.products) products visits packed blocks")
        let d = arena.headDim, lanes = arena.lanes, stride = arena.rowStride, kernels = arena.kernels
        // Sᵀ[c][r] = Σ_i K[c][i] · Q̂ᵀ[i][r], and the row maxima of the block (vertical, in the kernel's
        // epilogue while the scores are still in registers).
        return visitBlock(keyCount: keyCount, keyStart: keyStart) {
            kernels.scores(queriesT, stride, lanes, keys, d, keyCount, scores, rowMax, upcoming?.keys,
                           upcoming?.values, upcoming?.bytes ?? 0)
        } products: {
            // m ← max(m, rowmax), α = 2^(m_prev − m), Pᵀ = 2^(Sᵀ − m), l ← α·l + Σ_c Pᵀ (OnlineSoftmax merge,
            // with the block's own weight folded into its exponentials); α replaces the row maxima.
            kernels.softmax(scores, stride, lanes, keyCount, rowMax, runningMax, runningSum)
            // Oᵀ[i][r] = α[r]·Oᵀ[i][r] + Σ_c V[c][i] · Pᵀ[c][r]
            kernels.pv(scores, stride, lanes, values, d, keyCount, rowMax, outputT)
        }
    }

    /// `visit` for a tile of an arena with int8 products: the same bookkeeping around
    /// `AttentionPrecision.int8`'s integer products, on a block quantized once for every tile that visits it.
    @discardableResult @_optimize(speed)
    public func visit(quantized block: QuantizedKeyValueBlock, keyStart: Int, upcoming: UpcomingBlock? = nil) -> Bool {
        precondition(arena.integerProducts && block.headDim == arena.headDim,
                     "AttentionTile: a quantized block for an int8 tile of the same D")
        let d = arena.headDim, lanes = arena.lanes, stride = arena.rowStride, kernels = arena.kernels
        let packedQueries = UnsafeRawPointer(queriesT).assumingMemoryBound(to: Int32.self)
        let packedP = UnsafeMutableRawPointer(scores).assumingMemoryBound(to: Int32.self)
        let keyCount = block.rows
        return visitBlock(keyCount: keyCount, keyStart: keyStart) {
            kernels.int8Scores(packedQueries, stride, lanes, laneScale, block.keys, block.pairs, keyCount,
                               block.keyScale, block.keyMean, scores, rowMax, upcoming?.keys, upcoming?.values,
                               upcoming?.bytes ?? 0)
        } products: {
            kernels.int8Softmax(scores, stride, lanes, keyCount, rowMax, runningMax, runningSum)
            kernels.int8PV(packedP, stride, lanes, block.values, d, keyCount, block.valueScale, rowMax, outputT)
        }
    }

    /// `visit` on bf16 matrix tiles (an arena with `bf16Tiles` products): the same bookkeeping around
    /// `AttentionPrecision.bf16`'s tile products, on blocks laid out once for every tile that visits them. The
    /// scores stay unscaled in Sᵀ (the queries are the bf16 values as given); the kernels scale them in fp32.
    /// Several blocks (`blocks.count ≤ arena.visitBlocks`) make one visit: their keys are the visit's, one after
    /// the other, and every block but the last must hold a multiple of 32 keys; the caller groups only blocks
    /// that no row of the tile sees partly (no causal cut inside them), and `keyStart` is the first block's.
    /// `ahead` (the next visit's blocks, if any) are asked for while it computes.
    @discardableResult @_optimize(speed)
    public func visit(bf16 blocks: UnsafeBufferPointer<Unmanaged<AnyObject>>, keyStart: Int,
                      ahead: UnsafeBufferPointer<Unmanaged<AnyObject>> = UnsafeBufferPointer(start: nil, count: 0)) -> Bool {
        precondition(arena.products == .bf16Tiles && blocks.count >= 1 && blocks.count <= arena.visitBlocks,
                     "AttentionTile: 1…\(arena.visitBlocks) bf16 blocks a visit for a bf16-tile tile")
        let d = arena.headDim, lanes = arena.lanes, stride = arena.rowStride, kernels = arena.bf16
        let scale = arena.queryScale
        let packedQueries = UnsafeRawPointer(queriesT).assumingMemoryBound(to: UInt32.self)
        let packedP = UnsafeRawPointer(scores).assumingMemoryBound(to: UInt32.self)
        let count = blocks.count, aheadCount = ahead.count
        return withUnsafeTemporaryAllocation(of: sparge_bf16_block.self, capacity: count + aheadCount) { operands in
            var keyCount = 0
            for (b, unmanaged) in blocks.enumerated() {
                let block = Self.bf16Operands(unmanaged, headDim: d)
                precondition(Int(block.keyCount) > 0 && (b == count - 1 || block.keyCount % 32 == 0),
                             "AttentionTile: bf16 blocks of keys, all but the last a multiple of 32")
                operands[b] = block
                keyCount += block.keyCount
            }
            for (b, unmanaged) in ahead.enumerated() { operands[count + b] = Self.bf16Operands(unmanaged, headDim: d) }
            let list = UnsafePointer(operands.baseAddress!), next = list + count
            let profiled = VisitProfile.enabled
            var times = (start: 0, scored: 0, normalized: 0)
            let visited = visitBlock(keyCount: keyCount, keyStart: keyStart, blocks: count, scoreScale: scale) {
                if profiled { times.start = VisitProfile.now() }
                kernels.scores(packedQueries, stride, lanes, list, count, d, scale, scores, rowMax, next, aheadCount)
                if profiled { times.scored = VisitProfile.now() }
            } products: {
                kernels.softmax(scores, stride, lanes, keyCount, scale, rowMax, runningMax, runningSum)
                if profiled { times.normalized = VisitProfile.now() }
                kernels.pv(packedP, stride, lanes, list, count, d, rowMax, outputT)
            }
            if profiled && visited {
                VisitProfile.add(keys: keyCount, start: times.start, scored: times.scored, normalized: times.normalized,
                                 end: VisitProfile.now())
            }
            return visited
        }
    }

    /// A `Bf16KeyValueBlock`'s operands as the kernels take them (uncounted: the caller holds the block), for
    /// head dimension `headDim`.
    @inline(__always)
    static func bf16Operands(_ unmanaged: Unmanaged<AnyObject>, headDim: Int) -> sparge_bf16_block {
        unmanaged._withUnsafeGuaranteedRef { object in
            let block = unsafeDowncast(object, to: Bf16KeyValueBlock.self)
            precondition(block.headDim == headDim, "AttentionTile: a bf16 block of D \(block.headDim) for a tile of D \(headDim)")
            return sparge_bf16_block(keys: block.keys, valuesT: block.valuesT, keyCount: block.rows)
        }
    }

    /// `visit(bf16:keyStart:ahead:)` of one block.
    @discardableResult
    public func visit(bf16 block: Bf16KeyValueBlock, keyStart: Int) -> Bool {
        withExtendedLifetime(block) {
            withUnsafeTemporaryAllocation(of: Unmanaged<AnyObject>.self, capacity: 1) { one in
                one[0] = Unmanaged.passUnretained(block as AnyObject)
                return visit(bf16: UnsafeBufferPointer(one), keyStart: keyStart)
            }
        }
    }

    /// `visit` for a tile whose products take blocks converted once per call (int8, bf16 tiles): `blocks` are
    /// of the arena's kind, uncounted (a driver's `PackedBlockTable` holds them), and are visited without
    /// counting a reference; more than one only where the arena groups them (`visitBlocks`). `ahead`: those of the
    /// next visit's blocks already converted, asked for meanwhile (int8 tiles ask for the first of them).
    @discardableResult @inline(__always)
    func visit(packed blocks: UnsafeBufferPointer<Unmanaged<AnyObject>>, keyStart: Int,
               ahead: UnsafeBufferPointer<Unmanaged<AnyObject>>) -> Bool {
        switch arena.products {
        case .int8:
            precondition(blocks.count == 1, "AttentionTile: int8 tiles visit one block at a time")
            let upcoming = ahead.first.map { next in
                next._withUnsafeGuaranteedRef { object in
                    let block = unsafeDowncast(object, to: QuantizedKeyValueBlock.self)
                    return UpcomingBlock(keys: block.keyOperands, values: block.valueOperands, bytes: block.operandBytes)
                }
            }
            return blocks[0]._withUnsafeGuaranteedRef { object in
                visit(quantized: unsafeDowncast(object, to: QuantizedKeyValueBlock.self), keyStart: keyStart,
                      upcoming: upcoming)
            }
        case .bf16Tiles: return visit(bf16: blocks, keyStart: keyStart, ahead: ahead)
        case .fp32: preconditionFailure("AttentionTile: an fp32 tile visits fp32 rows")
        }
    }

    /// The bookkeeping of a visit around its products: `scores` fills Sᵀ and the row maxima, `products`
    /// does the online-softmax update and P·V (unless the λ rule skips them). The row maxima are in the
    /// units of the running max: `scoreScale` times those of Sᵀ (1 unless Sᵀ holds unscaled scores). A visit
    /// of `blocks` key blocks counts each (the λ rule, which decides block by block, never sees a group).
    @inline(__always)
    func visitBlock(keyCount: Int, keyStart: Int, blocks: Int = 1, scoreScale: Float = 1,
                    scores computeScores: () -> Void, products: () -> Void) -> Bool {
        precondition(keyCount >= 0 && keyCount <= arena.blockK * blocks && (blocks == 1 || !arena.lambdaActive),
                     "AttentionTile: \(keyCount) keys in \(blocks) blocks of \(arena.blockK)")
        let rows = header[0], queryStart = header[1]
        guard keyCount > 0, rows > 0 else { return false }
        var diagonal = false
        if arena.causal {
            // Key c is masked for query r iff queryStart + r < keyStart + c.
            if keyStart > queryStart + rows - 1 { return false }
            diagonal = keyStart + keyCount - 1 > queryStart
        }
        let lanes = arena.lanes, stride = arena.rowStride
        let vectors = lanes / 16
        let negInf = Vec16(repeating: -.infinity)
        rowMax.update(repeating: -.infinity, count: lanes)
        computeScores()
        if diagonal {
            applyCausalMask(keyCount: keyCount, offset: keyStart - queryStart)
            for v in 0..<vectors {
                var mx = negInf
                var p = scores + v * 16
                for _ in 0..<keyCount {
                    let x = load16(p)
                    mx = mx.replacing(with: x, where: x .> mx)
                    p += stride
                }
                store16(mx * scoreScale, rowMax + v * 16)
            }
        }

        header[2] += blocks
        if arena.lambdaActive && header[3] > 0 && !(largestRise(rows: rows) + arena.pvThreshold > 0) {
            header[4] += 1
            return false
        }
        header[3] += blocks
        products()
        return true
    }

    /// Δ of the λ rule: the largest rise of a row's block maximum over its running maximum, over the rows that
    /// saw an unmasked key (`-inf` where none did). A row whose block maximum is −inf rises by −inf or NaN,
    /// which never wins a comparison, so no row needs a test. Scalar, as SIMD16 selects compiled for x86-64's
    /// SSE2 went lane by lane through the stack (2% of a dense pass, `perf record`); in four chains, as one
    /// chain waited on every comparison's latency (most of a visit's own time around its kernels).
    @inline(__always)
    func largestRise(rows: Int) -> Float {
        let (blockMax, running) = (UnsafePointer(rowMax), UnsafePointer(runningMax))
        var d = (-Float.infinity, -Float.infinity, -Float.infinity, -Float.infinity)
        var r = 0
        while r + 4 <= rows {
            let rise = (blockMax[r] - running[r], blockMax[r + 1] - running[r + 1], blockMax[r + 2] - running[r + 2],
                        blockMax[r + 3] - running[r + 3])
            if rise.0 > d.0 { d.0 = rise.0 }
            if rise.1 > d.1 { d.1 = rise.1 }
            if rise.2 > d.2 { d.2 = rise.2 }
            if rise.3 > d.3 { d.3 = rise.3 }
            r += 4
        }
        while r < rows {
            let rise = blockMax[r] - running[r]
            if rise > d.0 { d.0 = rise }
            r += 1
        }
        return Swift.max(Swift.max(d.0, d.1), Swift.max(d.2, d.3))
    }

    /// Sets `Sᵀ[c][r] = -inf` where query `r` precedes key `c` (`r < c + offset`, offset = keyStart −
    /// queryStart).
    @inline(__always)
    func applyCausalMask(keyCount: Int, offset: Int) {
        let lanes = arena.lanes, stride = arena.rowStride
        let negInf = Vec16(repeating: -.infinity)
        let iota = SIMD16<Int32>(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
        for c in 0..<keyCount {
            let limit = c + offset
            if limit <= 0 { continue }
            let row = scores + c * stride
            for v in 0..<(lanes / 16) {
                let lane = iota &+ Int32(v * 16)
                let x = load16(row + v * 16)
                store16(x.replacing(with: negInf, where: lane .< Int32(Swift.min(limit, lanes))), row + v * 16)
            }
        }
    }
}
