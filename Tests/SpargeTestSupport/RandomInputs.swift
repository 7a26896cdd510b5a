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

extension Tensor3 {
    /// Rows that share one random direction per run of `run` rows plus i.i.d. noise of size `noise`: block
    /// means then carry real information and blocks are self-similar (pairwise cosine ≈ 1/(1 + noise²)),
    /// also after the K mean is subtracted, as in real attention inputs.
    public static func blockStructured(heads: Int, rows: Int, dim: Int, run: Int = 64, noise: Float = 0.6,
                                       using generator: inout SeededGenerator) -> Tensor3 {
        var t = Tensor3(heads: heads, rows: rows, dim: dim)
        for h in 0..<heads {
            var shared = [Float](repeating: 0, count: dim)
            for r in 0..<rows {
                if r % run == 0 { for d in 0..<dim { shared[d] = generator.normal() } }
                for d in 0..<dim { t[h, r, d] = shared[d] + noise * generator.normal() }
            }
        }
        return t
    }
}

extension Tensor3 {
    /// Queries or keys whose rows in each segment of `segment` tokens share that segment's direction, the
    /// same for Q and K (query head `h` uses the directions of kv head `h / (heads / kvHeads)`), plus noise:
    /// every query attends mostly to the keys of its own segment, so masks are local and sparse, and so is
    /// what the ring must move. Directions are a pure function of (`seed`, kv head, segment).
    public static func segmented(heads: Int, kvHeads: Int, rows: Int, dim: Int, segment: Int = 256,
                                 noise: Float = 0.5, seed: UInt64, using generator: inout SeededGenerator) -> Tensor3 {
        var t = Tensor3(heads: heads, rows: rows, dim: dim)
        let group = heads / kvHeads
        for h in 0..<heads {
            var direction = [Float](repeating: 0, count: dim)
            for r in 0..<rows {
                if r % segment == 0 {
                    var g = SeededGenerator(seed: seed &* 1_000_003 &+ UInt64(h / group) &* 7919 &+ UInt64(r / segment))
                    for d in 0..<dim { direction[d] = 2 * g.normal() }
                }
                for d in 0..<dim { t[h, r, d] = direction[d] + noise * generator.normal() }
            }
        }
        return t
    }
}

/// Relative L1 error `Σ|o − ref| / Σ|ref|` (the project's normalised error measure, DESIGN.md §1): the
/// library's `ErrorMetrics`, for two Float arrays.
public func relativeL1(_ o: [Float], _ ref: [Float]) -> Double {
    precondition(o.count == ref.count, "relativeL1: \(o.count) values against \(ref.count)")
    return ErrorMetrics(output: o, reference: ref.map(Double.init)).relativeL1
}
