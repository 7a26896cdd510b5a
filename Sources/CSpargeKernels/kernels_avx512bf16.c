// The AVX-512 set for CPUs with AVX512-BF16 and AVX512-VNNI (AMD Zen 4 and later, Cooper Lake and Sapphire
// Rapids Xeons): tile_kernels.h compiled with vpdpwssd for int8's integer steps and vpdpbusd for its scores
// (MADD16_VNNI), and dot_kernels_bf16.h with VDPBF16PS for both bf16 products and vcvtne2ps2bf16 for P. The AMX set
// is this one with its bf16 products on tiles (cpu_isa.c). Runs only where sparge_cpu_isa says avx512bf16 or
// better.
#if defined(__x86_64__)
#include "CSpargeKernels.h"
#include <immintrin.h>
#define KERNEL(name) sparge_##name##_avx512bf16
#define VW 16
#define LV 4
#define MR 4
#define HAS_FMA 1
#define PROBE_CHAINS 16  // 4-cycle latency × 2 pipes = 8 in flight; 16 of the 32 registers
#define MADD16_VNNI 1
#define HAS_F16C 1
#pragma clang attribute push(__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx512bf16,avx512vnni,avx2,fma,f16c"))), apply_to = function)
#include "tile_kernels.h"

#define BF16_PAIRS_NATIVE 1
#include "bf16_pairs.h"

/// One VDPBF16PS with `word` broadcast (from memory, as the instruction's {1to16} operand).
INLINE vfloat dot_pairs(vfloat acc, vint pairs, unsigned word) {
    return (vfloat)_mm512_dpbf16_ps((__m512)acc, (__m512bh)pairs, (__m512bh)_mm512_set1_epi32((int)word));
}

#include "dot_kernels_bf16.h"
#pragma clang attribute pop
#endif
