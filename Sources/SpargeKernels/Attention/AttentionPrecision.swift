/// What a precision name (`--precision`) means, for every backend: the element type Q, K and V are rounded
/// to before the products, and what the products accumulate in. A backend realises a precision its own way
/// (the CPU widens 16-bit values to fp32 where it has no 16-bit products; the GPU's tensor cores multiply
/// 16-bit values) but always on the same rounded inputs, so the error a precision costs is the rounding of
/// the inputs plus the backend's accumulation, and a Double reference on the rounded inputs sees what the
/// backend sees.
///
/// Rounding is to nearest, ties to even (`StorageFormat.rounded`). The mask is predicted from the inputs as
/// given, whatever the precision: the same mask on every backend and in every precision.
public enum AttentionPrecision: String, CaseIterable, Sendable {
    /// Q, K, V as given; products and accumulation in fp32. The CPU's default: exact up to fp32 rounding
    /// (a few 1e-7 relative L1 against a Double reference).
    case fp32
    /// Q, K, V rounded to bfloat16 (8 significant bits, fp32's range), accumulation in fp32: about 3e-3
    /// relative L1 on the test inputs, all of it the rounding of the inputs to first order. The GPU's default.
    case bf16
    /// Q, K, V rounded to fp16 (11 significant bits; beyond ±65504 the GPU refuses the input), accumulation
    /// in fp32.
    case fp16
    /// SageAttention's recipe for Q·Kᵀ: Q quantized to int8 with one scale per row (`max|q| / 127`; one per
    /// 64-row tile cost MiniLM 1.06e-2 relative L1), K smoothed by the mean of its key block and quantized
    /// with one scale per block
    /// (the mean is added back, so the scores are those of the int8 product plus `q·mean`, exactly what a
    /// smoothed int8 kernel computes); V rounded to bf16; accumulation in fp32. The CPU computes on the
    /// dequantized values (no int8 instructions yet: the error of int8, the speed of fp32).
    case int8

    /// The type Q, K, V are rounded to, value by value; nil for fp32 (no rounding) and int8 (rounding by
    /// blocks, `quantizeQueries` and `roundBlock`).
    public var inputFormat: StorageFormat? {
        switch self {
        case .fp32, .int8: nil
        case .bf16: .bf16
        case .fp16: .f16
        }
    }

    /// `tensor` with every value rounded as this precision rounds its inputs value by value (unchanged for
    /// fp32 and int8).
    public func rounded(_ tensor: Tensor3) -> Tensor3 { inputFormat.map { tensor.rounded(to: $0) } ?? tensor }

    /// Rounds `rows` query rows of one compute tile (`rows × dim`, in place) as this precision's products
    /// see them (int8: a scale per row, so the tile only bounds where the rows are).
    func roundQueries(_ q: UnsafeMutablePointer<Float>, rows: Int, dim: Int) {
        if self == .int8 {
            for r in 0..<rows { Self.quantize(q + r * dim, count: dim, mean: nil, dim: dim) }
        } else if let format = inputFormat {
            for i in 0..<(rows * dim) { q[i] = format.rounded(q[i]) }
        }
    }

    /// Rounds one key block and its value block (`rows × dim` each, in place) as this precision's products
    /// see them.
    func roundBlock(keys: UnsafeMutablePointer<Float>, values: UnsafeMutablePointer<Float>, rows: Int, dim: Int) {
        if self == .int8 {
            var mean = [Float](repeating: 0, count: dim)
            for r in 0..<rows { for i in 0..<dim { mean[i] += keys[r * dim + i] } }
            for i in 0..<dim { mean[i] /= Float(rows) }
            mean.withUnsafeBufferPointer { Self.quantize(keys, count: rows * dim, mean: $0.baseAddress!, dim: dim) }
            for i in 0..<(rows * dim) { values[i] = StorageFormat.bf16.rounded(values[i]) }
        } else if let format = inputFormat {
            for i in 0..<(rows * dim) {
                keys[i] = format.rounded(keys[i])
                values[i] = format.rounded(values[i])
            }
        }
    }

    /// `x ← mean + s·round((x − mean) / s)` with `s = max|x − mean| / 127` over the `count` values (rows of
    /// `dim`): the int8 value, dequantized. All zeros stay zeros.
    static func quantize(_ x: UnsafeMutablePointer<Float>, count: Int, mean: UnsafePointer<Float>?, dim: Int) {
        var largest: Float = 0
        for i in 0..<count { largest = Swift.max(largest, abs(x[i] - (mean?[i % dim] ?? 0))) }
        guard largest > 0 else { return }
        let scale = largest / 127
        for i in 0..<count {
            let m = mean?[i % dim] ?? 0
            x[i] = m + scale * ((x[i] - m) / scale).rounded(.toNearestOrEven)
        }
    }
}
