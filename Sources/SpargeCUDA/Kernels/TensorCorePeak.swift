/// The measured ceiling of the instruction the attention kernel multiplies with: `mma.sync.m16n8k16`, 16-bit
/// inputs, fp32 accumulation, from registers (no memory traffic), eight independent chains a warp, 32 warps
/// an SM. It is the GPU's counterpart of `PeakFlops` on the CPU: the rate every GPU number stands next to.
/// (Hopper's `wgmma` reaches higher; this kernel does not use it, so this is its own ceiling.)
public enum TensorCorePeak {
    static let program = "sparge_peak.cu"

    static let source = #"""
typedef unsigned int u32;

extern "C" __global__ void sparge_mma_peak(float* out, int iterations) {
#if PEAK_BF16
#define MMA_PEAK "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"
#else
#define MMA_PEAK "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32"
#endif
    // Small finite operands (about 1/64 in either type), different per lane.
    u32 a0 = 0x3C003C00u ^ threadIdx.x, a1 = a0 ^ 1u, a2 = a0 ^ 2u, a3 = a0 ^ 3u, b0 = a0 ^ 4u, b1 = a0 ^ 5u;
    float c[8][4];
#pragma unroll
    for (int k = 0; k < 8; ++k) { c[k][0] = 0.0f; c[k][1] = 0.0f; c[k][2] = 0.0f; c[k][3] = 0.0f; }
    for (int it = 0; it < iterations; ++it) {
#pragma unroll
        for (int k = 0; k < 8; ++k) {
            asm volatile(MMA_PEAK " {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                         : "+f"(c[k][0]), "+f"(c[k][1]), "+f"(c[k][2]), "+f"(c[k][3])
                         : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
        }
    }
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < 8; ++k) s += c[k][0] + c[k][1] + c[k][2] + c[k][3];
    if (s == 1234.5f) out[threadIdx.x] = s;  // never true; keeps the chains alive
}
"""#

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
