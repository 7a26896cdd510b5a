/// Everything about the CUDA backend that a run may set: where the libraries are, which device, and the
/// knobs for diagnosis and tests. The library reads no environment variables; the command-line tool fills
/// this from its options and environment (`sparge --help` lists them).
public struct CUDAOptions: Sendable, Equatable {
    /// A path of `libcuda.so.1` to try first.
    public var libcudaPath: String?
    /// A path of `libnvrtc` to try first.
    public var nvrtcPath: String?
    /// CUDA toolkit folders whose `lib64` may hold NVRTC (`CUDA_HOME`, `CUDA_PATH`).
    public var toolkitFolders: [String] = []
    /// The device ordinal; nil: `localRank` modulo the devices (so a node's ranks spread over its GPUs).
    public var deviceOrdinal: Int?
    /// This process's rank on its node, as the launcher says (nil: device 0).
    public var localRank: Int?
    /// Whether block summaries and mask rows are computed on the device (else on the host: the same bits).
    public var predictsMaskOnDevice = true
    /// Whether host phases and copies are written to stderr.
    public var trace = false
    /// Whether the trace waits for the device at each phase (each phase's kernels counted in it); false: it
    /// never waits, and says when each phase ended, so that the pass runs as it does untraced.
    public var traceWaits = true
    /// 16-row m-tiles per warp where the compute tile has room (1 or 2), for the `mma.sync` kernel.
    public var mTiles = 1
    /// Whether Hopper GPUs (sm_90) run the `wgmma`/TMA kernel where the shape allows it (64-row compute
    /// tiles, 64- or 128-key blocks); false: the `mma.sync` kernel on every GPU.
    public var hopperKernel = true
    /// Whether TopK rows too long for the sort take the radix select (false: the heap kernel, a thread per
    /// row, as before it; the same bits, for comparison).
    public var radixTopK = true
    /// Whether one rank's resident pass builds its tile table and work list on the device from the compacted
    /// mask (false: the host's plan and lists, as with several ranks; the same tiles and lists, for comparison).
    public var workListOnDevice = true
    /// Whether that work list splits the last, partly filled wave of the Hopper kernel's CTAs into parts of
    /// their lists, merged after the launch (false: every CTA keeps its whole list; for comparison).
    public var tailSplit = true
    /// Whether the Hopper kernel's two consumer warpgroups take turns at issuing their wgmmas where their
    /// lists take as many steps, so that one's softmax overlaps the other's matrix products (false: each
    /// issues as soon as its data is in; the same bits, for comparison).
    public var consumerTurns = true
    /// Bytes of 16-bit K/V one staging slot carries at most; a call holding more goes up in parts.
    public var stagingBytes = 256 << 20

    public init() {}

    /// The device to open among `count`.
    func device(among count: Int) -> Int { deviceOrdinal ?? (localRank.map { $0 % max(1, count) } ?? 0) }
}
