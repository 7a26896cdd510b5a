import CSpargeKernels
import Dispatch

/// SpargeAttn's block-mask prediction (DESIGN.md §1, steps 1–6), split into the pieces a distributed run
/// calls separately: ``KeyMean``, ``BlockSummaries``, then ``predictRows(querySummaries:queryBlocks:keySummaries:config:headDim:queryHeads:kvHeads:seqLen:)``
/// on each rank for its own query blocks. ``predict(q:k:config:)`` composes them for one process.
///
/// How each step matches the reference (`shared/tools/sparge_oracle.py`):
/// - Scores `Ŝ_ij = Float(q̄_i · k̄_j) · Float(1/sqrt(D))`: the dot product in Double rounded once to Float
///   (the correctly rounded float32 dot, which a float32 GEMM approximates), times the float32 scale.
/// - Row softmax in Float: `exp(s − max)` (``PortableExp``, so that a GPU gives the same bits), their Float
///   sum in ascending key order, times the reciprocal of the sum.
/// - Sort descending with ties in ascending key order (a stable sort), cumulative sum accumulated in Double
///   and rounded to Float at every step (PyTorch's CPU `cumsum` accumulates float32 in double), compared
///   `≤ Float(τ)`.
/// - TopK keeps `max(1, floor(topk · nk))` with `topk` read as the decimal it was written as.
///
/// Rows whose every score is −∞ (every key block of the row is not self-similar, or — causal — every key
/// block left of the block-causal boundary is not self-similar): the softmax would be 0/0. Such a row selects
/// nothing here; every block of it that may be on is forced on by the not-self-similar rule anyway, which is
/// what the reference ends with too (its NaN row selects one block that is already forced on or masked
/// off). So no NaN reaches the selection. Inputs are assumed finite.
public enum MaskPredictor {
    /// The mask rows of query blocks `queryBlocks` against all key blocks, for every query head.
    ///
    /// - Parameters:
    ///   - querySummaries: summaries of Q (`queryHeads` heads, `blockQ`), one row per entry of `queryBlocks`.
    ///   - queryBlocks: global indices of those query blocks (in the order of the summaries).
    ///   - keySummaries: summaries of the smoothed K (`kvHeads` heads, `blockK`) of all `nk` key blocks.
    ///   - headDim: `D`; the scores use `1/sqrt(D)` whatever `config.scale` says.
    ///   - seqLen: `N`, which fixes `nk = ceil(N / blockK)`.
    /// Query head `h` uses kv head `h / (queryHeads / kvHeads)`.
    public static func predictRows(
        querySummaries: BlockSummaries, queryBlocks: [Int], keySummaries: BlockSummaries,
        config: SpargeConfig, headDim: Int, queryHeads: Int, kvHeads: Int, seqLen: Int
    ) throws -> BlockMask {
        try checkRowArguments(querySummaries: querySummaries, queryBlocks: queryBlocks, keySummaries: keySummaries,
                          config: config, headDim: headDim, queryHeads: queryHeads, kvHeads: kvHeads, seqLen: seqLen)
        let nk = (seqLen + config.blockK - 1) / config.blockK
        let d = headDim
        let group = queryHeads / kvHeads
        let rowsPerHead = queryBlocks.count
        guard rowsPerHead > 0, nk > 0 else {
            return BlockMask(heads: queryHeads, keyBlocks: nk, queryBlocks: queryBlocks)
        }

        let scale = Float(1 / Double(d).squareRoot())
        // The queries' means in Double, converted once; the keys' are widened in the dot kernel as it reads them.
        let queriesDouble = doubles(querySummaries.means)
        PhaseTrace.mark("mask-doubles")
        // A work item scores `rowChunk` rows against the keys a tile at a time (see `scoreRows`), then
        // selects each row into a dense scratch row and keeps only the list of computed blocks, so memory
        // follows the computed blocks, not rows × nk.
        let rowChunk = 16
        let chunksPerHead = (rowsPerHead + rowChunk - 1) / rowChunk
        var pieces = [(rowCounts: [Int32], keys: [Int32])](repeating: ([], []), count: queryHeads * chunksPerHead)
        pieces.withUnsafeMutableBufferPointer { piecesBuf in
            keySummaries.means.withUnsafeBufferPointer { kb in
                queriesDouble.withUnsafeBufferPointer { qb in
                    keySummaries.flags.withUnsafeBufferPointer { kf in
                        querySummaries.flags.withUnsafeBufferPointer { qf in
                            let (piecesOut, kd, qd, kflags, qflags) =
                                (piecesBuf.baseAddress!, kb.baseAddress!, qb.baseAddress!, kf.baseAddress!, qf.baseAddress!)
                            HostParallelism.forEach(queryHeads * chunksPerHead) { item in
                                let h = item / chunksPerHead
                                let kvh = h / group
                                let scores = UnsafeMutablePointer<Float>.allocate(capacity: rowChunk * nk)
                                let order = UnsafeMutablePointer<UInt64>.allocate(capacity: 3 * nk)
                                let out = UnsafeMutablePointer<UInt8>.allocate(capacity: nk)
                                defer { scores.deallocate(); order.deallocate(); out.deallocate() }
                                var piece = (rowCounts: [Int32](), keys: [Int32]())
                                let r0 = (item % chunksPerHead) * rowChunk
                                let rows = r0..<min(rowsPerHead, r0 + rowChunk)
                                if config.selection != .dense {
                                    scoreRows(rows, queryBlocks: queryBlocks, queries: qd + h * rowsPerHead * d,
                                              keys: kd + kvh * nk * d, keyFlags: kflags + kvh * nk, keyBlocks: nk,
                                              headDim: d, scale: scale, config: config, into: scores)
                                }
                                for (k, row) in rows.enumerated() {
                                    out.update(repeating: 0, count: nk)
                                    selectRow(queryBlock: queryBlocks[row], scores: scores + k * nk,
                                              keyFlags: kflags + kvh * nk, querySelfSimilar: qflags[h * rowsPerHead + row] != 0,
                                              keyBlocks: nk, config: config, order: order, into: out)
                                    let before = piece.keys.count
                                    for j in 0..<nk where out[j] != 0 { piece.keys.append(Int32(j)) }
                                    piece.rowCounts.append(Int32(piece.keys.count - before))
                                }
                                piecesOut[item] = piece
                            }
                        }
                    }
                }
            }
        }
        PhaseTrace.mark("mask-rows")
        defer { PhaseTrace.mark("mask-join") }
        return BlockMask.joining(heads: queryHeads, keyBlocks: nk, queryBlocks: queryBlocks, pieces: pieces)
    }

    /// `x` widened to Double, on the pass's threads (one thread's copy of 6 MB of means took 1.5 ms of fresh
    /// pages on the 16-core Xeon). The query means go this way; the key means are widened by `dotDoubleRows`
    /// as it reads them.
    static func doubles(_ x: [Float]) -> [Double] {
        let piece = 1 << 15
        return [Double](unsafeUninitializedCapacity: x.count) { out, initialized in
            x.withUnsafeBufferPointer { source in
                HostParallelism.forEach((x.count + piece - 1) / piece) { c in
                    for i in (c * piece)..<min(x.count, (c + 1) * piece) {
                        (out.baseAddress! + i).initialize(to: Double(source[i]))
                    }
                }
            }
            initialized = x.count
        }
    }

    /// The compressed scores (DESIGN.md §1, step 4) of `rows` (indices into `queryBlocks`; the queries'
    /// means are `headDim` Doubles each from `queries`) against every key block, row `k` of the range into
    /// `scores + k·nk`; −∞ where a key block is not self-similar or past the row's causal limit.
    ///
    /// Key-tile outer, rows inner: a tile of key means (256 blocks, 128 KB of floats at D = 128) is read from memory
    /// once for all the rows instead of once per row. At 4M tokens a kv head's key means are 64 MiB, more
    /// than the L3, and scoring row by row streamed them from memory for every row (51 s of a 100 s pass on
    /// Zen 3). Each score is the same `dotDouble` as before (computed four keys at a time by
    /// `dotDoubleRows`), so the mask is bit for bit the same.
    static func scoreRows(
        _ rows: Range<Int>, queryBlocks: [Int], queries: UnsafePointer<Double>, keys kd: UnsafePointer<Float>,
        keyFlags: UnsafePointer<UInt8>, keyBlocks nk: Int, headDim d: Int, scale: Float, config: SpargeConfig,
        into scores: UnsafeMutablePointer<Float>
    ) {
        let tile = 256
        let limits = rows.map { row in
            config.causal
                ? blockCausalLimit(queryBlock: queryBlocks[row], blockQ: config.blockQ, blockK: config.blockK, keyBlocks: nk)
                : nk
        }
        withUnsafeTemporaryAllocation(of: Double.self, capacity: tile) { dots in
            let dot = dots.baseAddress!
            for t0 in stride(from: 0, to: nk, by: tile) {
                let t1 = min(nk, t0 + tile)
                for (k, row) in rows.enumerated() {
                    let q = queries + row * d, s = scores + k * nk, end = min(t1, limits[k])
                    // Each run of self-similar keys up to the causal limit at once (several side by side).
                    var j = t0
                    while j < end {
                        while j < end && keyFlags[j] == 0 { j += 1 }
                        let first = j
                        while j < end && keyFlags[j] != 0 { j += 1 }
                        if j > first { dotRowsKernel(q, kd + first * d, j - first, d, dot + (first - t0)) }
                    }
                    for j in t0..<t1 {
                        s[j] = j < end && keyFlags[j] != 0 ? Float(dot[j - t0]) * scale : -.infinity
                    }
                }
            }
        }
    }

    /// One mask row (DESIGN.md §1, steps 5–6) from its scores, as `nk` bytes in `out` (zero on entry).
    ///
    /// - Parameters:
    ///   - scores: the row's scores from `scoreRows` (overwritten; unused for `.dense`).
    ///   - keyFlags: self-similarity of every key block of the kv head (1 = self-similar).
    ///   - order: scratch of `3·nk` values.
    @inline(__always)
    static func selectRow(
        queryBlock i: Int, scores: UnsafeMutablePointer<Float>, keyFlags: UnsafePointer<UInt8>, querySelfSimilar: Bool,
        keyBlocks nk: Int, config: SpargeConfig, order: UnsafeMutablePointer<UInt64>, into out: UnsafeMutablePointer<UInt8>
    ) {
        let limit = config.causal
            ? blockCausalLimit(queryBlock: i, blockQ: config.blockQ, blockK: config.blockK, keyBlocks: nk)
            : nk
        switch config.selection {
        case .dense:
            for j in 0..<limit { out[j] = 1 }
        case .cdf, .topK:
            selectBlocks(scores: scores, count: nk, selection: config.selection, order: order, into: out)
        }
        // Force-on, in the reference's order.
        for j in 0..<nk where keyFlags[j] == 0 { out[j] = 1 }
        if !querySelfSimilar { for j in 0..<nk { out[j] = 1 } }
        if config.causal { for j in limit..<nk { out[j] = 0 } }
        if config.sink { out[0] = 1 }
        if config.causal && config.keepDiagonal {
            let first = i * config.blockQ / config.blockK
            for j in first..<limit { out[j] = 1 }
        }
    }

    /// Throws `SpargeError.invalidArgument` unless the arguments of ``predictRows(querySummaries:queryBlocks:keySummaries:config:headDim:queryHeads:kvHeads:seqLen:)``
    /// fit together (every backend's version checks the same).
    public static func checkRowArguments(
        querySummaries: BlockSummaries, queryBlocks: [Int], keySummaries: BlockSummaries,
        config: SpargeConfig, headDim d: Int, queryHeads: Int, kvHeads: Int, seqLen: Int
    ) throws {
        try config.validate()
        let nk = (seqLen + config.blockK - 1) / config.blockK
        let nq = (seqLen + config.blockQ - 1) / config.blockQ
        func check(_ ok: Bool, _ message: @autoclosure () -> String) throws {
            if !ok { throw SpargeError.invalidArgument("predictRows: " + message()) }
        }
        try check(kvHeads > 0 && queryHeads % kvHeads == 0, "\(queryHeads) query heads, \(kvHeads) kv heads")
        try check(querySummaries.heads == queryHeads && querySummaries.count == queryBlocks.count
                  && querySummaries.dim == d && querySummaries.blockSize == config.blockQ,
                  "query summaries [\(querySummaries.heads), \(querySummaries.count), \(querySummaries.dim)] of blocks of "
                  + "\(querySummaries.blockSize) do not match \(queryBlocks.count) query blocks of \(config.blockQ), "
                  + "\(queryHeads) heads, D=\(d)")
        try check(keySummaries.heads == kvHeads && keySummaries.count == nk && keySummaries.firstBlock == 0
                  && keySummaries.dim == d && keySummaries.blockSize == config.blockK,
                  "key summaries must cover all \(nk) key blocks of \(config.blockK) of \(kvHeads) heads, D=\(d)")
        try check(queryBlocks.allSatisfy { $0 >= 0 && $0 < nq }, "a query block outside 0..<\(nq)")
    }

    /// The whole mask of one process: K mean, summaries of Q and K, then every row.
    public static func predict(q: Tensor3, k: Tensor3, config: SpargeConfig) throws -> BlockMask {
        guard q.rows == k.rows && q.dim == k.dim else {
            throw SpargeError.invalidArgument("predict: Q \(q.shape) and K \(k.shape) do not match")
        }
        let n = q.rows
        let km = KeyMean(summing: k, rows: 0..<n).mean()
        let qs = BlockSummaries.summarize(q, rows: 0..<n, firstBlock: 0, blockSize: config.blockQ,
                                          threshold: config.simThreshold)
        let ks = BlockSummaries.summarize(k, rows: 0..<n, firstBlock: 0, blockSize: config.blockK,
                                          threshold: config.simThreshold, subtracting: km)
        return try predictRows(querySummaries: qs, queryBlocks: Array(0..<qs.count), keySummaries: ks,
                           config: config, headDim: q.dim, queryHeads: q.heads, kvHeads: k.heads, seqLen: n)
    }

    /// Key blocks `0..<limit` are in the block-causal area of query block `queryBlock`:
    /// `j < (i+1)·blockQ/blockK` with real division, clamped to `keyBlocks`.
    @inlinable
    public static func blockCausalLimit(queryBlock i: Int, blockQ: Int, blockK: Int, keyBlocks: Int) -> Int {
        let edge = Double((i + 1) * blockQ) / Double(blockK)
        return min(keyBlocks, Int(edge.rounded(.up)))
    }

    /// Turns one row of scores (−∞ = excluded) into selected blocks (`out[j] = 1`), by TopCdf or TopK.
    ///
    /// A row with no finite score selects nothing (see the type's notes). `order` is scratch for `3·count`
    /// values.
    @inline(__always)
    static func selectBlocks(
        scores s: UnsafeMutablePointer<Float>, count nk: Int, selection: BlockSelection,
        order: UnsafeMutablePointer<UInt64>, into out: UnsafeMutablePointer<UInt8>
    ) {
        var mx = -Float.infinity
        for j in 0..<nk { mx = max(mx, s[j]) }
        guard mx > -.infinity else { return }
        let inv = 1 / expRowKernel(s, nk, mx)
        // Sort key: descending probability (the bits of a non-negative Float order like the Float), then
        // ascending index on ties — a stable descending sort.
        for j in 0..<nk {
            let p = s[j] * inv
            order[j] = (UInt64(~p.bitPattern) << 32) | UInt64(j)
        }
        switch selection {
        case .cdf(let tau):
            // Only the leading entries of the sorted order matter (TopCdf stops once the cumulative sum passes
            // τ), so they are popped from a min-heap — O(nk + kept·log nk) instead of a full sort — in exactly
            // the order a full sort would give (the keys are distinct).
            var heap = MinHeap(keys: order, count: nk)
            // Keep the longest prefix whose cumulative sum is ≤ τ (c is non-decreasing: the first miss ends
            // it), and at least the first block.
            var c = 0.0, kept = 0
            while heap.count > 0 {
                let key = heap.popMin()
                c += Double(Float(bitPattern: ~UInt32(truncatingIfNeeded: key >> 32)))
                guard Float(c) <= tau || kept == 0 else { break }
                out[Int(truncatingIfNeeded: key & 0xFFFF_FFFF)] = 1
                kept += 1
                if Float(c) > tau { break }
            }
        case .topK(let fraction):
            // TopK's set is the keys up to the keep-th smallest, in any order: selected, not sorted.
            let keep = min(topKCount(fraction: fraction, keyBlocks: nk), nk)
            let last = sparge_select_smallest(order, order + nk, nk, keep)
            for j in 0..<nk where order[j] <= last { out[Int(truncatingIfNeeded: order[j] & 0xFFFF_FFFF)] = 1 }
        case .dense:
            for j in 0..<nk { out[j] = 1 }
        }
    }

    /// TopK's blocks per row: `max(1, floor(fraction · nk))`, `fraction` read as the decimal it was written as.
    public static func topKCount(fraction: Float, keyBlocks nk: Int) -> Int {
        max(1, Int((decimalValue(fraction) * Double(nk)).rounded(.down)))
    }

    /// The compressed score's dot product, by the C kernel of this CPU's set (`sparge_tile_kernels.dotDouble`),
    /// which sums exactly as ``dotDoubleTwin(_:_:_:)`` does: the same Double on every set. (The Swift twin,
    /// compiled for a portable x86-64 build, calls the C library's fma once per lane: mask prediction ran 8×
    /// slower than in a build for the machine's own CPU.)
    static let dotKernel = CPUISA.detected.kernels.dotDouble!
    /// A row's numerators `s[j] == −∞ ? 0 : PortableExp.exp(s[j] − max)` and their Float sum in ascending j,
    /// by the C kernel of this CPU's set (`sparge_tile_kernels.maskExpRow`, eight values side by side):
    /// the same bits as ``expRowTwin(_:_:_:)``.
    static let expRowKernel = CPUISA.detected.kernels.maskExpRow!

    /// The definition of a row's numerators and their sum (the kernels' scalar twin in the tests).
    static func expRowTwin(_ s: UnsafeMutablePointer<Float>, _ count: Int, _ max: Float) -> Float {
        var sum: Float = 0
        for j in 0..<count {
            let e = s[j] == -.infinity ? 0 : PortableExp.exp(s[j] - max)
            s[j] = e
            sum += e
        }
        return sum
    }
    /// `dotKernel` over consecutive key rows given as floats (`sparge_tile_kernels.dotDoubleRows`): the Doubles
    /// of the widened rows.
    static let dotRowsKernel = CPUISA.detected.kernels.dotDoubleRows!

    @inline(__always)
    static func dotDouble(_ a: UnsafePointer<Double>, _ b: UnsafePointer<Double>, _ d: Int) -> Double {
        dotKernel(a, b, d)
    }

    /// The definition of the compressed score's dot product (and the kernels' scalar twin in the tests): two
    /// 8-lane accumulators fused over whole groups of 16, folded pairwise, then the tail in order, unfused.
    static func dotDoubleTwin(_ a: UnsafePointer<Double>, _ b: UnsafePointer<Double>, _ d: Int) -> Double {
        var acc0 = SIMD8<Double>(), acc1 = SIMD8<Double>()
        var j = 0
        let ra = UnsafeRawPointer(a), rb = UnsafeRawPointer(b)
        while j + 16 <= d {
            acc0.addProduct(ra.loadUnaligned(fromByteOffset: j * 8, as: SIMD8<Double>.self),
                            rb.loadUnaligned(fromByteOffset: j * 8, as: SIMD8<Double>.self))
            acc1.addProduct(ra.loadUnaligned(fromByteOffset: (j + 8) * 8, as: SIMD8<Double>.self),
                            rb.loadUnaligned(fromByteOffset: (j + 8) * 8, as: SIMD8<Double>.self))
            j += 16
        }
        let v = acc0 + acc1
        var t = ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]))
        while j < d { t += a[j] * b[j]; j += 1 }
        return t
    }
}

/// A binary min-heap over caller-owned `UInt64` keys, built in place in O(n).
struct MinHeap {
    let keys: UnsafeMutablePointer<UInt64>
    private(set) var count: Int

    init(keys: UnsafeMutablePointer<UInt64>, count: Int) {
        self.keys = keys
        self.count = count
        var i = count / 2 - 1
        while i >= 0 { siftDown(i); i -= 1 }
    }

    /// Removes and returns the smallest key; the heap must not be empty.
    @inline(__always) mutating func popMin() -> UInt64 {
        let top = keys[0]
        count -= 1
        keys[0] = keys[count]
        siftDown(0)
        return top
    }

    @inline(__always) private func siftDown(_ start: Int) {
        var i = start
        let value = keys[i]
        while true {
            var child = 2 * i + 1
            if child >= count { break }
            if child + 1 < count && keys[child + 1] < keys[child] { child += 1 }
            if keys[child] >= value { break }
            keys[i] = keys[child]
            i = child
        }
        keys[i] = value
    }
}
