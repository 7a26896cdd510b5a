// tile_kernels.h with AVX-512's blocking (16-float vectors, 4 × 64 lanes) compiled for AVX2: the AVX-512
// kernels' loops, tails and strides, runnable on a machine without AVX-512. Only the tests call it (against
// the AVX2 and portable kernels), so that code which runs by default on AVX-512 CPUs is exercised on every
// development machine; the instructions themselves are checked on one (benchmarks/cpu-device.sh).
#if defined(__x86_64__)
#include "CSpargeKernels.h"
#include <immintrin.h>
#pragma clang diagnostic ignored "-Wpsabi"  // 512-bit vectors in inlined helpers: no ABI crosses a call
#define KERNEL(name) sparge_##name##_avx512_blocking
#define VW 16
#define LV 4
#define MR 4
#define HAS_FMA 1
#define PROBE_CHAINS 16
#define MADD16_AVX2_HALVES 1
#define HAS_F16C 1
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#include "tile_kernels.h"
#pragma clang attribute pop
#endif
