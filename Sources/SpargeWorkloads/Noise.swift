import SpargeKernels
/// Counter-based noise: every value is a hash of (stream key, index), so any element can be made on its own
/// and the same element is the same on every rank.
enum Noise {
    /// The SplitMix64 finalizer: a good 64-bit mix in two multiplications.
    @inline(__always)
    static func mix(_ x: UInt64) -> UInt64 {
        var z = x
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A key for a stream of values named by `parts` (seed, a purpose tag, a head, …).
    static func key(_ parts: UInt64...) -> UInt64 {
        parts.reduce(0x5EED_0F5B_A26E_0001) { mix($0 ^ mix($1 &+ 0x9E37_79B9_7F4A_7C15)) }
    }

    /// An approximately standard normal value: the sum of four uniform 16-bit pieces of one hash
    /// (Irwin–Hall, n = 4), centred and scaled to variance 1. Its tails stop at ±√12 ≈ 3.46; that is
    /// plenty for synthetic inputs and costs one hash instead of a logarithm and a cosine.
    @inline(__always)
    static func normal(_ key: UInt64, _ index: UInt64) -> Float {
        let h = mix(key &+ index &* 0x9E37_79B9_7F4A_7C15)
        let sum = (h & 0xffff) + ((h >> 16) & 0xffff) + ((h >> 32) & 0xffff) + (h >> 48)
        // sum / 65536 has mean ≈ 2 and variance 1/3
        return (Float(Int64(sum) - 131_070) * (1 / 65536)) * 1.732_050_8
    }

    /// A uniform value in [0, 1).
    @inline(__always)
    static func uniform(_ key: UInt64, _ index: UInt64) -> Float {
        Float(mix(key &+ index &* 0x9E37_79B9_7F4A_7C15) >> 40) * 0x1p-24
    }

    /// A uniform integer in `0..<n`.
    @inline(__always)
    static func below(_ n: Int, _ key: UInt64, _ index: UInt64) -> Int {
        Int(mix(key &+ index &* 0x9E37_79B9_7F4A_7C15) % UInt64(n))
    }

    /// `count` normal values of stream `key` at indices `first ..< first + count`, into `out`, times `scale`.
    @inline(__always)
    static func fillNormal(_ out: UnsafeMutablePointer<Float>, count: Int, key: UInt64, first: UInt64,
                           scale: Float) {
        for i in 0..<count { out[i] = normal(key, first &+ UInt64(i)) * scale }
    }
}

/// Purpose tags for `Noise.key`, so that streams never share keys.
enum NoiseTag: UInt64 {
    case queryNoise = 1, keyNoise, valueNoise, topic, segment, segmentTopic, anchor, keyBias, headWeights,
         videoFrequency, videoMixKey, videoMixQuery, videoMixValue, random, segmentStart
}
