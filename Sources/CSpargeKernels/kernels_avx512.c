// tile_kernels.h for AVX-512F (Skylake-SP and later Xeons, Zen 4/5): 16 floats per zmm, 32 registers; the
// blocking of the Swift SIMD16 kernel that reached 90% of the FMA peak on Zen 5 (4 keys × 64 lanes).
#if defined(__x86_64__)
#include "CSpargeKernels.h"
#include <immintrin.h>
#define KERNEL(name) sparge_##name##_avx512
#define VW 16
#define LV 4
#define MR 4
#define HAS_FMA 1
#define PROBE_CHAINS 16  // 4-cycle latency × 2 pipes = 8 in flight; 16 of the 32 registers
#define MADD16_AVX2_HALVES 1
#define HAS_F16C 1
#pragma clang attribute push(__attribute__((target("avx512f,avx512vl,avx2,fma,f16c"))), apply_to = function)
#include "tile_kernels.h"
#pragma clang attribute pop
#endif
