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
    static let sinkCount = 4
    static let preambleLength = 128
    static let ropeBase = 10000.0
    static let (segmentLogit, localLogit, preambleLogit, sinkLogit): (Float, Float, Float, Float) = (12, 3, 12, 16)
    static let topicShare: Float = 0.85
    static let (queryNoise, keyNoise, valueNoise): (Float, Float, Float) = (0.5, 0.4, 0.5)
    /// The query's value in the global channel (times ρ); keys get what makes the logits above.
    static let globalQuery: Float = 4

    let shape: WorkloadShape
    let seed: UInt64
    let rotary: Int        // dims 0..<rotary are rotated
    let semantic: Int      // dims rotary..<rotary+semantic carry the segment vector; D-1 is the global channel
    let topics: Int
    let (amplitude, localAmplitude, sinkKey, preambleKey): (Float, Float, Float, Float)
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
        topics = max(4, segments / 4)
        let sqrtD = Float(d).squareRoot()
        amplitude = (Self.segmentLogit * sqrtD).squareRoot()
        localAmplitude = (Self.localLogit * sqrtD).squareRoot()
        sinkKey = Self.sinkLogit * sqrtD / Self.globalQuery
        preambleKey = Self.preambleLogit * sqrtD / Self.globalQuery
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

    /// The topic of segment `s` (the same for every head: a document-level property).
    func topic(ofSegment s: Int) -> Int {
        Noise.below(topics, Noise.key(seed, NoiseTag.segmentTopic.rawValue), UInt64(s))
    }

    /// Per-query-head weights (ρ for the segment and global parts, λ for the local part), each in [0.7, 1.3].
    func weights(queryHead h: Int) -> (rho: Float, lambda: Float) {
        let key = Noise.key(seed, NoiseTag.headWeights.rawValue, UInt64(h))
        return (0.7 + 0.6 * Noise.uniform(key, 0), 0.7 + 0.6 * Noise.uniform(key, 1))
    }

    func fill(_ tensor: WorkloadTensor, head: Int, rows: Range<Int>, into out: UnsafeMutablePointer<Float>) {
        let d = shape.headDim
        let kvHead = tensor == .query ? head / (shape.queryHeads / shape.kvHeads) : head
        let (rho, lambda) = tensor == .query ? weights(queryHead: head) : (1, 1)
        let (rotary, semantic, pairs) = (self.rotary, self.semantic, self.rotary / 2)
        let kv = UInt64(kvHead)
        let topicKey = Noise.key(seed, NoiseTag.topic.rawValue, kv)
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
        let semanticScale = 1 / Float(semantic).squareRoot()
        let (cosPhi, sinPhi) = (Self.topicShare.squareRoot(), (1 - Self.topicShare).squareRoot())
        // Per-row amplitudes of the local (rotary) and segment parts, and the noise level.
        let (localAmp, segmentAmp, noise): (Float, Float, Float) = switch tensor {
        case .query: (localAmplitude * lambda, amplitude * rho, Self.queryNoise)
        case .key: (localAmplitude, amplitude, Self.keyNoise)
        case .value: (0.8 * Float(rotary).squareRoot(), 0.8 * Float(semantic).squareRoot(), Self.valueNoise)
        }
        // The vectors of segments s-1 and s (the content turns from the first to the second).
        var segmentVectors = [Float](repeating: 0, count: 2 * semantic)
        var anchors = [Float](repeating: 0, count: 2 * rotary)
        var (currentSegment, segmentBegin, currentAnchor) = (-1, 0, -1)
        let spectrum = self.spectrum
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
                    for (half, segmentIndex) in [(0, s - 1), (1, s)] where segmentIndex >= 0 {
                        let t = UInt64(topic(ofSegment: segmentIndex))
                        for j in 0..<semantic {
                            seg[half * semantic + j] = semanticScale
                                * (cosPhi * Noise.normal(topicKey, t &* 4096 &+ UInt64(j))
                                   + sinPhi * Noise.normal(segmentKey, UInt64(segmentIndex) &* 4096 &+ UInt64(j)))
                        }
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
                let into = p - segmentBegin
                let (from, to): (Float, Float) = s == 0 || into >= Self.segmentRamp ? (0, 1)
                    : (rampCos[into], rampSin[into])
                let preambleKeyRow = tensor == .key && p < Self.preambleLength
                let (wFrom, wTo) = preambleKeyRow ? (0, 0) : (segmentAmp * from, segmentAmp * to)
                for j in 0..<semantic {
                    row[rotary + j] += wFrom * seg[j] + wTo * seg[semantic + j] + bias[rotary + j]
                }
                switch tensor {
                case .query: row[d - 1] += Self.globalQuery * rho
                case .key: row[d - 1] += sink ? sinkKey : p < Self.preambleLength ? preambleKey : 0
                case .value: break
                }
            }
        }
        }
        }
        }
    }
}
