// sparge_peak.cu: compiled at run time by NVRTC; see TensorCorePeak (SpargeCUDA) for what it holds.
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
