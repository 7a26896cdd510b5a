import CSparge
import SpargeKernels

extension sparge_params {
    /// The configuration these parameters ask for; `SpargeConfig.validate()` then checks the values.
    func configuration() throws -> SpargeConfig {
        var config = SpargeConfig()
        switch selection {
        case Int32(SPARGE_SELECT_CDF.rawValue): config.selection = .cdf(cdf_threshold)
        case Int32(SPARGE_SELECT_TOPK.rawValue): config.selection = .topK(topk)
        case Int32(SPARGE_SELECT_DENSE.rawValue): config.selection = .dense
        default:
            throw CError(SPARGE_ERROR_INVALID_ARGUMENT, "selection \(selection) is none of cdf (0), topk (1), dense (2)")
        }
        config.simThreshold = sim_threshold
        config.pvThreshold = pv_threshold
        config.scale = scale == 0 ? nil : scale
        config.causal = causal != 0
        config.sink = sink != 0
        if block_q != 0 { config.blockQ = Int(block_q) }
        if block_k != 0 { config.blockK = Int(block_k) }
        // The compute tile must divide the query block; 64 (the default) does for the usual 128.
        config.computeTileQ = config.blockQ % 64 == 0 ? 64 : config.blockQ
        try config.validate()
        return config
    }

    /// What the products compute in (`--precision`'s names); nil: the engine's default.
    func precisionAsked() throws -> AttentionPrecision? {
        switch precision {
        case Int32(SPARGE_PRECISION_DEFAULT.rawValue): return nil
        case Int32(SPARGE_PRECISION_FP32.rawValue): return .fp32
        case Int32(SPARGE_PRECISION_BF16.rawValue): return .bf16
        case Int32(SPARGE_PRECISION_FP16.rawValue): return .fp16
        case Int32(SPARGE_PRECISION_INT8.rawValue): return .int8
        default:
            throw CError(SPARGE_ERROR_INVALID_ARGUMENT,
                         "precision \(precision) is none of default (0), fp32 (1), bf16 (2), fp16 (3), int8 (4)")
        }
    }

    /// The format K/V blocks are stored and sent in: `kv_dtype`, or for -1 the command line's default for
    /// `engine` (on the CPU the type its precision rounds to, f32 for fp32 and int8; bf16 on a GPU).
    func kvFormat(engine: any AttentionEngine) throws -> StorageFormat {
        switch kv_dtype {
        case -1: return (engine as? CPUAttentionEngine).map { $0.precision.inputFormat ?? .f32 } ?? .bf16
        case Int32(SPARGE_DTYPE_F32.rawValue): return .f32
        case Int32(SPARGE_DTYPE_BF16.rawValue): return .bf16
        case Int32(SPARGE_DTYPE_F16.rawValue): return .f16
        default: throw CError(SPARGE_ERROR_INVALID_ARGUMENT, "kv_dtype \(kv_dtype) is none of -1, f32 (0), bf16 (1), f16 (2)")
        }
    }
}
