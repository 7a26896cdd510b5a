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

    /// The type Q, K, V are rounded to; nil for fp32 (no rounding).
    public var inputFormat: StorageFormat? {
        switch self {
        case .fp32: nil
        case .bf16: .bf16
        case .fp16: .f16
        }
    }

    /// `tensor` with every value rounded as this precision rounds its inputs.
    public func rounded(_ tensor: Tensor3) -> Tensor3 { inputFormat.map { tensor.rounded(to: $0) } ?? tensor }
}
