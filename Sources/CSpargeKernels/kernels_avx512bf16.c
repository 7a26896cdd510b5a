// dot_kernels_bf16.h on AVX512-BF16 (AMD Zen 4 and later, Cooper Lake and Sapphire Rapids Xeons): VDPBF16PS
// for both products, vcvtne2ps2bf16 for P. The rest of the set is the AVX-512 kernels (cpu_isa.c). Runs only
// where sparge_cpu_isa says avx512bf16 or better.
#if defined(__x86_64__)
#include "CSpargeKernels.h"
#include <immintrin.h>
#define KERNEL(name) sparge_##name##_avx512bf16
#define VW 16
#define HAS_FMA 1
#pragma clang attribute push(__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx512bf16,avx2,fma"))), apply_to = function)
#include "vector_ops.h"

#define BF16_PAIRS_NATIVE 1
#include "bf16_pairs.h"

/// One VDPBF16PS with `word` broadcast (from memory, as the instruction's {1to16} operand).
INLINE vfloat dot_pairs(vfloat acc, vint pairs, unsigned word) {
    return (vfloat)_mm512_dpbf16_ps((__m512)acc, (__m512bh)pairs, (__m512bh)_mm512_set1_epi32((int)word));
}

#include "dot_kernels_bf16.h"
#pragma clang attribute pop
#endif
