import SpargeKernels

/// The CUDA backend: `CUDABlockSparseAttention` on this process's device.
public struct CUDAAttentionEngine: AttentionEngine {
    /// The device every attention of this engine runs on.
    public let device: CUDADevice
    /// The 16-bit type the inputs are rounded to.
    public let precision: CUDAPrecision

    /// The engine on `device` (default: `CUDADevice.open()`, the device of this process's node-local rank).
    ///
    /// - Throws: `CUDAError` when there is no driver, no NVRTC or no device.
    public init(device: CUDADevice? = nil, precision: CUDAPrecision = .bf16) throws {
        self.device = try device ?? CUDADevice.open()
        self.precision = precision
    }

    public var name: String { "cuda" }

    public func makeAttention(queries: Tensor3, mask: BlockMask, kvHeads: Int, config: SpargeConfig,
                              seqLen: Int, threads: Int) throws -> any StepwiseAttention {
        try CUDABlockSparseAttention(queries: queries, mask: mask, kvHeads: kvHeads, config: config, seqLen: seqLen,
                                     device: device, precision: precision)
    }
}
