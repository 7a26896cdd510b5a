import Foundation
import SpargeKernels

/// A small deterministic generator (SplitMix64), so that a failing seed can be replayed.
public struct SeededGenerator: RandomNumberGenerator {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A standard normal draw (Box–Muller).
    public mutating func normal() -> Float {
        let u1 = Double.random(in: Double.ulpOfOne..<1, using: &self)
        let u2 = Double.random(in: 0..<1, using: &self)
        return Float((-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2))
    }
}

extension Tensor3 {
    /// A tensor of i.i.d. N(0, 1) · `scale` + `shift` values drawn from `generator`.
    public static func random(heads: Int, rows: Int, dim: Int, scale: Float = 1, shift: Float = 0,
                              using generator: inout SeededGenerator) -> Tensor3 {
        var t = Tensor3(heads: heads, rows: rows, dim: dim)
        for i in t.data.indices { t.data[i] = generator.normal() * scale + shift }
        return t
    }
}
