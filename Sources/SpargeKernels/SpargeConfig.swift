/// How key blocks are chosen for each query block (DESIGN.md §1, step 5).
public enum BlockSelection: Sendable, Equatable {
    /// TopCdf: keep the longest prefix of the sorted block probabilities whose cumulative sum is `≤ tau`
    /// (at least one block).
    case cdf(Float)
    /// TopK: keep `floor(fraction · nk)` blocks per row (at least one).
    case topK(Float)
    /// Every block on: exact FlashAttention, no prediction.
    case dense
}

/// Every parameter of a SpargeAttn forward pass. All ranks of a run must hold the same value.
public struct SpargeConfig: Sendable, Equatable {
    /// Query rows per mask block (default 128, as upstream).
    public var blockQ: Int = 128
    /// Key rows per mask block (default 64, as upstream).
    public var blockK: Int = 64
    /// θ: a block is self-similar iff its mean pairwise cosine is strictly greater (default 0.6).
    public var simThreshold: Float = 0.6
    /// TopCdf τ (default 0.98), TopK, or dense.
    public var selection: BlockSelection = .cdf(0.98)
    /// λ rule in log2 units (default ``lambdaOff``: off): below ``lambdaOff``, a key tile's P·V is skipped
    /// when the largest rise of the running max over the query rows of a compute tile is `≤ -pvThreshold`.
    public var pvThreshold: Float = SpargeConfig.lambdaOff

    /// The λ value at and above which the rule is off (upstream's default, 50 in log2 units: a block it skipped
    /// would be 2⁵⁰ below the running max, far below what fp32 resolves). Off, every visited block is computed
    /// and no decision is taken: the vector tiles form no Δ, and the Hopper kernel's warpgroups skip the
    /// barrier that shares it (one a key block).
    public static let lambdaOff: Float = 50

    /// Whether the λ rule runs (`pvThreshold` below ``lambdaOff``).
    public var lambdaActive: Bool { pvThreshold < SpargeConfig.lambdaOff }
    /// Token-level causal attention (block-causal mask, masking inside diagonal blocks).
    public var causal: Bool = false
    /// Attention sink: key block 0 is always computed.
    public var sink: Bool = false
    /// Causal only: the key blocks that hold a query block's own tokens are always computed (default on).
    /// TopCdf may keep just the later of a query block's two diagonal key blocks, which the first half of
    /// its rows may not see under token-level causal masking: those rows would then see no key at all and
    /// get output 0. This rule, applied after all others, rules that out. Off is upstream SpargeAttn's
    /// exact rule (`--upstream-mask`), which the reference fixtures follow.
    public var keepDiagonal: Bool = true
    /// Softmax scale; `nil` means `1/sqrt(D)`. Mask prediction always uses `1/sqrt(D)`.
    public var scale: Float? = nil
    /// Query rows per compute tile, which is also the group that decides the λ rule together (default 64).
    /// Must divide `blockQ`.
    public var computeTileQ: Int = 64

    public init(
        blockQ: Int = 128, blockK: Int = 64, simThreshold: Float = 0.6,
        selection: BlockSelection = .cdf(0.98), pvThreshold: Float = SpargeConfig.lambdaOff,
        causal: Bool = false, sink: Bool = false, keepDiagonal: Bool = true, scale: Float? = nil,
        computeTileQ: Int = 64
    ) {
        self.blockQ = blockQ
        self.blockK = blockK
        self.simThreshold = simThreshold
        self.selection = selection
        self.pvThreshold = pvThreshold
        self.causal = causal
        self.sink = sink
        self.keepDiagonal = keepDiagonal
        self.scale = scale
        self.computeTileQ = computeTileQ
    }

    /// Throws unless every parameter is usable: positive block sizes, a compute tile dividing `blockQ`,
    /// τ or the TopK fraction in (0, 1], a finite θ and λ, a positive finite scale.
    public func validate() throws {
        func fail(_ message: String) -> SpargeError { .invalidArgument(message) }
        guard blockQ > 0, blockK > 0 else { throw fail("block sizes must be positive (blockQ \(blockQ), blockK \(blockK))") }
        guard computeTileQ > 0, blockQ % computeTileQ == 0 else {
            throw fail("computeTileQ \(computeTileQ) does not divide blockQ \(blockQ)")
        }
        guard simThreshold.isFinite, !pvThreshold.isNaN else { throw fail("θ \(simThreshold) and λ \(pvThreshold) must be numbers") }
        switch selection {
        case .cdf(let tau) where !(tau > 0 && tau <= 1): throw fail("TopCdf τ \(tau) is outside (0, 1]")
        case .topK(let k) where !(k > 0 && k <= 1): throw fail("TopK fraction \(k) is outside (0, 1]")
        default: break
        }
        if let scale, !(scale.isFinite && scale > 0) { throw fail("softmax scale \(scale) must be positive and finite") }
    }

    /// The softmax scale for head dimension `headDim`.
    public func softmaxScale(headDim: Int) -> Float {
        scale ?? 1 / Float(headDim).squareRoot()
    }

    /// Every parameter on one line, e.g. `blocks 128×64 (tile 64), θ=0.6, TopCdf τ=0.98, λ=50, causal`.
    public var summary: String {
        let selection: String
        switch self.selection {
        case .cdf(let tau): selection = "TopCdf τ=\(tau)"
        case .topK(let k): selection = "TopK \(k)"
        case .dense: selection = "dense"
        }
        return "blocks \(blockQ)×\(blockK) (tile \(computeTileQ)), θ=\(simThreshold), \(selection), λ=\(pvThreshold)"
            + (causal ? ", causal" : "") + (sink ? ", sink" : "") + (causal && !keepDiagonal ? ", upstream mask" : "") + (scale.map { ", scale \($0)" } ?? "")
    }
}
