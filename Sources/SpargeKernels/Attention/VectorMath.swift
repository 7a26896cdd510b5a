// The small vocabulary of vector operations the attention kernels are written in: unaligned SIMD16 loads
// and stores on `Float` pointers, a broadcast, and a base-2 exponential. Everything is inlined into the
// micro-kernels (DESIGN.md §5: `@inline(never)` here cost 14%).
//
// `@_optimize(speed)` on these and on the micro-kernels makes debug builds (the test runs) 2.7× faster
// (MiniLM test: 6.6 s → 2.4 s, three runs each): the SIL optimiser then specialises the generic SIMD
// operations even at -Onone. It changes nothing in release builds.

typealias Vec16 = SIMD16<Float>

@inline(__always) @_optimize(speed)
func load16(_ p: UnsafePointer<Float>) -> Vec16 {
    UnsafeRawPointer(p).loadUnaligned(as: Vec16.self)
}

@inline(__always) @_optimize(speed)
func load16(_ p: UnsafeMutablePointer<Float>) -> Vec16 {
    UnsafeRawPointer(p).loadUnaligned(as: Vec16.self)
}

@inline(__always) @_optimize(speed)
func store16(_ v: Vec16, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: Vec16.self)
}

/// `2^x` on 16 lanes, for `x ≤ 0` (the only use in online softmax: exponents are taken against a max).
/// Positive inputs up to 127 work too; beyond that the result is garbage (not clamped, to save two
/// instructions per vector).
///
/// Round-to-nearest by the 1.5·2²³ trick splits `x = n + f` with `f ∈ [-½, ½]`; `2^f` is the degree-6
/// Taylor polynomial (relative error ≤ 1.3e-7 on that interval, evaluated with FMAs because Swift does not
/// contract `a*b + c`), and `2^n` is added to the exponent bits.
///
/// Edge cases: `x ≤ -127`, including `-inf`, gives exactly `+0` (n = -127, f = 0, the polynomial is exactly
/// 1, and the exponent field becomes 0), so masked scores contribute nothing and rows with no visited key
/// keep `l = 0`. Inputs in (-127, -126) give non-negative denormals. NaN is not expected.
@inline(__always) @_optimize(speed)
func exp2Vector(_ x: Vec16) -> Vec16 {
    let lo = Vec16(repeating: -127)
    let xc = x.replacing(with: lo, where: x .< lo)
    let magic = Vec16(repeating: 12_582_912)  // 1.5·2²³: adding it rounds to an integer in the low bits
    let t = xc + magic
    let n = t - magic
    let f = xc - n
    var p = Vec16(repeating: 1.540_353_039_338_161e-4)
    p = Vec16(repeating: 1.333_355_814_642_844e-3).addingProduct(p, f)
    p = Vec16(repeating: 9.618_129_107_628_477e-3).addingProduct(p, f)
    p = Vec16(repeating: 5.550_410_866_482_158e-2).addingProduct(p, f)
    p = Vec16(repeating: 0.240_226_506_959_100_7).addingProduct(p, f)
    p = Vec16(repeating: 0.693_147_180_559_945_3).addingProduct(p, f)
    p = Vec16(repeating: 1).addingProduct(p, f)
    let ni = unsafeBitCast(t, to: SIMD16<Int32>.self) &- unsafeBitCast(magic, to: SIMD16<Int32>.self)
    let bits = unsafeBitCast(p, to: SIMD16<Int32>.self) &+ (ni &<< 23)
    return unsafeBitCast(bits, to: Vec16.self)
}
