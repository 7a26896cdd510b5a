import CSpargeKernels
import Dispatch

/// Per-kv-head sums of K over a run of rows, and the K mean that smooths K before pooling (DESIGN.md §1.1).
///
/// The sums are Double so that ranks can add their partial sums (an allreduce of `heads · dim` doubles and
/// one row count) and then call ``mean()``. The mean is computed as the reference does: the Double sum
/// divided by the row count, rounded to Float once.
///
/// Exactness across rank counts and backends: a GPU sums in the same order (``chunkRows``), so one process
/// gets the same Doubles on either. Across rank counts: Double addition is not associative, so the sums of
/// a run split across ranks may differ from the one-process sums in the last Double bit. The Float mean then differs only when
/// the exact mean lies within about 2⁻⁵³ (relative) of a point halfway between two Floats — for Gaussian-like
/// data roughly once in 10⁹ head·dim values; we accept that rather than carry an exact accumulator.
public struct KeyMean: Sendable, Equatable {
    /// Kv heads.
    public let heads: Int
    /// Head dimension `D`.
    public let dim: Int
    /// `[heads][dim]` sums of the rows seen so far.
    public var sums: [Double]
    /// Rows summed (the same for every head).
    public var rowCount: Int

    /// Zero sums over zero rows.
    public init(heads: Int, dim: Int) {
        self.init(heads: heads, dim: dim, sums: [Double](repeating: 0, count: heads * dim), rowCount: 0)
    }

    /// Given sums (`[heads][dim]`, e.g. after an allreduce) over `rowCount` rows.
    public init(heads: Int, dim: Int, sums: [Double], rowCount: Int) {
        precondition(sums.count == heads * dim, "KeyMean: \(sums.count) sums for \(heads) heads × \(dim)")
        precondition(rowCount >= 0, "KeyMean: negative row count")
        self.heads = heads
        self.dim = dim
        self.sums = sums
        self.rowCount = rowCount
    }

    /// The sums of rows `rows` of `k` (every head), e.g. a rank's own shard.
    public init(summing k: Tensor3, rows: Range<Int>) {
        precondition(rows.lowerBound >= 0 && rows.upperBound <= k.rows, "KeyMean: rows \(rows) outside 0..<\(k.rows)")
        self.init(heads: k.heads, dim: k.dim)
        let (d, n) = (k.dim, k.rows)
        // Work items are (head, chunk of rows): each reads its chunk's whole rows, one after the other, and
        // sums every column from zero, row by row. The chunk sums are then added in order: the order of
        // `chunkRows`, so the sums do not depend on how the work is split.
        let chunks = (rows.count + KeyMean.chunkRows - 1) / KeyMean.chunkRows
        guard chunks > 0, d > 0 else { rowCount = rows.count; return }
        var chunkSums = [Double](repeating: 0, count: k.heads * chunks * d)
        chunkSums.withUnsafeMutableBufferPointer { c in
            k.data.withUnsafeBufferPointer { x in
                let (cp, xp) = (c.baseAddress!, x.baseAddress!)
                HostParallelism.forEach(k.heads * chunks) { item in
                    let (h, chunk) = (item / chunks, item % chunks)
                    let first = rows.lowerBound + chunk * KeyMean.chunkRows
                    let count = min(rows.upperBound, first + KeyMean.chunkRows) - first
                    sparge_key_column_sums(xp + (h * n + first) * d, count, d, cp + item * d)
                }
            }
        }
        for h in 0..<k.heads {
            for chunk in 0..<chunks {
                let partial = (h * chunks + chunk) * d
                for j in 0..<d { sums[h * d + j] += chunkSums[partial + j] }
            }
        }
        rowCount = rows.count
    }

    /// The summation order of ``init(summing:rows:)``, which a device repeats to get the same Doubles: each
    /// column is summed over consecutive chunks of this many rows (counted from the run's first row), each
    /// chunk row by row from zero, and the chunk sums are added in order.
    public static let chunkRows = 256

    /// The definition of one work item's sums (the scalar twin of `sparge_key_column_sums`, which computes
    /// them): `sums[j]` is column j of `rows` rows of `dim` at `x`, summed from zero in row order.
    static func columnSumsTwin(_ x: UnsafePointer<Float>, rows: Int, dim: Int,
                               into sums: UnsafeMutablePointer<Double>) {
        for j in 0..<dim { sums[j] = 0 }
        for r in 0..<rows {
            for j in 0..<dim { sums[j] += Double(x[r * dim + j]) }
        }
    }

    /// Adds another run's sums (the local form of the allreduce).
    public mutating func add(_ other: KeyMean) {
        precondition(other.heads == heads && other.dim == dim, "KeyMean: adding sums of another shape")
        for i in sums.indices { sums[i] += other.sums[i] }
        rowCount += other.rowCount
    }

    /// `[heads][dim]` mean, `Float(sum / rowCount)`; all zeros when no row was summed.
    public func mean() -> [Float] {
        guard rowCount > 0 else { return [Float](repeating: 0, count: sums.count) }
        let n = Double(rowCount)
        return sums.map { Float($0 / n) }
    }
}
