import SpargeKernels

/// The 16-bit element types the CUDA kernels read, and the host-side rounding into them.
public enum CUDAPrecision: String, Sendable, CaseIterable {
    /// Q, K and V rounded to bfloat16, as a bf16 model holds them. P·V runs in fp16 (P ∈ [0, 1] keeps three
    /// more mantissa bits there, and every bf16 value of V in fp16's range is exact in fp16); a step whose V
    /// has a value beyond fp16's range runs P·V in bf16 instead.
    case bf16
    /// Q, K, V and P in fp16; a value beyond fp16's range is an error.
    case fp16
}

extension CUDAPrecision {
    /// `tensor` with every value rounded to this type and back: the values the kernels compute with.
    public func rounded(_ tensor: Tensor3) -> Tensor3 {
        var out = tensor
        switch self {
        case .bf16: for i in out.data.indices { out.data[i] = HalfPrecision.roundedToBF16(out.data[i]) }
        case .fp16: for i in out.data.indices { out.data[i] = Float(Float16(out.data[i])) }
        }
        return out
    }
}

/// Round-to-nearest-even conversions of Float to the 16-bit formats, on bit patterns.
enum HalfPrecision {
    /// The bfloat16 bit pattern nearest to `x` (ties to even; NaN stays a quiet NaN): the one rounding
    /// the K/V storage format uses too.
    @inline(__always)
    static func bf16(_ x: Float) -> UInt16 { StorageFormat.bf16Bits(x) }

    /// `x` rounded to bfloat16 and back.
    @inline(__always)
    static func roundedToBF16(_ x: Float) -> Float { Float(bitPattern: UInt32(bf16(x)) << 16) }

    /// The fp16 bit pattern nearest to `x` (ties to even; beyond ±65504 it is ±inf).
    @inline(__always)
    static func fp16(_ x: Float) -> UInt16 { Float16(x).bitPattern }

    /// Converts `count` floats to 16-bit patterns of `precision`; for `.bf16` with `fp16Storage` the bf16
    /// value is stored as fp16 (exact inside fp16's range). Returns false when a finite input became
    /// infinite (out of fp16's range).
    static func convert(_ source: UnsafePointer<Float>, count: Int, to destination: UnsafeMutablePointer<UInt16>,
                        precision: CUDAPrecision, fp16Storage: Bool) -> Bool {
        var fits = true
        switch (precision, fp16Storage) {
        case (.bf16, false):
            for i in 0..<count { destination[i] = bf16(source[i]) }
        case (.bf16, true):
            for i in 0..<count {
                let x = source[i]
                let h = Float16(roundedToBF16(x))
                if h.isInfinite && x.isFinite { fits = false }
                destination[i] = h.bitPattern
            }
        case (.fp16, _):
            for i in 0..<count {
                let x = source[i]
                let h = Float16(x)
                if h.isInfinite && x.isFinite { fits = false }
                destination[i] = h.bitPattern
            }
        }
        return fits
    }
}
