extension ElementType {
    /// Widens `count` little-endian elements of this type at `source` into float32 at `destination`.
    ///
    /// float16 is widened exactly (normals, subnormals, ±inf, NaN); bfloat16 is the high half of a float32,
    /// so it is exact too. `uint8` is not a floating-point type and must not reach here.
    func widen(_ source: UnsafeRawPointer, count: Int, into destination: UnsafeMutablePointer<Float>) {
        guard count > 0 else { return }
        switch self {
        case .float32:
            for i in 0..<count {
                destination[i] = Float(bitPattern: UInt32(littleEndian: source.loadUnaligned(
                    fromByteOffset: 4 * i, as: UInt32.self)))
            }
        case .float16:
            for i in 0..<count {
                destination[i] = Float(halfBits: UInt16(littleEndian: source.loadUnaligned(
                    fromByteOffset: 2 * i, as: UInt16.self)))
            }
        case .bfloat16:
            for i in 0..<count {
                destination[i] = Float(bitPattern: UInt32(UInt16(littleEndian: source.loadUnaligned(
                    fromByteOffset: 2 * i, as: UInt16.self))) << 16)
            }
        case .uint8:
            preconditionFailure("uint8 is not widened to float32")
        }
    }
}

extension Float {
    /// Widens IEEE 754 half-precision bits exactly (normals, subnormals, ±0, ±inf; NaN keeps its payload).
    @inlinable
    public init(halfBits h: UInt16) {
        let sign = UInt32(h & 0x8000) << 16
        let exponent = Int(h >> 10) & 0x1f
        let mantissa = UInt32(h & 0x3ff)
        if exponent == 0 {
            // zero or subnormal: mantissa · 2^-24, exact in float32
            let magnitude = Float(mantissa) * 0x1p-24
            self = sign != 0 ? -magnitude : magnitude
        } else if exponent == 0x1f {
            self = Float(bitPattern: sign | 0x7f80_0000 | mantissa << 13)
        } else {
            self = Float(bitPattern: sign | UInt32(exponent - 15 + 127) << 23 | mantissa << 13)
        }
    }
}
