import CSpargeKernels

/// The element type K/V blocks are stored and sent in (`--kv-precision`): each rank converts its own
/// blocks once before the ring (or, where `AttentionEngine.computesFromFloatRows(storedAs:headDim:)` holds, only those
/// it sends, as it sends them), the ring carries them as they are, and a backend computes on them (the CPU
/// widens a block into its tile's fp32 registers; a GPU reads 16-bit blocks directly).
///
/// Rounding is to nearest, ties to even. The relative error one rounding costs is at most `unitRoundoff`
/// (2⁻²⁴ for f32, 2⁻⁸ for bf16, 2⁻¹¹ for f16); f16 overflows beyond ±65504, which ``convert(_:count:to:)``
/// reports.
public enum StorageFormat: String, Sendable, CaseIterable {
    case f32, bf16, f16

    /// Bytes per element.
    public var byteSize: Int { self == .f32 ? 4 : 2 }

    /// The largest relative error of one rounding into this format (half an ulp).
    public var unitRoundoff: Double {
        switch self {
        case .f32: 0x1p-24
        case .bf16: 0x1p-8
        case .f16: 0x1p-11
        }
    }

    /// Writes `count` floats from `source` to `target` in this format.
    ///
    /// - Returns: false when a finite value overflowed to ±∞ (f16 beyond ±65504); the conversion is done all
    ///   the same.
    @discardableResult
    public func convert(_ source: UnsafePointer<Float>, count: Int, to target: UnsafeMutableRawPointer) -> Bool {
        switch self {
        case .f32:
            target.copyMemory(from: source, byteCount: count * 4)
            return true
        case .bf16:
            // In C vectors (bf16Bits exactly; a Swift loop of it did not vectorize).
            sparge_bf16_round(source, count, target.assumingMemoryBound(to: UInt16.self))
            return true
        case .f16:
            // The C kernel of this CPU's set (F16C where it has it): Float16(Float) in a portable build is a
            // library call per value.
            return Self.narrowF16(source, count, target.assumingMemoryBound(to: UInt16.self)) != 0
        }
    }

    /// f16 rounding by this CPU's kernel set (`sparge_tile_kernels.narrowF16`: as Float16(Float)).
    static let narrowF16 = CPUISA.detected.kernels.narrowF16!

    /// f16 widening by this CPU's kernel set (`sparge_tile_kernels.widenF16`: exact, as Float(Float16)).
    static let widenF16 = CPUISA.detected.kernels.widenF16!

    /// Writes `count` values stored in this format at `source` to `target` as floats (exact).
    @inline(__always)
    public func widen(_ source: UnsafeRawPointer, count: Int, to target: UnsafeMutablePointer<Float>) {
        switch self {
        case .f32:
            target.update(from: source.assumingMemoryBound(to: Float.self), count: count)
        case .bf16:
            let bits = source.assumingMemoryBound(to: UInt16.self)
            var i = 0
            while i + 16 <= count {
                let h = UnsafeRawPointer(bits + i).loadUnaligned(as: SIMD16<UInt16>.self)
                let w = SIMD16<UInt32>(truncatingIfNeeded: h) &<< 16
                UnsafeMutableRawPointer(target + i).storeBytes(of: unsafeBitCast(w, to: SIMD16<Float>.self),
                                                               as: SIMD16<Float>.self)
                i += 16
            }
            while i < count { target[i] = Float(bitPattern: UInt32(bits[i]) << 16); i += 1 }
        case .f16:
            // The C kernel of this CPU's set (F16C where it has it): Float(Float16) in a portable build is a
            // library call per value.
            Self.widenF16(source.assumingMemoryBound(to: UInt16.self), count, target)
        }
    }

    /// `x` rounded to this format and back.
    public func rounded(_ x: Float) -> Float {
        switch self {
        case .f32: x
        case .bf16: Float(bitPattern: UInt32(StorageFormat.bf16Bits(x)) << 16)
        case .f16: Float(Float16(x))
        }
    }

    /// Rounds `count` floats at `values` to this format and back, in place: `rounded(_:)` of each. For f16
    /// by this CPU's kernels (F16C where it has it), in pieces through a buffer on the stack: Float16 in a
    /// portable build is a library call each way per value.
    public func round(_ values: UnsafeMutablePointer<Float>, count: Int) {
        switch self {
        case .f32:
            return
        case .bf16:
            for i in 0..<count { values[i] = rounded(values[i]) }
        case .f16:
            let piece = 1024
            withUnsafeTemporaryAllocation(of: UInt16.self, capacity: piece) { halves in
                for at in stride(from: 0, to: count, by: piece) {
                    let n = min(piece, count - at)
                    _ = Self.narrowF16(values + at, n, halves.baseAddress!)
                    Self.widenF16(halves.baseAddress!, n, values + at)
                }
            }
        }
    }

    /// The bfloat16 bit pattern nearest to `x` (ties to even; NaN stays a quiet NaN).
    @inline(__always)
    public static func bf16Bits(_ x: Float) -> UInt16 {
        if x.isNaN { return 0x7FC0 }
        let bits = x.bitPattern
        return UInt16(truncatingIfNeeded: (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) >> 16)
    }
}
