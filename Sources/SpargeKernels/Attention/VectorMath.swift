// Unaligned SIMD16 loads and stores on `Float` pointers, for the tile's bookkeeping around its micro-kernels
// (causal mask, block maxima, the λ rule); the micro-kernels themselves are C, compiled per ISA
// (CSpargeKernels).
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
