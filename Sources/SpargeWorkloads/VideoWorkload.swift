import SpargeKernels
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The T×H×W token grid of a video workload, flattened row-major (`p = (t·H + y)·W + x`).
public struct VideoGrid: Sendable, Equatable, CustomStringConvertible {
    public var frames: Int
    public var height: Int
    public var width: Int

    public init(frames: Int, height: Int, width: Int) {
        (self.frames, self.height, self.width) = (frames, height, width)
    }

    public var description: String { "\(frames)×\(height)×\(width)" }

    /// A grid of exactly `n` tokens: at least 8 frames (when `n` allows), frames as large as possible, each
    /// frame as square as its size allows (`height ≤ width`).
    ///
    /// With awkward factors frames degrade: `n = 8·p` for a prime `p` gives 8 frames of 1×p (rows), and a
    /// prime `n` gives `n` frames of 1×1, a purely temporal 1-D signal. Pass an explicit grid to avoid that.
    public static func `default`(for n: Int) -> VideoGrid {
        precondition(n > 0)
        var frame = 1
        var i = 1
        while i * i <= n {
            if n % i == 0 {
                for f in [i, n / i] where f <= n / 8 && f > frame { frame = f }
            }
            i += 1
        }
        var height = 1
        var h = 1
        while h * h <= frame {
            if frame % h == 0 { height = h }
            h += 1
        }
        return VideoGrid(frames: n / frame, height: height, width: frame / height)
    }
}

/// Synthetic video-DiT attention inputs: smooth fields on a T×H×W grid.
///
/// Each token gets random Fourier features of its grid position, `cos` and `sin` of
/// `ω_t·t + ω_y·y + ω_x·x + φ` for ``waves`` low-frequency waves (|ω| ≤ 0.2 rad per token across,
/// ≤ 0.4 per frame; per token, not per frame side, so that neighbours are alike on any grid size), mixed
/// into D dims by a per-head matrix; queries use the key matrix plus a small per-head
/// perturbation. Then `q·k'` is a sum of `cos(Δphase)`: largest for tokens near in space and time, so
/// attention is local in 3-D but not in the flattened order (a row's neighbours one row or one frame away
/// are `W` or `H·W` positions apart), which is what the Hilbert order is for. Peak score ≈ 8 after `1/√D`;
/// plus small noise and, on keys, a shared bias.
struct VideoWorkload: WorkloadModel {
    static let waves = 8
    let shape: WorkloadShape
    let seed: UInt64
    let grid: VideoGrid
    /// Per wave: ω_t, ω_y, ω_x, φ.
    let frequencies: [Double]
    let scale: Float

    init(shape: WorkloadShape, seed: UInt64, grid: VideoGrid) {
        self.shape = shape
        self.seed = seed
        self.grid = grid
        let key = Noise.key(seed, NoiseTag.videoFrequency.rawValue)
        var f: [Double] = []
        for j in 0..<Self.waves {
            let u = (0..<4).map { Double(Noise.uniform(key, UInt64(4 * j + $0))) }
            f += [0.4 * (2 * u[0] - 1), 0.2 * (2 * u[1] - 1), 0.2 * (2 * u[2] - 1), 2 * Double.pi * u[3]]
        }
        frequencies = f
        // peak q·k/√D = scale² · D · waves / √D = 8
        scale = (8 / (Float(shape.headDim).squareRoot() * Float(Self.waves))).squareRoot()
    }

    func fill(_ tensor: WorkloadTensor, head: Int, rows: Range<Int>, into out: UnsafeMutablePointer<Float>) {
        let d = shape.headDim, features = 2 * Self.waves
        let kvHead = tensor == .query ? head / (shape.queryHeads / shape.kvHeads) : head
        // mixing matrix [features, D]
        var mix = [Float](repeating: 0, count: features * d)
        let baseKey = Noise.key(seed, (tensor == .value ? NoiseTag.videoMixValue : NoiseTag.videoMixKey).rawValue,
                                UInt64(kvHead))
        for i in 0..<features * d { mix[i] = scale * Noise.normal(baseKey, UInt64(i)) }
        if tensor == .query {
            let perturbKey = Noise.key(seed, NoiseTag.videoMixQuery.rawValue, UInt64(head))
            for i in 0..<features * d { mix[i] += 0.3 * scale * Noise.normal(perturbKey, UInt64(i)) }
        }
        var bias = [Float](repeating: 0, count: d)
        if tensor == .key {
            let biasKey = Noise.key(seed, NoiseTag.keyBias.rawValue, UInt64(kvHead))
            for j in 0..<d { bias[j] = 0.5 * Noise.normal(biasKey, UInt64(j)) }
        }
        let noiseTag: NoiseTag = tensor == .query ? .queryNoise : tensor == .key ? .keyNoise : .valueNoise
        let noiseKey = Noise.key(seed, noiseTag.rawValue, UInt64(head))
        let noise: Float = tensor == .value ? 0.3 : 0.2
        var feature = [Float](repeating: 0, count: features)
        mix.withUnsafeBufferPointer { mix in
        feature.withUnsafeMutableBufferPointer { feature in
            for p in rows {
                let x = p % grid.width, y = (p / grid.width) % grid.height, t = p / (grid.width * grid.height)
                for j in 0..<Self.waves {
                    let phase = frequencies[4 * j] * Double(t) + frequencies[4 * j + 1] * Double(y)
                        + frequencies[4 * j + 2] * Double(x) + frequencies[4 * j + 3]
                    feature[2 * j] = Float(cos(phase))
                    feature[2 * j + 1] = Float(sin(phase))
                }
                let row = out + (p - rows.lowerBound) * d
                Noise.fillNormal(row, count: d, key: noiseKey, first: UInt64(p * d), scale: noise)
                for c in 0..<d { row[c] += bias[c] }
                for f in 0..<features {
                    let w = feature[f]
                    let m = mix.baseAddress! + f * d
                    for c in 0..<d { row[c] += w * m[c] }
                }
            }
        }
        }
    }
}
