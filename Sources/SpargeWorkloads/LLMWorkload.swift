import SpargeKernels
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Synthetic long-context LLM attention inputs.
///
/// What SpargeAttn sees in real long-context models, and what this generator reproduces: rows of Q and K are
/// alike over tens to hundreds of consecutive tokens (so 64–128-row blocks are self-similar and their means
/// represent them), and each query puts almost all of its weight on a small set of key blocks — its local
/// neighbourhood, the start of the context, and a few far **anchor** blocks that many later queries share.
/// That is the shape MInference (arXiv 2407.02490) finds in real heads: A-shape (sinks plus a local window),
/// vertical-slash (a few key positions, "vertical lines", that nearly all later queries attend to, plus the
/// diagonal), and block-sparse heads whose far attention goes to a limited set of earlier blocks; StreamingLLM
/// (arXiv 2309.17453) for the sinks; retrieval heads (arXiv 2404.15574) for far attention that lands on a
/// specific earlier span (the first mention of an entity, a heading) rather than on everything related.
/// Shared far blocks are what make a skipping ring cheap: the key blocks a rank needs from other ranks are
/// then about as many as one query row needs, and the bytes moved stay within (density × a dense ring's
/// bytes) plus the summaries (`testLLMFarNeedsAreShared`).
///
/// The head dimension is split as in models with partial rotary embedding (GPT-NeoX, Phi, GLM; DeepSeek's
/// decoupled RoPE):
/// - **Rotary half** (`0..<R`, `R = D/2`): a local content vector that drifts smoothly along the sequence
///   (interpolated between random vectors every ``driftSpacing`` tokens), rotated by RoPE (base 10000, dims
///   `2m, 2m+1`). Its energy sits in the slow RoPE pairs (weight `1/(1 + (64·θ_m)²)` on pair `m`): real
///   queries and keys put little norm on the fastest frequencies, and a component that turns by a radian per
///   token would make every block's mean meaningless. A mild part of the **local band** (``localLogit``).
/// - **Semantic half** (`R..<D-1`), not rotated (RoPE would scramble it across 10⁴–10⁶ tokens; in fully
///   rotary models the slowest pairs play this role):
///   - a one-hot **topic code** in the first `topicDims` (≤ 8) dims. The sequence is cut into segments of
///     512–3584 tokens (one boundary at a random place in every slot of ``segmentSlot`` tokens); each has a
///     topic from a bounded pool (`min(8, max(4, segments/4))`: a document has a few recurring themes), and
///     a query turns from one segment's topic to the next over ``segmentRamp`` tokens. One-hot codes are
///     exactly orthogonal, so topics add no chance overlaps.
///   - **local content** in the other dims: unit-norm random vectors every ``contentSpacing`` tokens,
///     interpolated between, the same in Q and K (score ``ownLogit`` at distance 0, falling to chance over
///     about 2·``contentSpacing``). This is most of the local band: broad and flat at block scale, so the
///     pooled view ranks neighbouring blocks as the tokens do. Unit norm keeps its level the same everywhere
///     (random norms made some stretches outscore the sinks by e⁴ in the pooled view and drop them).
/// - **Global channel** (`D-1`): every query carries a constant there; keys 0..<``sinkCount`` carry a large
///   value (**sink tokens**, a "massive activation"), keys up to ``preambleLength`` a smaller one (the start
///   of the context — a system prompt or instruction — that every query consults), and the **anchor spans**
///   one that gives every later query score ``anchorLogit`` on them: shared vertical lines.
///
/// **Anchors.** The first segment of each topic (its first mention) holds an anchor span: ``anchorLength``
/// tokens (two whole 64-token key blocks, block-aligned, so the pooled scores see them) at the segment's
/// start, carrying the global-channel value and the topic code strongly (``anchorTopicLogit`` more for queries
/// of that topic) and no local content. Other keys carry their segment's topic only weakly
/// (``weakTopicLogit``), so later queries of a topic put their far mass on its anchor and on the shared
/// anchors, not on every earlier token of the topic. At most 8 topics × 2 blocks: the far set does not grow
/// with N, so density falls roughly as 1/N.
///
/// Score levels after `1/√D`, before noise (query head weights ρ ∈ [0.85, 1.15] on everything but the
/// rotary band, λ ∈ [0.7, 1.3] on that): sinks 22ρ, preamble 19ρ, local content 17ρ at distance 0 plus the
/// rotary band up to 3λ, anchors 16.5ρ (19.5ρ for the query's own topic), unrelated keys ≈ 0 with a spread of
/// about 2–3 from chance overlaps of the local content. The levels are high because the chance overlaps
/// grow with them (≈ level/√dims) while the unrelated blocks grow with N: at N = 1M the 16K unrelated key
/// blocks must stay well under τ's 2% of a row's pooled mass, or every row picks up its own random far
/// blocks and the ring moves them all. Per-token noise (std 0.5 on Q, 0.4 on K) keeps blocks from being
/// identical. Keys share a per-head bias (removed by K smoothing; softmax ignores it). Values are the
/// content plus noise; the sink tokens' values are small, as in real models.
struct LLMWorkload: WorkloadModel {
    static let segmentSlot = 2048
    static let segmentRamp = 512
    static let driftSpacing = 256
    static let contentSpacing = 1152
    static let sinkCount = 4
    static let preambleLength = 128
    static let ropeBase = 10000.0
    /// Score levels after `1/√D` (times ρ; the local one times λ): every anchor key (shared, through the global
    /// channel), the extra on the anchor of the query's own topic, the local content at distance 0, a
    /// non-anchor key of the query's topic; the rotary local band; preamble and sink keys.
    static let (anchorLogit, anchorTopicLogit, ownLogit, weakTopicLogit): (Float, Float, Float, Float) = (16.5, 3, 17, 0.5)
    static let (localLogit, preambleLogit, sinkLogit): (Float, Float, Float) = (3, 19, 22)
    /// Tokens of a topic's anchor span: two whole 64-token key blocks, block-aligned.
    static let anchorLength = 128
    /// The topic pool is `min(maxTopics, topicDims, max(4, segments/4))`: a document has a bounded set of
    /// recurring themes, each introduced once.
    static let maxTopics = 8
    static let (queryNoise, keyNoise, valueNoise): (Float, Float, Float) = (0.5, 0.4, 0.5)
    /// The query's value in the global channel (times ρ); keys get what makes the logits above.
    static let globalQuery: Float = 4

    let shape: WorkloadShape
    let seed: UInt64
    let rotary: Int        // dims 0..<rotary are rotated
    let semantic: Int      // dims rotary..<rotary+semantic: topic code, then local content; D-1 is the global channel
    let topics: Int
    /// Whether segment `s` is the first of its topic (it holds the topic's anchor span).
    let firstMention: [Bool]
    /// Dims `rotary ..< rotary + topicDims` hold the one-hot topic code; the other semantic dims the
    /// unrotated local content.
    let topicDims: Int
    let (localAmplitude, sinkKey, preambleKey, anchorGlobal): (Float, Float, Float, Float)
    // RoPE angles p·θ_m split as p = hi·1024 + lo: cos and sin of lo·θ_m and of hi·1024·θ_m.
    let loCos: [Float], loSin: [Float], hiCos: [Float], hiSin: [Float]
    /// Standard deviation of each rotary dim of a drift anchor (the spectrum; Σ of squares = 1).
    let spectrum: [Float]
    // cos and sin of the interpolation angle (π/2)(p mod W)/W between drift anchors.
    let blendCos: [Float], blendSin: [Float]
    // cos and sin of (π/2)·t/T for the turn between segments, t in 0..<T.
    let rampCos: [Float], rampSin: [Float]

    init(shape: WorkloadShape, seed: UInt64) {
        self.shape = shape
        self.seed = seed
        let d = shape.headDim
        rotary = d / 2 / 2 * 2
        semantic = d - rotary - 1
        let segments = (shape.seqLen + Self.segmentSlot - 1) / Self.segmentSlot
        topicDims = max(1, min(Self.maxTopics, semantic / 2))
        let topics = min(topicDims, max(4, segments / 4))
        self.topics = topics
        var seen = Set<Int>()
        firstMention = (0..<segments).map { s in
            seen.insert(Noise.below(topics, Noise.key(seed, NoiseTag.segmentTopic.rawValue), UInt64(s))).inserted
        }
        let sqrtD = Float(d).squareRoot()
        localAmplitude = (Self.localLogit * sqrtD).squareRoot()
        sinkKey = Self.sinkLogit * sqrtD / Self.globalQuery
        preambleKey = Self.preambleLogit * sqrtD / Self.globalQuery
        anchorGlobal = Self.anchorLogit * sqrtD / Self.globalQuery
        let pairs = rotary / 2
        let his = (shape.seqLen + 1023) / 1024
        var (lc, ls) = ([Float](repeating: 0, count: 1024 * pairs), [Float](repeating: 0, count: 1024 * pairs))
        var (hc, hs) = ([Float](repeating: 0, count: his * pairs), [Float](repeating: 0, count: his * pairs))
        var weights = [Double](repeating: 0, count: pairs)
        for m in 0..<pairs {
            let theta = pow(Self.ropeBase, -2 * Double(m) / Double(rotary))
            weights[m] = 1 / (1 + (64 * theta) * (64 * theta))
            for lo in 0..<1024 {
                lc[lo * pairs + m] = Float(cos(Double(lo) * theta))
                ls[lo * pairs + m] = Float(sin(Double(lo) * theta))
            }
            for hi in 0..<his {
                hc[hi * pairs + m] = Float(cos(Double(hi * 1024) * theta))
                hs[hi * pairs + m] = Float(sin(Double(hi * 1024) * theta))
            }
        }
        (loCos, loSin, hiCos, hiSin) = (lc, ls, hc, hs)
        let total = 2 * weights.reduce(0, +)
        spectrum = (0..<rotary).map { Float((weights[$0 / 2] / total).squareRoot()) }
        let w = Self.driftSpacing
        blendCos = (0..<w).map { Float(cos(Double.pi / 2 * Double($0) / Double(w))) }
        blendSin = (0..<w).map { Float(sin(Double.pi / 2 * Double($0) / Double(w))) }
        let t = Self.segmentRamp
        rampCos = (0..<t).map { Float(cos(Double.pi / 2 * Double($0) / Double(t))) }
        rampSin = (0..<t).map { Float(sin(Double.pi / 2 * Double($0) / Double(t))) }
    }

    /// Where segment `s` starts: a random place in slot `s` (slot 0: at 0), so that segments are
    /// `segmentRamp ..< 2·segmentSlot − segmentRamp` tokens long.
    func segmentStart(_ s: Int) -> Int {
        s == 0 ? 0 : s * Self.segmentSlot
            + Noise.below(Self.segmentSlot - Self.segmentRamp, Noise.key(seed, NoiseTag.segmentStart.rawValue), UInt64(s))
    }

    /// The segment that holds position `p`.
    func segment(at p: Int) -> Int {
        let slot = p / Self.segmentSlot
        return p >= segmentStart(slot) ? slot : slot - 1
    }

    /// Where the anchor span of segment `s` starts (used only where `s` is the first of its topic): the first
    /// block-aligned position in the segment past the preamble, so it fills one whole key block.
    func anchorStart(_ s: Int) -> Int {
        let a = max(segmentStart(s), Self.preambleLength)
        return (a + Self.anchorLength - 1) / Self.anchorLength * Self.anchorLength
    }

    /// The topic of segment `s` (the same for every head: a document-level property).
    func topic(ofSegment s: Int) -> Int {
        Noise.below(topics, Noise.key(seed, NoiseTag.segmentTopic.rawValue), UInt64(s))
    }

    /// Per-query-head weights (ρ for the segment and global parts, λ for the local part), each in [0.7, 1.3].
    func weights(queryHead h: Int) -> (rho: Float, lambda: Float) {
        let key = Noise.key(seed, NoiseTag.headWeights.rawValue, UInt64(h))
        return (0.85 + 0.3 * Noise.uniform(key, 0), 0.7 + 0.6 * Noise.uniform(key, 1))
    }

    func fill(_ tensor: WorkloadTensor, head: Int, rows: Range<Int>, into out: UnsafeMutablePointer<Float>) {
        let d = shape.headDim
        let kvHead = tensor == .query ? head / (shape.queryHeads / shape.kvHeads) : head
        let (rho, lambda) = tensor == .query ? weights(queryHead: head) : (1, 1)
        let (rotary, semantic, pairs) = (self.rotary, self.semantic, self.rotary / 2)
        let kv = UInt64(kvHead)
        let segmentKey = Noise.key(seed, NoiseTag.segment.rawValue, kv)
        let anchorKey = Noise.key(seed, NoiseTag.anchor.rawValue, kv)
        let noiseTag: NoiseTag = tensor == .query ? .queryNoise : tensor == .key ? .keyNoise : .valueNoise
        let noiseKey = Noise.key(seed, noiseTag.rawValue, UInt64(head))
        // The key bias (all dims but the global channel); zero for Q and V.
        var bias = [Float](repeating: 0, count: d)
        if tensor == .key {
            let biasKey = Noise.key(seed, NoiseTag.keyBias.rawValue, kv)
            for j in 0..<d - 1 { bias[j] = 0.5 * Noise.normal(biasKey, UInt64(j)) }
        }
        // The topic code t (one-hot, exactly orthogonal between topics) lives in the first topicDims semantic
        // dims, the local content c in the others: a query's topic part has no chance overlap with anything.
        let topicDims = self.topicDims
        let sqrtD = Float(d).squareRoot(), a = (Self.anchorTopicLogit * sqrtD).squareRoot()
        let own = (Self.ownLogit * sqrtD).squareRoot()
        // Coefficients of the topic code t and the local content c (both of unit norm) in a row; anchor rows
        // carry `anchorAmp · t` and no content.
        let valueAmp = 0.8 * Float(semantic).squareRoot()
        let keyTopic = Self.weakTopicLogit * sqrtD / a
        let (topicCoef, ownCoef, anchorAmp): (Float, Float, Float) = switch tensor {
        case .query: (a * rho, own * rho, 0)
        case .key: (keyTopic, own, a)
        case .value: (valueAmp * keyTopic / (keyTopic * keyTopic + own * own).squareRoot(),
                      valueAmp * own / (keyTopic * keyTopic + own * own).squareRoot(), valueAmp)
        }
        // Per-row amplitude of the local (rotary) part, and the noise level.
        let (localAmp, noise): (Float, Float) = switch tensor {
        case .query: (localAmplitude * lambda, Self.queryNoise)
        case .key: (localAmplitude, Self.keyNoise)
        case .value: (0.8 * Float(rotary).squareRoot(), Self.valueNoise)
        }
        // The topic parts of segments s-1 and s (a query turns from the first to the second over the ramp),
        // then segment s's anchor row.
        var segmentVectors = [Float](repeating: 0, count: 3 * semantic)
        var anchorBegin = -1
        var anchors = [Float](repeating: 0, count: 2 * rotary)
        var (currentSegment, segmentBegin, currentAnchor, currentContent) = (-1, 0, -1, -1)
        // The semantic content of the current stretch: random vectors every contentSpacing tokens (dims
        // topicDims..<semantic), interpolated between, not rotated.
        var contentVectors = [Float](repeating: 0, count: 2 * semantic)
        let spectrum = self.spectrum
        contentVectors.withUnsafeMutableBufferPointer { content in
        segmentVectors.withUnsafeMutableBufferPointer { seg in
        anchors.withUnsafeMutableBufferPointer { anchor in
        bias.withUnsafeBufferPointer { bias in
        spectrum.withUnsafeBufferPointer { spectrum in
            for p in rows {
                let row = out + (p - rows.lowerBound) * d
                // noise first, then add the signal
                Noise.fillNormal(row, count: d, key: noiseKey, first: UInt64(p * d), scale: noise)
                let s = segment(at: p)
                if s != currentSegment {
                    currentSegment = s
                    segmentBegin = segmentStart(s)
                    anchorBegin = tensor != .query && firstMention[s] ? anchorStart(s) : -1
                    for (half, segmentIndex) in [(0, s - 1), (1, s)] where segmentIndex >= 0 {
                        let t = UInt64(topic(ofSegment: segmentIndex))
                        for j in 0..<semantic {
                            let topicValue: Float = j == Int(t) ? 1 : 0
                            seg[half * semantic + j] = topicCoef * topicValue
                            if half == 1 { seg[2 * semantic + j] = anchorAmp * topicValue }
                        }
                    }
                }
                let o = p / Self.contentSpacing
                if o != currentContent {
                    currentContent = o
                    // Each vector scaled to unit norm, so that the own-content score is the same everywhere.
                    for half in 0..<2 {
                        var norm: Float = 0
                        for j in topicDims..<semantic {
                            let x = Noise.normal(segmentKey, UInt64(o + half) &* 4096 &+ UInt64(j))
                            content[half * semantic + j] = x
                            norm += x * x
                        }
                        let scale = 1 / norm.squareRoot()
                        for j in topicDims..<semantic { content[half * semantic + j] *= scale }
                    }
                }
                let a = p / Self.driftSpacing
                if a != currentAnchor {
                    currentAnchor = a
                    for j in 0..<2 * rotary {
                        let which = UInt64(a + j / rotary), column = j % rotary
                        anchor[j] = spectrum[column] * Noise.normal(anchorKey, which &* 4096 &+ UInt64(column))
                    }
                }
                let sink = p < Self.sinkCount
                if tensor == .value && sink {
                    for j in 0..<d { row[j] *= 0.2 }
                    continue
                }
                let (c, sn) = (blendCos[p % Self.driftSpacing], blendSin[p % Self.driftSpacing])
                let (lo, hi) = ((p & 1023) * pairs, (p >> 10) * pairs)
                for m in 0..<pairs {
                    let x = c * anchor[2 * m] + sn * anchor[rotary + 2 * m]
                    let y = c * anchor[2 * m + 1] + sn * anchor[rotary + 2 * m + 1]
                    if tensor == .value {
                        row[2 * m] += localAmp * x
                        row[2 * m + 1] += localAmp * y
                    } else {
                        // cos and sin of p·θ_m by angle addition from the two tables
                        let cp = loCos[lo + m] * hiCos[hi + m] - loSin[lo + m] * hiSin[hi + m]
                        let sp = loSin[lo + m] * hiCos[hi + m] + loCos[lo + m] * hiSin[hi + m]
                        row[2 * m] += localAmp * (x * cp - y * sp) + bias[2 * m]
                        row[2 * m + 1] += localAmp * (x * sp + y * cp) + bias[2 * m + 1]
                    }
                }
                // The segment content: segment s's vector, turning in from segment s-1's over the ramp.
                // Anchor rows (keys and values of the topic's first segment): the topic vector alone.
                let into = p - segmentBegin
                if anchorBegin >= 0 && p >= anchorBegin && p < anchorBegin + Self.anchorLength {
                    for j in 0..<semantic { row[rotary + j] += seg[2 * semantic + j] + bias[rotary + j] }
                } else {
                    let (from, to): (Float, Float) = s == 0 || into >= Self.segmentRamp ? (0, 1)
                        : (rampCos[into], rampSin[into])
                    let preambleKeyRow = tensor == .key && p < Self.preambleLength
                    let (wFrom, wTo) = preambleKeyRow ? (0, 0) : (from, to)
                    let x = Float(p % Self.contentSpacing) * (Float.pi / 2 / Float(Self.contentSpacing))
                    let (cc, cs) = preambleKeyRow ? (0, 0) : (ownCoef * cos(x), ownCoef * sin(x))
                    for j in 0..<semantic {
                        row[rotary + j] += wFrom * seg[j] + wTo * seg[semantic + j] + bias[rotary + j]
                            + cc * content[j] + cs * content[semantic + j]
                    }
                }
                switch tensor {
                case .query: row[d - 1] += Self.globalQuery * rho
                case .key:
                    let anchorRow = anchorBegin >= 0 && p >= anchorBegin && p < anchorBegin + Self.anchorLength
                    let global: Float = sink ? sinkKey : p < Self.preambleLength ? preambleKey : anchorRow ? anchorGlobal : 0
                    row[d - 1] += global
                case .value: break
                }
            }
        }
        }
        }
        }
        }
    }
}
