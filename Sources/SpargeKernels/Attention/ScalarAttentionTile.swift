import CSpargeKernels

/// The plain scalar twin of `AttentionTile`: the same API and the same online-softmax math (base 2, the λ
/// rule over the tile's rows), written as straightforward loops over row-major Float arrays. It is the
/// reference the vector tile is tested against, and the fallback a new backend can start from.
public final class ScalarAttentionTile {
    public let headDim: Int
    let tileRows: Int
    let blockK: Int
    let causal: Bool
    let pvThreshold: Float
    /// Whether the λ rule runs (`SpargeConfig.lambdaActive`); when not, every visited block is computed.
    let lambdaActive: Bool
    let queryScale: Float
    /// int8's fixed point of P (`AttentionPrecision.probabilityLevels`), nil for exact probabilities.
    let probabilityLevels: Float?
    /// Whether it is the twin of bf16 tiles (`TileProducts.bf16Tiles`), computing their definition in their
    /// order: scores Σ q·k on the unscaled queries, summed along D; p = 2^(fma(s, scale, −m)) by the kernels'
    /// exp2 recipe; P·V on bf16(p) (a p below 2⁻¹²⁶ is 0), the row sums on p as computed.
    let bf16Tiles: Bool
    var queries: [Float]
    var accumulator: [Float]
    var m: [Float]
    var l: [Float]
    public private(set) var rowCount = 0
    public private(set) var queryStart = 0
    public private(set) var statistics = AttentionStatistics()
    var computed = 0

    /// A tile of head dimension `headDim` under `config` (see `AttentionTileArena.init`); in `precision`
    /// int8 it rounds P as the int8 kernels do, and with `products` bf16Tiles as those do (the inputs are the
    /// caller's to round).
    public init(headDim: Int, config: SpargeConfig, precision: AttentionPrecision = .fp32,
                products: TileProducts = .fp32) {
        probabilityLevels = precision == .int8 ? AttentionPrecision.probabilityLevels : nil
        bf16Tiles = products == .bf16Tiles
        self.headDim = headDim
        tileRows = config.computeTileQ
        blockK = config.blockK
        causal = config.causal
        pvThreshold = config.pvThreshold
        lambdaActive = config.lambdaActive
        queryScale = config.softmaxScale(headDim: headDim) * 1.442_695_040_888_963_4
        queries = [Float](repeating: 0, count: tileRows * headDim)
        accumulator = queries
        m = [Float](repeating: -.infinity, count: tileRows)
        l = [Float](repeating: 0, count: tileRows)
    }

    /// See `AttentionTile.begin`.
    public func begin(queries q: UnsafePointer<Float>, rowCount: Int, queryStart: Int) {
        reset(rowCount: rowCount, queryStart: queryStart)
        load(queries: q)
    }

    /// See `AttentionTile.reset`.
    public func reset(rowCount: Int, queryStart: Int) {
        precondition(rowCount >= 0 && rowCount <= tileRows, "ScalarAttentionTile: too many rows")
        self.rowCount = rowCount
        self.queryStart = queryStart
        statistics = AttentionStatistics()
        computed = 0
        for i in accumulator.indices { accumulator[i] = 0 }
        for r in 0..<tileRows { m[r] = -.infinity; l[r] = 0 }
    }

    /// See `AttentionTile.load`.
    public func load(queries q: UnsafePointer<Float>) {
        let scale: Float = bf16Tiles ? 1 : queryScale  // bf16 tiles scale the scores instead
        for i in 0..<(rowCount * headDim) { queries[i] = q[i] * scale }
    }

    /// See `AttentionTile.visit`. `blocks` key blocks make one visit (the twin of bf16 tiles' grouped visits):
    /// their rows one after the other, the first at `keyStart`, each counted as visited.
    @discardableResult
    public func visit(keys: UnsafePointer<Float>, values: UnsafePointer<Float>, keyCount: Int,
                      keyStart: Int, blocks: Int = 1) -> Bool {
        precondition(keyCount >= 0 && keyCount <= blockK * blocks && (blocks == 1 || !lambdaActive),
                     "ScalarAttentionTile: too many keys")
        guard keyCount > 0, rowCount > 0 else { return false }
        if causal && keyStart > queryStart + rowCount - 1 { return false }
        let d = headDim
        var s = [Float](repeating: 0, count: rowCount * keyCount)
        var blockMax = [Float](repeating: -.infinity, count: rowCount)
        for r in 0..<rowCount {
            for c in 0..<keyCount {
                var dot: Float = 0
                for i in 0..<d { dot += queries[r * d + i] * keys[c * d + i] }
                if causal && queryStart + r < keyStart + c { dot = -.infinity }
                s[r * keyCount + c] = dot
                blockMax[r] = max(blockMax[r], dot)
            }
            if bf16Tiles { blockMax[r] *= queryScale }
        }
        statistics.keyBlocksVisited += blocks
        var delta = -Float.infinity
        for r in 0..<rowCount where blockMax[r] > -.infinity {
            delta = max(delta, blockMax[r] - m[r])
        }
        if lambdaActive && computed > 0 && !(delta + pvThreshold > 0) {
            statistics.pvBlocksSkipped += 1
            return false
        }
        computed += 1
        for r in 0..<rowCount {
            let w = OnlineSoftmax.mergeWeights(m[r], blockMax[r])
            let shift = w.m == -.infinity ? 0 : w.m
            m[r] = w.m
            var sum: Float = 0
            for i in 0..<d { accumulator[r * d + i] *= w.alpha }
            for c in 0..<keyCount {
                var p = bf16Tiles ? sparge_bf16_exp2((-shift).addingProduct(s[r * keyCount + c], queryScale))
                                  : libmExp2(s[r * keyCount + c] - shift)
                if let levels = probabilityLevels { p = (p * levels).rounded(.toNearestOrEven) / levels }
                sum += p
                if bf16Tiles { p = p < 0x1p-126 ? 0 : StorageFormat.bf16.rounded(p) }
                for i in 0..<d { accumulator[r * d + i] += p * values[c * d + i] }
            }
            l[r] = w.alpha * l[r] + sum
        }
        return true
    }

    /// See `AttentionTile.finish`.
    public func finish(output: UnsafeMutablePointer<Float>, lse: UnsafeMutablePointer<Float>) {
        for r in 0..<rowCount {
            let inv: Float = l[r] > 0 ? 1 / l[r] : 0
            for i in 0..<headDim { output[r * headDim + i] = accumulator[r * headDim + i] * inv }
            lse[r] = l[r] > 0 ? (m[r] + libmLog2(l[r])) * 0.693_147_180_559_945_3 : -.infinity
        }
    }
}
