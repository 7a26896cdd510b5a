import SpargeKernels
import Dispatch

/// A synthetic attention input, generated per rank for its own rows only.
///
/// Every value is a pure function of (seed, shape, head, global position, column), so a rank that
/// generates rows `a..<b` gets exactly the values a single process would hold in those rows, whatever the
/// number of ranks or the way the rows are split (contiguous, zigzag).
public enum Workload: String, Sendable, CaseIterable {
    /// Long-context LLM attention: a local band, sink tokens, far recurring topics (see ``LLMWorkload``).
    case llm
    /// Video-DiT attention: smooth fields on a T×H×W grid (see ``VideoWorkload``).
    case video
    /// i.i.d. Gaussian: near-uniform attention, the worst case for any sparse method.
    case random
}

/// Which of the three attention inputs.
public enum WorkloadTensor: String, Sendable, CaseIterable {
    case query, key, value
}

/// The shapes of a workload: `Q [queryHeads, seqLen, headDim]`, `K, V [kvHeads, seqLen, headDim]`.
public struct WorkloadShape: Sendable, Equatable {
    public var queryHeads: Int
    public var kvHeads: Int
    public var seqLen: Int
    public var headDim: Int

    public init(queryHeads: Int, kvHeads: Int, seqLen: Int, headDim: Int) {
        self.queryHeads = queryHeads
        self.kvHeads = kvHeads
        self.seqLen = seqLen
        self.headDim = headDim
    }

    /// Heads of `tensor`.
    public func heads(_ tensor: WorkloadTensor) -> Int { tensor == .query ? queryHeads : kvHeads }
}

/// A workload that cannot be generated as asked.
public struct WorkloadError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Fills rows of one head of one tensor; the models of the three workloads conform.
protocol WorkloadModel: Sendable {
    /// Writes rows `rows` (global positions) of `head` of `tensor`, `rows.count × headDim` floats, to `out`.
    func fill(_ tensor: WorkloadTensor, head: Int, rows: Range<Int>, into out: UnsafeMutablePointer<Float>)
}

/// Generates Q, K and V rows of a ``Workload`` for any set of global row ranges.
public struct WorkloadGenerator: Sendable {
    public let workload: Workload
    public let shape: WorkloadShape
    public let seed: UInt64
    private let model: any WorkloadModel

    /// Rows generated per task when work is spread over threads.
    static let rowsPerTask = 2048

    /// A generator; throws a `WorkloadError` for shapes that cannot work.
    ///
    /// - Parameters:
    ///   - videoGrid: the T×H×W grid of `.video` (default ``VideoGrid/default(for:)``); ignored otherwise.
    public init(_ workload: Workload, shape: WorkloadShape, seed: UInt64, videoGrid: VideoGrid? = nil) throws {
        guard shape.queryHeads > 0, shape.kvHeads > 0, shape.seqLen > 0, shape.headDim > 0 else {
            throw WorkloadError("workload shape must be positive: Hq=\(shape.queryHeads), Hkv=\(shape.kvHeads), "
                + "N=\(shape.seqLen), D=\(shape.headDim)")
        }
        guard shape.queryHeads % shape.kvHeads == 0 else {
            throw WorkloadError("Hq=\(shape.queryHeads) is not a multiple of Hkv=\(shape.kvHeads)")
        }
        self.workload = workload
        self.shape = shape
        self.seed = seed
        switch workload {
        case .llm:
            guard shape.headDim >= 8, shape.headDim % 4 == 0 else {
                throw WorkloadError("llm needs a head dimension that is a multiple of 4 and at least 8, not \(shape.headDim)")
            }
            model = LLMWorkload(shape: shape, seed: seed)
        case .video:
            let grid = videoGrid ?? .default(for: shape.seqLen)
            guard grid.frames * grid.height * grid.width == shape.seqLen else {
                throw WorkloadError("video grid \(grid) holds \(grid.frames * grid.height * grid.width) tokens, "
                    + "not N=\(shape.seqLen)")
            }
            model = VideoWorkload(shape: shape, seed: seed, grid: grid)
        case .random:
            model = RandomWorkload(shape: shape, seed: seed)
        }
    }

    /// Rows `ranges` of `tensor`, concatenated in the order given: `[heads, Σ count, headDim]`.
    public func generate(_ tensor: WorkloadTensor, rows ranges: [Range<Int>]) -> Tensor3 {
        for r in ranges {
            precondition(r.lowerBound >= 0 && r.upperBound <= shape.seqLen,
                         "rows \(r) outside a sequence of \(shape.seqLen)")
        }
        let heads = shape.heads(tensor), d = shape.headDim
        let total = ranges.reduce(0) { $0 + $1.count }
        var out = Tensor3(heads: heads, rows: total, dim: d)
        // Tasks: (head, global rows, first output row), at most rowsPerTask rows each.
        var tasks: [(head: Int, rows: Range<Int>, row0: Int)] = []
        for h in 0..<heads {
            var row0 = 0
            for r in ranges {
                for start in stride(from: r.lowerBound, to: r.upperBound, by: Self.rowsPerTask) {
                    let end = min(start + Self.rowsPerTask, r.upperBound)
                    tasks.append((h, start..<end, row0 + start - r.lowerBound))
                }
                row0 += r.count
            }
        }
        let model = self.model
        out.data.withUnsafeMutableBufferPointer { buffer in
            let base = buffer.baseAddress!
            DispatchQueue.concurrentPerform(iterations: tasks.count) { i in
                let t = tasks[i]
                model.fill(tensor, head: t.head, rows: t.rows, into: base + (t.head * total + t.row0) * d)
            }
        }
        return out
    }

    /// Rows `ranges` of Q, K and V.
    public func generate(rows ranges: [Range<Int>]) -> (q: Tensor3, k: Tensor3, v: Tensor3) {
        (generate(.query, rows: ranges), generate(.key, rows: ranges), generate(.value, rows: ranges))
    }
}
