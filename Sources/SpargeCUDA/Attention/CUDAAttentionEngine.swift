import SpargeKernels

/// The CUDA backend: `CUDABlockSparseAttention` on this process's device, and the mask prediction of
/// `CUDAMaskPredictor` (bit for bit the CPU's) unless told to leave it on the host.
public struct CUDAAttentionEngine: AttentionEngine {
    /// The device every attention of this engine runs on.
    public let device: CUDADevice
    /// The 16-bit type the inputs are rounded to.
    public let precision: CUDAPrecision
    /// Whether block summaries and mask rows are computed on the device (else the CPU computes them; the
    /// mask is the same).
    public var predictsMask: Bool { options.predictsMaskOnDevice }
    /// The backend's settings.
    public let options: CUDAOptions

    /// The engine on `device` (default: `CUDADevice.open(options:)`, the device of this process's
    /// node-local rank).
    ///
    /// - Throws: `CUDAError` when there is no driver, no NVRTC or no device.
    public init(device: CUDADevice? = nil, precision: CUDAPrecision = .bf16, options: CUDAOptions = CUDAOptions()) throws {
        self.device = try device ?? CUDADevice.open(options: options)
        self.precision = precision
        self.options = options
        if options.trace { (CUDATrace.enabled, CUDATrace.waits) = (true, options.traceWaits) }
    }

    public var name: String { "cuda" }

    public func makeAttention(queries: Tensor3, mask: BlockMask, kvHeads: Int, config: SpargeConfig,
                              seqLen: Int, threads: Int) throws -> any StepwiseAttention {
        try CUDABlockSparseAttention(queries: queries, mask: mask, kvHeads: kvHeads, config: config, seqLen: seqLen,
                                     device: device, precision: precision, options: options)
    }

    public func summarize(_ x: Tensor3, rows: Range<Int>, firstBlock: Int, blockSize: Int, threshold: Float,
                          subtracting mean: [Float]?) throws -> BlockSummaries {
        guard predictsMask else {
            return BlockSummaries.summarize(x, rows: rows, firstBlock: firstBlock, blockSize: blockSize,
                                            threshold: threshold, subtracting: mean)
        }
        return try CUDAMaskPredictor(device: device).summarize(x, rows: rows, firstBlock: firstBlock, blockSize: blockSize,
                                                               threshold: threshold, subtracting: mean)
    }

    public func predictRows(querySummaries: BlockSummaries, queryBlocks: [Int], keySummaries: BlockSummaries,
                            config: SpargeConfig, headDim: Int, queryHeads: Int, kvHeads: Int,
                            seqLen: Int) throws -> BlockMask {
        guard predictsMask else {
            return try MaskPredictor.predictRows(querySummaries: querySummaries, queryBlocks: queryBlocks,
                                             keySummaries: keySummaries, config: config, headDim: headDim,
                                             queryHeads: queryHeads, kvHeads: kvHeads, seqLen: seqLen)
        }
        return try CUDAMaskPredictor(device: device, radixTopK: options.radixTopK).predictRows(
            querySummaries: querySummaries, queryBlocks: queryBlocks, keySummaries: keySummaries, config: config,
            headDim: headDim, queryHeads: queryHeads, kvHeads: kvHeads, seqLen: seqLen)
    }
}

extension CUDAAttentionEngine: ResidentAttentionEngine {
    /// This rank's tensors on the engine's device for a resident pass (`DeviceShard`): host tensors go up
    /// once; device tensors of this device are used where they are.
    public func enter(q: Tensor, k: Tensor, v: Tensor, kvFormat: StorageFormat) throws -> any ResidentShard {
        try DeviceShard(device: device, precision: precision, options: options, q: q, k: k, v: v, kvFormat: kvFormat)
    }

    /// Passes stay on the device whenever the device predicts the mask (the default).
    public var runsResident: Bool { predictsMask }

    /// In int8, K travels as int8 rows and the block's scale (`QuantizedKeys.payloadFormat`), V in `kvFormat`;
    /// otherwise K and V travel in `kvFormat`.
    public func ringPayload(kvFormat: StorageFormat, headDim: Int) -> PayloadFormat {
        precision.ringPayload(kvFormat: kvFormat, headDim: headDim)
    }

    public func upload(_ tensor: Tensor) throws -> Tensor { try device.upload(tensor) }

    public func download(_ tensor: Tensor) throws -> Tensor { try device.download(tensor) }

    public func write(_ source: Tensor, into destination: Tensor) throws {
        try device.makeCurrent()
        try TensorEntry(device: device).write(source, into: destination)
    }
}
