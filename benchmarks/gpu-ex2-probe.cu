// Throughput of the GPU's MUFU exponential: ex2.approx.f32 against ex2.approx.f16x2 (one instruction for two
// values: twice the values a second, or the same?), eight independent chains a thread. Run by gpu-ex2-probe.sh.
#include <cstdio>
#include <cstdlib>
#include <cuda_fp16.h>
__global__ void f32(float* out, int n) {
    float x[8];
    for (int i = 0; i < 8; ++i) x[i] = -0.001f * (threadIdx.x + i);
    for (int k = 0; k < n; ++k)
#pragma unroll
        for (int i = 0; i < 8; ++i) asm volatile("ex2.approx.ftz.f32 %0, %0;" : "+f"(x[i]));
    float s = 0; for (int i = 0; i < 8; ++i) s += x[i];
    out[blockIdx.x * blockDim.x + threadIdx.x] = s;
}
__global__ void f16x2(float* out, int n) {
    unsigned x[8];
    for (int i = 0; i < 8; ++i) { __half2 h = __floats2half2_rn(-0.001f * (threadIdx.x + i), -0.002f * i); x[i] = *(unsigned*)&h; }
    for (int k = 0; k < n; ++k)
#pragma unroll
        for (int i = 0; i < 8; ++i) asm volatile("ex2.approx.f16x2 %0, %0;" : "+r"(x[i]));
    float s = 0; for (int i = 0; i < 8; ++i) { __half2 h = *(__half2*)&x[i]; s += __low2float(h) + __high2float(h); }
    out[blockIdx.x * blockDim.x + threadIdx.x] = s;
}
// Exits with the error's name where a CUDA call or a launch failed (a failed launch would print rates of nothing).
static void check(cudaError_t e, const char* what) {
    if (e != cudaSuccess) { fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e)); exit(1); }
}
int main() {
    const int n = 4096, blocks = 132 * 8, threads = 256;
    float* out;
    check(cudaMalloc(&out, sizeof(float) * blocks * threads), "cudaMalloc");
    cudaEvent_t a, b; cudaEventCreate(&a); cudaEventCreate(&b);
    for (int rep = 0; rep < 3; ++rep) {
        for (int kind = 0; kind < 2; ++kind) {
            cudaEventRecord(a);
            if (kind == 0) f32<<<blocks, threads>>>(out, n); else f16x2<<<blocks, threads>>>(out, n);
            check(cudaGetLastError(), "launch");
            cudaEventRecord(b); check(cudaEventSynchronize(b), "the kernel");
            float ms; cudaEventElapsedTime(&ms, a, b);
            double instr = (double)blocks * threads * n * 8;
            printf("%s: %.3f ms, %.1f G instructions/s, %.1f G values/s\n", kind ? "ex2.approx.f16x2" : "ex2.approx.f32 ",
                   ms, instr / ms / 1e6, instr * (kind ? 2 : 1) / ms / 1e6);
        }
    }
    return 0;
}
