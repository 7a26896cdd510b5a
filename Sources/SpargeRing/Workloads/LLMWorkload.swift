#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Synthetic long-context LLM attention inputs.
///
/// What SpargeAttn sees in real long-context models, and what this generator reproduces: rows of Q and K are
/// alike over tens to hundreds of consecutive tokens (so 64–128-row blocks are self-similar and their means
/// represent them), and each query puts almost all of its weight on a small set of whole stretches of keys —
/// its local neighbourhood, the start of the context, and a few far stretches about the same thing — so the
/// block mask is sparse and gets sparser as N grows.
///
/// The head dimension is split as in models with partial rotary embedding (GPT-NeoX, Phi, GLM; DeepSeek's
/// decoupled RoPE):
/// - **Rotary half** (`0..<R`, `R = D/2`): a local content vector `d(p)` that drifts smoothly along the sequence
///   (interpolated between random anchors every ``driftSpacing`` tokens), rotated by RoPE (base 10000, dims
///   `2m, 2m+1`). Its energy sits in the slow RoPE pairs (weight `1/(1 + (64·θ_m)²)` on pair `m`): real
///   queries and keys put little norm on the fastest frequencies, and a component that turns by a radian per
///   token would make every block's mean meaningless. Smooth content plus RoPE is the **local band**.
/// - **Semantic half** (`R..<D-1`): the topic-segment vector, not rotated (RoPE would scramble it across
///   10⁴–10⁶ tokens; in fully rotary models the slowest pairs play this role). The sequence is cut into
///   segments of 512–3584 tokens (one boundary at a random place in every slot of ``segmentSlot`` tokens,
///   at least ``segmentRamp`` apart); segment `s` has a topic from a pool of `max(4, segments/4)` and
///   carries `cos φ · topic + sin φ · own` (cos² φ = ``topicShare``). Content turns from one segment to the
///   next over ``segmentRamp`` tokens, not in one step. A query is drawn to its own segment and, a little
///   less, to every **other segment of the same topic**, anywhere before it: far attention on whole runs of
///   blocks, which a purely local pattern would miss and block means do see.
/// - **Global channel** (`D-1`): every query carries a constant there; keys 0..<``sinkCount`` carry a large
///   value (**sink tokens**, a "massive activation") and keys up to ``preambleLength`` a smaller one (the
///   start of the context — a system prompt or instruction — that every query consults: the first blocks
///   are a vertical stripe in the attention map, as in StreamingLLM's and MInference's pictures). Preamble
///   keys carry no topic content.
///
/// Score levels after `1/√D`, before noise (query head weights ρ, λ ∈ [0.7, 1.3]): own segment ≈ 12ρ, same
/// topic elsewhere ≈ 10ρ, local band up to 3λ on top, preamble 12ρ, sinks 16ρ; unrelated keys ≈ 0 with a
/// spread of about 1.5 from chance overlaps. Per-token noise (std 0.5 on Q, 0.4 on K) keeps blocks from being
/// identical: block self-similarity ≈ 0.75–0.9. Keys share a per-head bias (removed by K smoothing; softmax
/// ignores it). Values are the content plus noise; the sink tokens' values are small, as in real models.
///
/// Because the relevant set per query (own segment, ~4 same-topic segments, preamble) does not grow with N
/// while the context does, the predicted mask density falls roughly as 1/N.
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
