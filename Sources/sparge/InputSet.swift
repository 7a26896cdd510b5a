import SpargeCUDA
import SpargeFormats
import SpargeRing

/// The Q, K and V files of `run` and `verify`, opened and checked against each other.
struct InputSet {
    let q: TensorSource, k: TensorSource, v: TensorSource
    let queryHeads: Int, kvHeads: Int, seqLen: Int, headDim: Int

    /// Opens `--q`, `--k`, `--v` in `layout`; every disagreement names the files, tensors and shapes.
    init(q qSpec: String, k kSpec: String, v vSpec: String, layout: TensorLayout) throws {
        q = try InputError.naming("Q") { try TensorSource(spec: qSpec, layout: layout) }
        k = try InputError.naming("K") { try TensorSource(spec: kSpec, layout: layout) }
        v = try InputError.naming("V") { try TensorSource(spec: vSpec, layout: layout) }
        let (qs, ks) = (q.shape, k.shape)
        guard qs.seqLen > 0, qs.headDim > 0, qs.heads > 0 else {
            throw FormatError(path: q.path, "Q: empty tensor of shape \(qs)")
        }
        guard ks.heads > 0 else {
            throw FormatError(path: k.path, "K\(k.tensorName.map { " (tensor '\($0)')" } ?? ""): no heads in shape \(ks) = \(k.fileShape)")
        }
        try k.expect(TensorShape(heads: ks.heads, seqLen: qs.seqLen, headDim: qs.headDim), role: "K (against Q \(q.label) \(qs))")
        try v.expect(ks, role: "V (against K \(k.label) \(ks))")
        guard qs.heads % ks.heads == 0 else {
            throw FormatError(path: k.path, "K has \(ks.heads) heads, which do not divide Q's \(qs.heads) (\(q.label) \(qs)): "
                + "grouped-query attention needs Hq to be a multiple of Hkv")
        }
        queryHeads = qs.heads
        kvHeads = ks.heads
        seqLen = qs.seqLen
        headDim = qs.headDim
    }

    /// Rows `ranges` of Q, K and V as `[H, Σ count, D]` tensors.
    func read(_ ranges: [Range<Int>]) throws -> (q: Tensor3, k: Tensor3, v: Tensor3) {
        let rows = ranges.reduce(0) { $0 + $1.count }
        return (Tensor3(heads: queryHeads, rows: rows, dim: headDim, data: try InputError.naming("Q") { try q.readRows(ranges) }),
                Tensor3(heads: kvHeads, rows: rows, dim: headDim, data: try InputError.naming("K") { try k.readRows(ranges) }),
                Tensor3(heads: kvHeads, rows: rows, dim: headDim, data: try InputError.naming("V") { try v.readRows(ranges) }))
    }
}

extension InputSet {
    /// Rows `ranges` of Q, K and V as `[H, Σ count, D]` f32 tensors on `device`, read from the files in pinned
    /// chunks (no host copy of a whole tensor).
    func read(_ ranges: [Range<Int>], onto device: CUDADevice) throws -> (q: Tensor, k: Tensor, v: Tensor) {
        let rows = ranges.reduce(0) { $0 + $1.count }
        func load(_ source: TensorSource, heads: Int, _ role: String) throws -> Tensor {
            try InputError.naming(role) {
                try device.tensor(heads: heads, rows: rows, dim: headDim) { local, chunk in
                    try source.readRows(ranges.slice(local), into: chunk)
                }
            }
        }
        return (try load(q, heads: queryHeads, "Q"), try load(k, heads: kvHeads, "K"), try load(v, heads: kvHeads, "V"))
    }
}

/// An error about one input, with the tensor it is (Q, K or V) in front: a file's own messages can only
/// say "the array", and the same file may be given for several inputs.
struct InputError: Error, CustomStringConvertible {
    let role: String
    let underlying: Error
    var description: String { "\(role): \(underlying)" }

    static func naming<T>(_ role: String, _ body: () throws -> T) throws -> T {
        do { return try body() } catch { throw InputError(role: role, underlying: error) }
    }
}

extension Array where Element == Int {
    /// Consecutive runs of these indices as ranges, in order: `[4, 5, 6, 9]` → `[4..<7, 9..<10]`.
    var runs: [Range<Int>] {
        var out: [Range<Int>] = []
        for i in self {
            if let last = out.last, last.upperBound == i { out[out.count - 1] = last.lowerBound..<(i + 1) } else { out.append(i..<(i + 1)) }
        }
        return out
    }
}
