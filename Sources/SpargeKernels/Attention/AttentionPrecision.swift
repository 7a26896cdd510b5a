import CSpargeKernels

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
    ///
    /// Exactly: scores are Σ bf16(q)·bf16(k) summed in fp32 (each product is exact in fp32), times
    /// `scale·log2(e)`; p = 2^(score − m) in fp32 (the online softmax); the row sums add p as computed.
    /// Where P·V runs on bf16 products — AVX512-BF16 dot products and AMX tiles (`TileProducts.bf16Tiles`, D
    /// a multiple of 32) and the GPU's tensor cores — P is rounded to bf16 too (ties to even; there a p below
    /// 2⁻¹²⁶ becomes 0), so O sums bf16(p)·bf16(v) in fp32; the CPU's fp32-product sets (AVX-512 without
    /// AVX512-BF16, AVX2, portable) multiply the unrounded p, which differs from it by at most 2⁻⁹ relative
    /// per p. With bf16 products the scale is applied to
    /// the fp32 scores (`fma(s, scale, −m)` inside the exponent) rather than to the queries before the
    /// products; the scalar twins are `ScalarAttentionTile` with `products: .bf16Tiles` and, for the kernels
    /// themselves, `sparge_bf16_twin` (C).
    case bf16
    /// Q, K, V rounded to fp16 (11 significant bits; beyond ±65504 the GPU refuses the input), accumulation
    /// in fp32.
    case fp16
    /// SageAttention's recipe, in integers on the CPU:
    /// - Q: each row quantized to int8, `q = s_q·n`, `n = round(q / s_q)` (ties to even), `s_q = max|q| / 127`
    ///   (one scale per row; one per 64-row tile cost MiniLM 1.06e-2 relative L1);
    /// - K: smoothed by the mean `μ` of its key block (columnwise) and quantized with one scale per block,
    ///   `k = μ + s_k·n`, `s_k = max|k − μ| / 127`. Scores are `s_q·(s_k·Σ n_q·n_k + Σ n_q·μ)`: the int8
    ///   product summed exactly in int32, plus the mean's term in fp32;
    /// - V: quantized per block and dimension, `v = s_v·n`, `s_v = max|v| / 2047` (12-bit integers);
    /// - P (after the online softmax's exp2, in [0, 1]) to 14-bit fixed point, `round(p·16383) / 16383`, and
    ///   P·V summed exactly in int32 over 64 keys at a time (≤ 64·16383·2047 < 2³¹), then scaled to fp32 and
    ///   added to the fp32 output accumulator; the row sums add the rounded P.
    /// The CPU computes these integers with two int16 products per 32-bit lane (AVX2's vpmaddwd; the portable
    /// path the same integers); its scalar twin computes the same values dequantized, in fp32. Errors (relative
    /// L1 against Double on the unrounded inputs) are BENCHMARKS.md's.
    ///
    /// On the GPU (`CUDAPrecision.int8`, the Hopper kernel) Q is quantized the same way, but K is smoothed by
    /// its head's mean over the whole sequence instead of its block's: that shifts every score of a row by
    /// the same `q·μ`, which the softmax drops (the LSE adds it back), where a block's mean needs a term per
    /// row and block that a tensor-core kernel has no cheap place for; P·V runs in fp16 as for `bf16`. It
    /// costs about twice the CPU's error where the keys' mean drifts along the sequence (llm: 1.8e-2 against
    /// 1.0e-2) and about the same where it does not (random inputs: 1.10e-2 against 1.09e-2 in
    /// benchmarks/quantization-error.py).
    case int8

    /// A probability of 1 in int8's fixed-point P (14 bits; `P_ONE` in CSpargeKernels' tile_kernels_int8.h).
    static let probabilityLevels: Float = 16383

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
            var n = [Int16](repeating: 0, count: dim)
            for r in 0..<rows {
                let row = q + r * dim
                let scale = sparge_quantize(row, dim, dim, nil, 127, &n)
                for i in 0..<dim { row[i] = scale * Float(n[i]) }
            }
        } else if let format = inputFormat {
            format.round(q, count: rows * dim)
        }
    }

    /// Rounds one key block and its value block (`rows × dim` each, in place) as this precision's products
    /// see them.
    func roundBlock(keys: UnsafeMutablePointer<Float>, values: UnsafeMutablePointer<Float>, rows: Int, dim: Int) {
        if self == .int8 {
            let block = QuantizedKeyValueBlock(blockK: rows, headDim: dim)
            block.fill(keys: keys, values: values, rows: rows)
            block.dequantize(keys: keys, values: values)
        } else if let format = inputFormat {
            format.round(keys, count: rows * dim)
            format.round(values, count: rows * dim)
        }
    }
}
