// Scalar libm functions (exp2, log2, exp, log) without Foundation; the package links libm explicitly.
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

@inline(__always) func libmExp2(_ x: Float) -> Float { exp2f(x) }
@inline(__always) func libmLog2(_ x: Float) -> Float { log2f(x) }
@inline(__always) func libmExp(_ x: Float) -> Float { expf(x) }
@inline(__always) func libmLog(_ x: Float) -> Float { logf(x) }
