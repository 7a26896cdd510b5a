// tile_kernels.h for AVX2 + FMA (Haswell, Zen 1–3 and later): 8 floats per ymm, 16 registers.
#if defined(__x86_64__)
#include "CSpargeKernels.h"
#include <immintrin.h>
#define KERNEL(name) sparge_##name##_avx2
#define VW 8
#define LV 2
#define MR 6
#define HAS_FMA 1
#define PROBE_CHAINS 12  // 4-cycle FMA latency × 2 pipes = 8 in flight; 12 leaves slack
#define MADD16_AVX2 1
#define HAS_F16C 1
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#include "tile_kernels.h"
#pragma clang attribute pop
#endif
