import SpargeKernels

/// The element types the CUDA kernels read, and the host-side rounding into them.
public enum CUDAPrecision: String, Sendable, CaseIterable {
    /// `AttentionPrecision.bf16`. P·V runs in fp16 (P ∈ [0, 1] keeps three more mantissa bits there, and
    /// every bf16 value of V in fp16's range is exact in fp16); with a value of V beyond fp16's range P·V
    /// runs in bf16 instead.
    case bf16
    /// `AttentionPrecision.fp16`: Q, K, V and P in fp16; a value beyond fp16's range is an error.
    case fp16
    /// `AttentionPrecision.int8` on the GPU, SageAttention's Q·Kᵀ: each query row quantized to int8 with
    /// its own scale (`max|q| / 127`), K smoothed by its head's mean over the whole sequence (the mean the
    /// ranks agree on for the mask; it shifts every score of a row by the same `q·μ`, which the softmax
    /// does not see and the LSE adds back) and quantized with one scale per key block (`max|k − μ| / 127`);
    /// the int32 products scaled to fp32 before the same online softmax. P·V as in `bf16` (fp16, or bf16
    /// for V beyond fp16's range). In the resident pass (the mask predicted on the device), on any GPU from
    /// sm_80: the `mma.sync` kernel's Q·Kᵀ in `m16n8k32` int8 (D = 64 or 128, every shape it takes), or on
    /// Hopper the `wgmma` kernel's where it takes the shape (D = 128, 64-row tiles, 64- or 128-key blocks).
    /// Both read the same quantized Q and K, so the ring carries the same bytes to either.
    case int8
}

extension CUDAPrecision {
    /// The GPU kernels of `precision` (the names are `AttentionPrecision`'s); nil for fp32, which they do
    /// not compute in.
    public init?(_ precision: AttentionPrecision) { self.init(rawValue: precision.rawValue) }

    /// This precision's shared name and meaning.
    public var attentionPrecision: AttentionPrecision { AttentionPrecision(rawValue: rawValue)! }

    /// The storage format of the 16-bit type Q and K are rounded to; nil for int8, which quantizes them.
    public var storageFormat: StorageFormat? {
        switch self {
        case .bf16: .bf16
        case .fp16: .f16
        case .int8: nil
        }
    }

    /// Whether P·V may fall back to bf16 where V is beyond fp16's range (else that is an error).
    public var valuesMayWiden: Bool { self != .fp16 }

    /// `tensor` with every value rounded to this type and back: the values the kernels compute with (int8
    /// quantizes inside the pass: the tensor as given).
    public func rounded(_ tensor: Tensor3) -> Tensor3 { storageFormat.map { tensor.rounded(to: $0) } ?? tensor }
}

/// Round-to-nearest-even conversions of Float to the 16-bit formats, on bit patterns.
enum HalfPrecision {
    /// The bfloat16 bit pattern nearest to `x` (ties to even; NaN stays a quiet NaN): the one rounding
    /// the K/V storage format uses too.
    @inline(__always)
    static func bf16(_ x: Float) -> UInt16 { StorageFormat.bf16Bits(x) }

    /// The fp16 bit pattern nearest to `x` (ties to even; beyond ±65504 it is ±inf).
    @inline(__always)
    static func fp16(_ x: Float) -> UInt16 { Float16(x).bitPattern }

    /// The fp16 pattern of the bf16 value `b`, rounded to nearest even (exact in fp16's normal range; fp16
    /// subnormals round; below them ±0). `overflow` is true when a finite value is beyond fp16's range (the
    /// result is then ±∞). Integer operations only: equal to `Float16(Float(bf16))` for every pattern.
    @inline(__always)
    static func fp16Bits(fromBF16 b: UInt16) -> (bits: UInt16, overflow: Bool) {
        let sign = b & 0x8000, exponent = Int((b >> 7) & 0xFF), mantissa = b & 0x7F
        if exponent == 0xFF { return (sign | 0x7C00 | (mantissa != 0 ? 0x200 : 0), false) }  // ±∞, NaN
        if exponent == 0 { return (sign, false) }  // ±0 and bf16 subnormals: far below fp16's smallest
        let e = exponent - 127
        if e > 15 { return (sign | 0x7C00, true) }
        if e >= -14 { return (sign | UInt16(e + 15) << 10 | mantissa << 3, false) }
        // fp16 subnormal: the value is (128 + m)·2^(e − 7), in units of 2⁻²⁴ that is (128 + m)·2^(e + 17).
        let v = UInt32(128 + mantissa), shift = -(e + 17)
        if shift <= 0 { return (sign | UInt16(v << UInt32(-shift)), false) }
        if shift > 9 { return (sign, false) }
        var r = v >> UInt32(shift)
        let rest = v & ((1 << UInt32(shift)) - 1), half = UInt32(1) << UInt32(shift - 1)
        if rest > half || (rest == half && r & 1 == 1) { r += 1 }
        return (sign | UInt16(r), false)
    }

    /// Writes one block stored as `format` in the kernels' types: keys as `precision`, values as fp16 (the
    /// bf16 value, exact where it fits) or, with `valuesInBF16`, as bf16. A block already in the kernel's
    /// type is copied; bf16 values become fp16 by integer operations. Returns false when a finite value of V
    /// does not fit fp16.
    static func stage(keys: UnsafeRawPointer, values: UnsafeRawPointer, count: Int, format: StorageFormat,
                      precision: CUDAPrecision, valuesInBF16: Bool,
                      keysTo kDst: UnsafeMutablePointer<UInt16>, valuesTo vDst: UnsafeMutablePointer<UInt16>) -> Bool {
        let valueType: CUDAPrecision = valuesInBF16 ? .bf16 : .fp16
        func raw(_ source: UnsafeRawPointer, _ target: UnsafeMutablePointer<UInt16>) {
            UnsafeMutableRawPointer(target).copyMemory(from: source, byteCount: count * 2)
        }
        switch format {
        case .f32:
            let (k, v) = (keys.assumingMemoryBound(to: Float.self), values.assumingMemoryBound(to: Float.self))
            _ = convert(k, count: count, to: kDst, precision: precision, fp16Storage: false)
            return convert(v, count: count, to: vDst, precision: valuesInBF16 ? .bf16 : precision,
                           fp16Storage: !valuesInBF16 && precision == .bf16)
        case .bf16 where precision == .bf16:
            raw(keys, kDst)
            if valueType == .bf16 { raw(values, vDst); return true }
            let bits = values.assumingMemoryBound(to: UInt16.self)
            var overflow = false
            for i in 0..<count {
                let h = fp16Bits(fromBF16: bits[i])
                overflow = overflow || h.overflow
                vDst[i] = h.bits
            }
            return !overflow
        case .f16 where precision == .fp16 && !valuesInBF16:
            raw(keys, kDst)
            raw(values, vDst)
            return true
        default:
            // Mixed types (f16 storage for a bf16 kernel, say): widen exactly, then round as from fp32.
            let wide = UnsafeMutablePointer<Float>.allocate(capacity: 2 * count)
            defer { wide.deallocate() }
            format.widen(keys, count: count, to: wide)
            format.widen(values, count: count, to: wide + count)
            return stage(keys: wide, values: wide + count, count: count, format: .f32, precision: precision,
                         valuesInBF16: valuesInBF16, keysTo: kDst, valuesTo: vDst)
        }
    }

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
            // Integer operations only: Float16(_:) is a library call per element on targets without a
            // hardware conversion in Swift's lowering, and was most of the host's staging time.
            var overflow = false
            for i in 0..<count {
                let h = fp16Bits(fromBF16: bf16(source[i]))
                overflow = overflow || h.overflow
                destination[i] = h.bits
            }
            fits = !overflow
        case (.fp16, _), (.int8, _):  // (int8 is not staged from the host: CUDABlockSparseAttention refuses it)
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
