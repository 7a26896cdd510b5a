#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Synthetic long-context LLM attention inputs.
///
/// The head dimension is split in two, as in models with partial rotary embedding (GPT-NeoX, Phi):
/// - **Rotary half** (`0..<D/2`): local content `d(p)`, a unit vector drifting smoothly along the sequence
///   (interpolated between random anchors every ``anchorSpacing`` tokens), rotated by RoPE (base 10000,
///   dims `2m, 2m+1`). Smooth content plus RoPE's decay with relative distance makes the **local band**.
/// - **Semantic half** (`D/2..<D-1`): the segment vector. The sequence is cut into segments of
///   ``segmentLength`` tokens; segment `s` has a topic drawn from a pool of `max(4, segments/4)` topics and
///   carries `cos φ · topic + sin φ · own` (cos² φ = 0.7). A query affines strongly with keys of its own
///   segment and less strongly with keys of every **other segment of the same topic**, anywhere in the
///   sequence: far attention that a purely local pattern would miss. These dims are not rotated, or RoPE
///   at base 10000 would scramble them beyond ~10⁴ tokens.
/// - **Sink channel** (`D-1`): keys 0..<4 carry a large value there (a "massive activation") and every
///   query a constant, so **sink tokens** get a high score from every query.
///
/// Score levels after `1/√D` (before noise): sink ≈ 9, own segment ≈ 5·ρ, same topic elsewhere ≈ 3.5·ρ,
/// local band up to 4·λ on top, unrelated keys ≈ 0 ± 0.5, with per-query-head weights ρ, λ in [0.7, 1.3].
/// Keys share a per-head bias (removed by SpargeAttn's K smoothing; softmax ignores it). Values are the
/// content plus noise, except the sink tokens' values, which are small as in real models.
///
/// The mass split depends on N: the unrelated background grows with N while the sink and segment mass do
/// not, so attention is more diffuse at 1M tokens than at 32K.
struct LLMWorkload: WorkloadModel {
    static let segmentLength = 1000
    static let anchorSpacing = 64
    static let sinkCount = 4
    static let ropeBase = 10000.0
    static let (segmentLogit, localLogit, sinkLogit): (Float, Float, Float) = (5, 4, 9)
    static let topicShare: Float = 0.7
    static let noise: Float = 0.3

    let shape: WorkloadShape
    let seed: UInt64
    let rotary: Int        // dims 0..<rotary are rotated
    let semantic: Int      // dims rotary..<rotary+semantic carry the segment vector; D-1 is the sink channel
    let topics: Int
    let (amplitude, localAmplitude, sinkQuery, sinkKey): (Float, Float, Float, Float)
    // RoPE angles p·θ_m split as p = hi·1024 + lo: cos and sin of lo·θ_m and of hi·1024·θ_m.
    let loCos: [Float], loSin: [Float], hiCos: [Float], hiSin: [Float]
    // cos and sin of the interpolation angle (π/2)(p mod W)/W between drift anchors.
    let blendCos: [Float], blendSin: [Float]

    init(shape: WorkloadShape, seed: UInt64) {
        self.shape = shape
        self.seed = seed
        let d = shape.headDim
        rotary = d / 2 / 2 * 2
        semantic = d - rotary - 1
        let segments = (shape.seqLen + Self.segmentLength - 1) / Self.segmentLength
        topics = max(4, segments / 4)
        let sqrtD = Float(d).squareRoot()
        amplitude = (Self.segmentLogit * sqrtD).squareRoot()
        localAmplitude = (Self.localLogit * sqrtD).squareRoot()
        sinkQuery = 2
        sinkKey = Self.sinkLogit * sqrtD / 2
        let pairs = rotary / 2
        let his = (shape.seqLen + 1023) / 1024
        var (lc, ls) = ([Float](repeating: 0, count: 1024 * pairs), [Float](repeating: 0, count: 1024 * pairs))
        var (hc, hs) = ([Float](repeating: 0, count: his * pairs), [Float](repeating: 0, count: his * pairs))
        for m in 0..<pairs {
            let theta = pow(Self.ropeBase, -2 * Double(m) / Double(rotary))
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
        let w = Self.anchorSpacing
        blendCos = (0..<w).map { Float(cos(Double.pi / 2 * Double($0) / Double(w))) }
        blendSin = (0..<w).map { Float(sin(Double.pi / 2 * Double($0) / Double(w))) }
    }

    /// The topic of segment `s` (the same for every head: a document-level property).
    func topic(ofSegment s: Int) -> Int {
        Noise.below(topics, Noise.key(seed, NoiseTag.segmentTopic.rawValue), UInt64(s))
    }

    /// Per-query-head weights (ρ for the segment part, λ for the local part), each in [0.7, 1.3].
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
        // The key bias (all dims but the sink channel); zero for Q and V.
        var bias = [Float](repeating: 0, count: d)
        if tensor == .key {
            let biasKey = Noise.key(seed, NoiseTag.keyBias.rawValue, kv)
            for j in 0..<d - 1 { bias[j] = 0.5 * Noise.normal(biasKey, UInt64(j)) }
        }
        let semanticScale = 1 / Float(semantic).squareRoot()
        let rotaryScale = 1 / Float(rotary).squareRoot()
        let (cosPhi, sinPhi) = (Self.topicShare.squareRoot(), (1 - Self.topicShare).squareRoot())
        // Per-row amplitudes of the local (rotary) and segment parts, and the noise level.
        let (localAmp, segmentAmp, noise): (Float, Float, Float) = switch tensor {
        case .query: (localAmplitude * lambda, amplitude * rho, Self.noise)
        case .key: (localAmplitude, amplitude, Self.noise)
        case .value: (0.8 * Float(rotary).squareRoot(), 0.8 * Float(semantic).squareRoot(), 0.5)
        }
        var segmentVector = [Float](repeating: 0, count: semantic)
        var anchors = [Float](repeating: 0, count: 2 * rotary)
        var (currentSegment, currentAnchor) = (-1, -1)
        segmentVector.withUnsafeMutableBufferPointer { seg in
        anchors.withUnsafeMutableBufferPointer { anchor in
        bias.withUnsafeBufferPointer { bias in
            for p in rows {
                let row = out + (p - rows.lowerBound) * d
                // noise first, then add the signal
                Noise.fillNormal(row, count: d, key: noiseKey, first: UInt64(p * d), scale: noise)
                let s = p / Self.segmentLength
                if s != currentSegment {
                    currentSegment = s
                    let t = UInt64(topic(ofSegment: s))
                    for j in 0..<semantic {
                        seg[j] = semanticScale * (cosPhi * Noise.normal(topicKey, t &* 4096 &+ UInt64(j))
                            + sinPhi * Noise.normal(segmentKey, UInt64(s) &* 4096 &+ UInt64(j)))
                    }
                }
                let a = p / Self.anchorSpacing
                if a != currentAnchor {
                    currentAnchor = a
                    for j in 0..<2 * rotary {
                        let which = UInt64(a + j / rotary), column = UInt64(j % rotary)
                        anchor[j] = rotaryScale * Noise.normal(anchorKey, which &* 4096 &+ column)
                    }
                }
                let sink = p < Self.sinkCount
                if tensor == .value && sink {
                    for j in 0..<d { row[j] *= 0.2 }
                    continue
                }
                let (c, sn) = (blendCos[p % Self.anchorSpacing], blendSin[p % Self.anchorSpacing])
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
                let keySink = tensor == .key && sink
                for j in 0..<semantic {
                    row[rotary + j] += (keySink ? 0 : segmentAmp * seg[j]) + bias[rotary + j]
                }
                switch tensor {
                case .query: row[d - 1] += sinkQuery
                case .key: row[d - 1] += sink ? sinkKey : 0
                case .value: break
                }
            }
        }
        }
        }
    }
}
