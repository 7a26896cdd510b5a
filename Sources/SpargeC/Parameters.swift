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

    /// The format K/V blocks are stored and sent in.
    func kvFormat() throws -> StorageFormat {
        switch kv_dtype {
        case -1, Int32(SPARGE_DTYPE_F32.rawValue): return .f32
        case Int32(SPARGE_DTYPE_BF16.rawValue): return .bf16
        case Int32(SPARGE_DTYPE_F16.rawValue): return .f16
        default: throw CError(SPARGE_ERROR_INVALID_ARGUMENT, "kv_dtype \(kv_dtype) is none of -1, f32 (0), bf16 (1), f16 (2)")
        }
    }
}
