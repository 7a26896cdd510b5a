/// The measured ceiling of the instruction the attention kernel multiplies with: `mma.sync.m16n8k16`, 16-bit
/// inputs, fp32 accumulation, from registers (no memory traffic), eight independent chains a warp, 32 warps
/// an SM. It is the GPU's counterpart of `PeakFlops` on the CPU: the rate every GPU number stands next to.
/// (Hopper's `wgmma` reaches higher; this kernel does not use it, so this is its own ceiling.)
public enum TensorCorePeak {
    static let program = "sparge_peak.cu"

    static let source = String(decoding: PackageResources.sparge_peak_cu, as: UTF8.self)

    /// Tensor-core TFLOP/s of `mma.sync` on `device` (the best of a few timed launches, device events).
    public static func measure(device: CUDADevice, precision: CUDAPrecision = .bf16) throws -> Double {
        try device.makeCurrent()
        let kernel = try device.function(source: source, program: program, name: "sparge_mma_peak",
                                         defines: [("PEAK_BF16", precision == .bf16 ? 1 : 0)])
        let sink = try DeviceBuffer(device: device, bytes: 256 * 4, label: "peak sink")
        let (start, stop) = (try CUDAEvent(device: device), try CUDAEvent(device: device))
        let blocks = device.multiprocessors * 4, threads = 256, iterations = 512
        func run() throws -> Double {
            try start.record()
            try device.launch(kernel, grid: blocks, block: threads, [.pointer(sink.address), .int(Int32(iterations))])
            try stop.record()
            try stop.synchronize()
            return try stop.seconds(since: start)
        }
        _ = try run()  // warm-up (clocks, module load)
        let best = try (0..<5).map { _ in try run() }.min()!
        guard best > 0 else { return 0 }  // a driver that does not time (the tests' stub)
        let flops = Double(blocks * threads / 32) * Double(iterations) * 8 * (2 * 16 * 8 * 16)
        return flops / best / 1e12
    }
}
