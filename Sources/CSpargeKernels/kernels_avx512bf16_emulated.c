// dot_kernels_bf16.h with VDPBF16PS written out in C and the vectors compiled for AVX2: the AVX512-BF16
// kernels' loops, tails, strides and layouts, runnable on a machine without AVX512-BF16. Only the tests call
// it (against the scalar twin, bf16_tiles.c); the instruction itself is checked where the CPU has it.
#if defined(__x86_64__)
#include "CSpargeKernels.h"
#pragma clang diagnostic ignored "-Wpsabi"  // 512-bit vectors in inlined helpers: no ABI crosses a call
#define KERNEL(name) sparge_##name##_dot_emulated
#define VW 16
#define HAS_FMA 1
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#include "vector_ops.h"

#include "bf16_pairs.h"

/// A bf16 half as the instruction reads it: the float whose top half it is, denormals as 0.
INLINE vfloat widened(vbits top) { return (vfloat)(top & ~(vbits)((top & 0x7F800000u) == 0)); }

/// VDPBF16PS in the scalar twin's order (low pair first, each product exact in fp32 and added with one
/// rounding), so that the emulation meets the twin to the last bits the tolerance allows.
INLINE vfloat dot_pairs(vfloat acc, vint pairs, unsigned word) {
    vbits p = (vbits)pairs;
    vfloat wordLow = vsplat(sparge_bf16_widened((unsigned short)word));
    vfloat wordHigh = vsplat(sparge_bf16_widened((unsigned short)(word >> 16)));
    acc = vfma(widened(p << 16), wordLow, acc);
    return vfma(widened(p & 0xFFFF0000u), wordHigh, acc);
}

#include "dot_kernels_bf16.h"
#pragma clang attribute pop

sparge_bf16_tile_kernels sparge_bf16_dot_emulated(void) { return sparge_bf16_kernels_dot_emulated(); }
#endif
