import CSpargeKernels
import Dispatch

extension BlockSummaries {
    /// Summarizes rows `rows` of `x` (every head) as consecutive blocks of `blockSize` rows.
    ///
    /// `rows` must start at a block boundary; only its last block may be partial, and it must then be the
    /// global last block. `mean` (`[heads][dim]`, e.g. ``KeyMean/mean()``) is subtracted from every row first, in
    /// Float as the reference's `k - km`.
    ///
    /// - Parameters:
    ///   - firstBlock: global index of the block that starts at `rows.lowerBound`.
    ///   - threshold: θ (`SpargeConfig.simThreshold`), taken as the decimal it was written as (see
    ///     ``MaskPredictor``), so that θ = 0.3 means 0.3 and not `Double(Float(0.3))`.
    public static func summarize(
        _ x: Tensor3, rows: Range<Int>, firstBlock: Int, blockSize: Int, threshold: Float,
        subtracting mean: [Float]? = nil
    ) -> BlockSummaries {
        precondition(rows.lowerBound >= 0 && rows.upperBound <= x.rows, "summarize: rows \(rows) outside 0..<\(x.rows)")
        return x.data.withUnsafeBufferPointer { buf in
            summarize(base: buf.baseAddress! + rows.lowerBound * x.dim, heads: x.heads, rows: rows.count,
                      dim: x.dim, headStride: x.rows * x.dim, firstBlock: firstBlock, blockSize: blockSize,
                      threshold: threshold, subtracting: mean)
        }
    }

    /// Summarizes `rows` rows of `heads` heads at `base` (row `r` of head `h` at `base + h·headStride + r·dim`).
    public static func summarize(
        base: UnsafePointer<Float>, heads: Int, rows: Int, dim: Int, headStride: Int, firstBlock: Int,
        blockSize: Int, threshold: Float, subtracting mean: [Float]? = nil
    ) -> BlockSummaries {
        precondition(blockSize > 0 && dim > 0 && rows >= 0, "summarize: bad shape")
        precondition(mean == nil || mean!.count == heads * dim, "summarize: mean must be [heads][dim]")
        let count = (rows + blockSize - 1) / blockSize
        let theta = decimalValue(threshold)
        var means = [Float](repeating: 0, count: heads * count * dim)
        var flags = [UInt8](repeating: 0, count: heads * count)
        let m = mean ?? [Float](repeating: 0, count: heads * dim)
        means.withUnsafeMutableBufferPointer { meansOut in
            flags.withUnsafeMutableBufferPointer { flagsOut in
                m.withUnsafeBufferPointer { mp in
                    let (mo, fo, mb) = (meansOut.baseAddress!, flagsOut.baseAddress!, mp.baseAddress!)
                    let jobs = heads * count
                    // Work items are (head, chunk of blocks); a scratch of 2·dim Doubles per item.
                    let chunk = max(1, min(count, 16))
                    let chunksPerHead = (count + chunk - 1) / chunk
                    HostParallelism.forEach(jobs == 0 ? 0 : heads * chunksPerHead) { item in
                        let h = item / chunksPerHead
                        let b0 = (item % chunksPerHead) * chunk
                        let scratch = UnsafeMutablePointer<Double>.allocate(capacity: 2 * dim)
                        defer { scratch.deallocate() }
                        for b in b0..<min(count, b0 + chunk) {
                            let r0 = b * blockSize
                            let n = min(rows, r0 + blockSize) - r0
                            let s = summarizeBlockInVectors(
                                base + h * headStride + r0 * dim, n, dim, mb + h * dim, mo + (h * count + b) * dim,
                                scratch, n == blockSize ? 1 : 0)
                            fo[h * count + b] = (n == blockSize && s > theta) ? 1 : 0
                        }
                    }
                }
            }
        }
        return BlockSummaries(heads: heads, dim: dim, blockSize: blockSize, firstBlock: firstBlock, count: count,
                              means: means, flags: flags)
    }

    /// θ as the Double the self-similarity is compared with (`s > θ`): the decimal it was written as.
    public static func thresholdValue(_ threshold: Float) -> Double { decimalValue(threshold) }

    /// The self-similarity `‖Σ_r x_r·(1/‖x_r‖)‖² / n²` of `rows` rows of `dim` values, in Double.
    ///
    /// 1 for identical (non-zero) rows, `1/n` for mutually orthogonal rows; NaN when a row is zero (as the
    /// reference: 0/0), so that `s > θ` is false.
    public static func selfSimilarity(_ x: UnsafeBufferPointer<Float>, rows: Int, dim: Int) -> Double {
        precondition(x.count >= rows * dim, "selfSimilarity: buffer too small")
        let zeros = [Float](repeating: 0, count: dim)
        let scratch = UnsafeMutablePointer<Double>.allocate(capacity: 2 * dim)
        let row = UnsafeMutablePointer<Double>.allocate(capacity: dim)
        let out = UnsafeMutablePointer<Float>.allocate(capacity: dim)
        defer { scratch.deallocate(); row.deallocate(); out.deallocate() }
        return zeros.withUnsafeBufferPointer { z in
            summarizeBlock(x.baseAddress!, rows: rows, dim: dim, mean: z.baseAddress!, meanOut: out,
                           scratch: scratch, row: row, needSimilarity: true)
        }
    }

    /// `summarizeBlock` in vectors (C, block_summaries.h): the same bits, several times faster; this CPU's
    /// kernel set (every set gives the same bits).
    static let summarizeBlockInVectors = CPUISA.detected.kernels.summarizeBlock!

    /// Mean (to `meanOut`) and self-similarity (returned; 0 when not needed) of one block: the plain
    /// reference of `summarizeBlockInVectors`, which `summarize` runs (and the GPU's mask kernels repeat).
    @inline(__always)
    static func summarizeBlock(
        _ x: UnsafePointer<Float>, rows n: Int, dim d: Int, mean: UnsafePointer<Float>,
        meanOut: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Double>,
        row: UnsafeMutablePointer<Double>, needSimilarity: Bool
    ) -> Double {
        let sum = scratch, dir = scratch + d
        sum.initialize(repeating: 0, count: d)
        dir.initialize(repeating: 0, count: d)
        var zeroRow = false
        for r in 0..<n {
            let xr = x + r * d
            // Float subtraction first (the reference's `k - km`), then Double.
            var q0 = 0.0, q1 = 0.0, q2 = 0.0, q3 = 0.0
            var j = 0
            while j + 4 <= d {
                let a0 = Double(xr[j] - mean[j]), a1 = Double(xr[j + 1] - mean[j + 1])
                let a2 = Double(xr[j + 2] - mean[j + 2]), a3 = Double(xr[j + 3] - mean[j + 3])
                row[j] = a0; row[j + 1] = a1; row[j + 2] = a2; row[j + 3] = a3
                q0 += a0 * a0; q1 += a1 * a1; q2 += a2 * a2; q3 += a3 * a3
                j += 4
            }
            while j < d { let a = Double(xr[j] - mean[j]); row[j] = a; q0 += a * a; j += 1 }
            for j in 0..<d { sum[j] += row[j] }
            guard needSimilarity else { continue }
            let norm = ((q0 + q1) + (q2 + q3)).squareRoot()
            if norm == 0 { zeroRow = true; continue }
            // One division a row: each value is multiplied by the norm's reciprocal (rounded once).
            let unit = 1 / norm
            for j in 0..<d { dir[j] += row[j] * unit }
        }
        let nd = Double(n)
        for j in 0..<d { meanOut[j] = Float(sum[j] / nd) }
        guard needSimilarity else { return 0 }
        if zeroRow { return .nan }
        var q = 0.0
        for j in 0..<d { q += dir[j] * dir[j] }
        let norm = q.squareRoot()
        return norm * norm / (nd * nd)
    }
}

/// The Double a Float parameter was written as: the shortest decimal that reads back as the same Float.
///
/// Configurations are written in decimal (θ = 0.3, topk = 0.7) and the reference compares with Python
/// floats, i.e. the Double nearest to that decimal. `Double(Float(0.7)) · 10 = 6.99999988…` would keep 6 of
/// 10 blocks where the reference keeps 7; reading the decimal back avoids that.
@usableFromInline
func decimalValue(_ x: Float) -> Double {
    guard x.isFinite else { return Double(x) }
    return Double(x.description) ?? Double(x)
}
