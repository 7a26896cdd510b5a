import CSpargeKernels

/// The instruction sets the attention tile's micro-kernels are compiled for. One binary carries all of them
/// and each process picks, by default, the best its CPU runs (`detected`); a caller may ask for a lesser one
/// (tests and CI force `portable` to cover the path a CPU without AVX2 takes).
///
/// Only the micro-kernels (scores, softmax update, P·V, the FMA probe) depend on it; the rest of the
/// library is compiled for the build's target CPU.
public enum CPUISA: String, CaseIterable, Comparable, Sendable {
    /// Any CPU: 4-wide vectors, multiply and add rounded separately.
    case portable
    /// AVX2 and FMA, 16 registers of 8 floats (Haswell, AMD Zen 1–3 and later).
    case avx2
    /// AVX-512F, 32 registers of 16 floats (Skylake-SP and later Xeons, AMD Zen 4 and later).
    case avx512
    /// The AVX-512 kernels plus `AttentionPrecision.bf16` in AVX512-BF16 dot products and int8's integer
    /// steps in AVX512-VNNI (AMD Zen 4 and later, Cooper Lake Xeons; a CPU with only one of the two runs
    /// `avx512`).
    case avx512bf16
    /// The `avx512bf16` kernels plus `AttentionPrecision.bf16` on AMX-BF16 tiles and int8's score sums on AMX-INT8
    /// tiles (Sapphire Rapids and later Xeons; on Linux once the kernel has granted the process the tile state).
    case amx

    /// The best set this CPU and its OS support (cpuid and xgetbv, read once).
    public static let detected: CPUISA = CPUISA(code: sparge_cpu_isa())

    /// Whether this CPU can run the set.
    public var isSupported: Bool { self <= Self.detected }

    public static func < (a: CPUISA, b: CPUISA) -> Bool { a.code < b.code }

    var code: Int32 {
        switch self {
        case .portable: Int32(SPARGE_ISA_PORTABLE.rawValue)
        case .avx2: Int32(SPARGE_ISA_AVX2.rawValue)
        case .avx512: Int32(SPARGE_ISA_AVX512.rawValue)
        case .avx512bf16: Int32(SPARGE_ISA_AVX512_BF16.rawValue)
        case .amx: Int32(SPARGE_ISA_AMX.rawValue)
        }
    }

    init(code: Int32) {
        self = Self.allCases.first { $0.code == code } ?? .portable
    }

    /// Whether its tiles multiply bf16 operands as bf16 (`TileProducts.bf16Tiles`: AVX512-BF16 dot products
    /// or AMX tiles) instead of widening them to fp32.
    public var hasBf16Tiles: Bool { self >= .avx512bf16 }

    /// The set named `name` (`portable`, `avx2`, `avx512`, `avx512bf16`, `amx`) if this CPU supports it.
    ///
    /// - Throws: `SpargeError.invalidArgument` naming the set and what this CPU has when it is unknown or
    ///   unsupported.
    public static func named(_ name: String) throws -> CPUISA {
        guard let isa = CPUISA(rawValue: name) else {
            throw SpargeError.invalidArgument("unknown CPU kernel set '\(name)' (one of "
                + allCases.map(\.rawValue).joined(separator: ", ") + ")")
        }
        guard isa.isSupported else {
            throw SpargeError.invalidArgument("this CPU cannot run the \(name) kernels (it has \(detected.rawValue))")
        }
        return isa
    }

    /// The micro-kernels of this set (it must be supported).
    var kernels: sparge_tile_kernels {
        precondition(isSupported, "CPUISA: \(rawValue) kernels on a CPU with \(Self.detected.rawValue)")
        return sparge_kernels(code)
    }
}
