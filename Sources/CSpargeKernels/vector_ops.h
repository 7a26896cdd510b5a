// The vector helpers of the tile kernels over a vector of VW floats (generic vector extensions, which the
// including file's `#pragma clang attribute push(target(...))` compiles for its ISA): loads, broadcasts,
// max, fused multiply-add, the exp2 recipe, and the spread prefetch of the next block. The including file
// defines VW and HAS_FMA (tile_kernels.h says what they mean).
#ifndef SPARGE_VECTOR_OPS_H
#define SPARGE_VECTOR_OPS_H

#include <stddef.h>

typedef float vfloat __attribute__((vector_size(VW * 4), aligned(4)));
typedef int vint __attribute__((vector_size(VW * 4), aligned(4)));
typedef unsigned vbits __attribute__((vector_size(VW * 4), aligned(4)));

#define INLINE static inline __attribute__((always_inline))

INLINE vfloat vload(const float *p) { return *(const vfloat *)p; }
INLINE void vstore(float *p, vfloat v) { *(vfloat *)p = v; }
/// A broadcast (one `vbroadcastss` from memory; `(vfloat){0} + x` would add 0 to x first, which is not
/// free: −0 + 0 = +0).
INLINE vfloat vsplat(float x) {
    vfloat v;
#pragma clang loop unroll(full)
    for (int i = 0; i < VW; i++) v[i] = x;
    return v;
}
/// `a > b ? a : b` lane by lane: x86's `maxps` exactly (no NaN handling; there are no NaNs here).
INLINE vfloat vmax(vfloat a, vfloat b) {
    vint greater = (vint)(a > b);
    return (vfloat)(((vint)a & greater) | ((vint)b & ~greater));
}
/// The float helpers on integer lanes (the same bits moved).
INLINE vint vloadi(const int *p) { return (vint)vload((const float *)p); }
INLINE void vstorei(int *p, vint v) { vstore((float *)p, (vfloat)v); }
INLINE vint vspliti(int x) { return (vint)vsplat(__builtin_bit_cast(float, x)); }
INLINE vfloat vfloat_of(vint v) { return __builtin_convertvector(v, vfloat); }

#if HAS_FMA
INLINE vfloat vfma(vfloat a, vfloat b, vfloat c) { return __builtin_elementwise_fma(a, b, c); }
#else
INLINE vfloat vfma(vfloat a, vfloat b, vfloat c) { return a * b + c; }
#endif

/// The reduction both exponentials below share: x clamped to ≥ −127 and split as n + f, n = round(x) by the
/// 1.5·2²³ trick (ties to even), f ∈ [−½, ½]. Returns f, and in `*exponent` n's exponent field (n · 2²³ as
/// bits): the integer of t = x + 1.5·2²³ sits in t's low bits, so t's bits shifted by 23 are that field
/// without subtracting the magic's (unsigned: the shift drops t's high bits by definition).
INLINE vfloat exp2_reduce(vfloat x, vbits *exponent) {
    const vfloat magic = vsplat(12582912.0f);
    vfloat xc = vmax(x, vsplat(-127.0f));
    vfloat t = xc + magic;
    *exponent = (vbits)t << 23;
    return xc - (t - magic);
}

/// `2^x` for x ≤ 0 (and up to 127): exp2_reduce, a degree-6 Taylor polynomial of 2^f for f ∈ [−½, ½], 2^n
/// added to the exponent bits. x ≤ −127, −inf included, gives exactly +0.
INLINE vfloat vexp2(vfloat x) {
    vbits exponent;
    vfloat f = exp2_reduce(x, &exponent);
    vfloat p = vsplat(1.540353039338161e-4f);
    p = vfma(p, f, vsplat(1.333355814642844e-3f));
    p = vfma(p, f, vsplat(9.618129107628477e-3f));
    p = vfma(p, f, vsplat(5.550410866482158e-2f));
    p = vfma(p, f, vsplat(0.2402265069591007f));
    p = vfma(p, f, vsplat(0.6931471805599453f));
    p = vfma(p, f, vsplat(1.0f));
    return (vfloat)((vbits)p + exponent);
}

/// `2^x` for a probability that is then rounded to bf16 (8 significant bits, a relative step of up to 2⁻⁹):
/// vexp2's reduction with a degree-3 polynomial, minimax in relative error (≤ 1.02e-4, 1/19 of that step)
/// with p(0) = 1 exactly, so that a row's maximum is exactly 1 and x ≤ −127 exactly +0 as in vexp2 (x in
/// (−127, −126) gives a wrong subnormal, as vexp2 does, which P's rounding then flushes to 0). 9
/// instructions against vexp2's 12: on AMX the softmax is as long as a tile product, and this is most of it.
INLINE vfloat vexp2_probability(vfloat x) {
    vbits exponent;
    vfloat f = exp2_reduce(x, &exponent);
    vfloat p = vsplat(0.05500862f);
    p = vfma(p, f, vsplat(0.24221021f));
    p = vfma(p, f, vsplat(0.69328288f));
    p = vfma(p, f, vsplat(1.0f));
    return (vfloat)((vbits)p + exponent);
}

/// The next block's lines (keys, then values), asked for a few at a time: `lines` of each, `perCall` per
/// call, `*line` the next one (no division: it cost as much as a micro-kernel's products).
typedef struct {
    const char *keys, *values;
    long lines, perCall, next;
} prefetch_plan;

INLINE prefetch_plan prefetch_spread(const void *aheadKeys, const void *aheadValues, long aheadBytes, long calls) {
    long lines = aheadKeys ? (aheadBytes + 63) / 64 : 0;
    prefetch_plan plan = {aheadKeys, aheadValues, lines, calls ? (2 * lines + calls - 1) / calls : 0, 0};
    return plan;
}

INLINE void prefetch_some(prefetch_plan *plan) {
    for (long end = plan->next + plan->perCall; plan->next < end && plan->next < 2 * plan->lines; plan->next++) {
        long line = plan->next;
        __builtin_prefetch(line < plan->lines ? plan->keys + line * 64 : plan->values + (line - plan->lines) * 64, 0, 3);
    }
}

#endif
