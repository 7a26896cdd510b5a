// sparge_attention_common.cu: what both attention kernels (sparge_attention.cu, sparge_attention_sm90.cu) share;
// NVRTC compiles it in front of either (AttentionKernelSource).
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned long long u64;
// Vector types of our own: nothing from the CUDA headers is needed.
struct __align__(8) f2 { float x, y; };
struct __align__(16) f4 { float x, y, z, w; };
struct __align__(8) i2 { int x, y; };
struct __align__(16) i4 { int x, y, z, w; };
struct __align__(16) u4 { u32 a, b, c, d; };

// The online-softmax state of one compute tile between launches.
struct TileCounters { int visited, computed, skipped, started; };

// int8 (QK_INT8): where Q's row scales, K's block scales and Q's row shifts lie; after the parameters in either
// kernel's argument (AttentionKernel.launch appends them).
struct SpargeInt8Scales {
    const float* qScales;    // [Hq][rows]
    const float* kScales;    // [Hkv][kvRows / BK]
    const float* rowShifts;  // [Hq][rows]: q·μ times the softmax scale (natural units), which the LSE adds back
};

// Everything one launch of sparge_attention reads, in one argument. AttentionKernel.Parameters (Swift) is the
// same struct field by field: a test compiles this definition on the host and compares every offset.
// q: [Hq][rows][D]; k, v: [Hkv][kvRows][D] (kvRows a multiple of BK, padding rows zero);
// oacc: [Hq][rows][D] fp32 unnormalised output; ml: [Hq][rows] (m in log2 units, l); or, where out is not
// null, out: [Hq][rows][D] fp32 normalised output and lse: [Hq][rows] (natural log), the state never read;
// tiles: per tile (head, first local row, rows, global index of row 0); counters: per tile;
// work: per CTA (tile, first list entry, entries); blocks: key block indices, ascending per list;
// qScale: the softmax scale times log2 e; causal: 0 or 1; lambda: 1 when the λ rule runs (pvThreshold below
// SpargeConfig.lambdaOff), 0 when every listed block is computed (no decision; on Hopper, no barrier).
struct SpargeAttentionParams {
    const u16* q; const u16* k; const u16* v;
    float* oacc; f2* ml; float* out; float* lse;
    TileCounters* counters; const i4* tiles; const i4* work; const int* blocks;
    int rows, seqLen, kvRows, group;
    float qScale, pvThreshold;
    int causal, lambda;
};

#define NEG_INF (__int_as_float(0xff800000))

// The PTX of the arithmetic both kernels share. (SPARGE_HOST_EMULATION: the tests' host emulation of the
// mma.sync kernel defines these itself, as plain C++.)
#ifndef SPARGE_HOST_EMULATION
__device__ __forceinline__ u32 shared_address(const void* p) {
    u32 a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}

__device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

__device__ __forceinline__ float fast_log2(float x) {
    float y;
    asm("lg2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

// Two floats to the P·V element type; `lo` goes to the low half (the lower column).
__device__ __forceinline__ u32 pack_pv(float lo, float hi) {
    u32 r;
#if PV_BF16
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
#else
    asm("cvt.rn.f16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
#endif
    return r;
}
#endif
