// The attention tile's micro-kernels, written once over a vector of VW floats and included once per ISA by
// kernels_<isa>.c inside a `#pragma clang attribute push(target(...))` region (see CSpargeKernels.h).
//
// The including file defines:
//   KERNEL(name)   the exported name of `name` for this ISA (sparge_<name>_<isa>)
//   VW             floats per vector register
//   LV             vectors per lane group: a micro-kernel covers LV·VW query lanes (divides 64)
//   MR             keys per score micro-kernel and output dimensions per P·V micro-kernel (MR × LV
//                  accumulators)
//   HAS_FMA        1 where the ISA has fused multiply-add
//   HAS_F16C       1 where the set's target has F16C (vcvtph2ps: f16 blocks widened eight at a time)
//   PROBE_CHAINS   independent FMA chains of the ceiling probe (enough for FMA latency × pipes)
//   MADD16_VNNI, MADD16_AVX2, MADD16_AVX2_HALVES   optional: which vpmaddwd `vmadd16` is, and for VNNI
//                  the vpdpwssd step and int8's scores in vpdpbusd's quads (tile_kernels_int8.h)
//
// Blocking (AVX2's 16 ymm registers, for example): 6 keys × 16 lanes = 12 accumulators, 2 query vectors and
// one broadcast key value per step — 15 registers, 12 FMAs for 8 loads. With fewer registers the
// accumulators spill (the SIMD16 kernel in Swift kept 16 accumulators of 2 ymm each: 32 registers).
//
// Loop order: scores walk lane groups outside and keys inside (a group's Q̂ᵀ columns, D × 64 bytes per
// vector, stay in L1 while the K rows stream); P·V walk dimension groups outside and lane groups inside (a
// group's V columns stay in L1 while Pᵀ, 16 KB, streams).

#include "vector_ops.h"
#include <string.h>

/// `acc[r][v] = STEP(A[s][v], B[r·bRow + s·bStep], acc[r][v])` for s < steps, r < nr (≤ MR): the
/// outer-product steps that all products are made of — one load of LV vectors of A and one broadcast of B
/// per row and step. Scores: s runs over D, A = Q̂ᵀ, B = the key rows (bRow = D, bStep = 1). P·V: s runs
/// over the keys, A = Pᵀ, B = the value rows (bRow = 1, bStep = D). Defined for fp32 (`outer_products`,
/// STEP a fused multiply-add) and for int8's packed pairs (tile_kernels_int8.h). `UNROLL` steps per loop
/// iteration: fp32 takes 4 — one step is 20 instructions on AVX2 (12 FMAs, 8 loads) and the loop's own
/// address and counter arithmetic had added 5 more, more than the front end sustains beside two FMAs a
/// cycle (the scores kernel ran 2.38 instructions per FMA, 1.98 unrolled; BENCHMARKS.md); int8 keeps 1.
/// The operands advance by pointer bumps: indexed by step (`b[r·bRow + s·bStep]`), the unrolled loop held
/// an address per row and step, more than the general registers left by the package's `-fPIC
/// -fno-omit-frame-pointer`, and spilled them (44 stack accesses per 48 FMAs; slower than not unrolled).
/// The order of every accumulator's additions is the same either way.
#define UNROLLED(n, loop) _Pragma(UNROLL_PRAGMA(n)) loop
#define UNROLL_PRAGMA(n) UNROLL_STRING(clang loop unroll_count(n))
#define UNROLL_STRING(text) #text
#define DEFINE_OUTER_PRODUCTS(name, vector, element, load, splat, STEP, UNROLL)                              \
    INLINE void name(vector acc[MR][LV], const element *a, long aStride, const element *b, long bRow,         \
                     long bStep, long steps, int nr) {                                                       \
        UNROLLED(UNROLL, for (long s = 0; s < steps; s++, a += aStride, b += bStep)) {                      \
            vector av[LV];                                                                                   \
            _Pragma("clang loop unroll(full)") for (int v = 0; v < LV; v++) av[v] = load(a + v * VW);        \
            _Pragma("clang loop unroll(full)") for (int r = 0; r < MR; r++) {                                \
                if (r < nr) {                                                                                \
                    vector x = splat(b[r * bRow]);                                                           \
                    _Pragma("clang loop unroll(full)") for (int v = 0; v < LV; v++) acc[r][v] = STEP(av[v], x, acc[r][v]); \
                }                                                                                            \
            }                                                                                                \
        }                                                                                                    \
    }
DEFINE_OUTER_PRODUCTS(outer_products, vfloat, float, vload, vsplat, vfma, 4)

/// `GROUPS(n)` for the micro-kernel widths that cover any count: MR, then 4 (where MR > 4), 2 and 1 (64 keys
/// = 10·6 + 4 on AVX2).
#define FOR_TAILS(GROUPS) \
    GROUPS(MR)            \
    if (MR > 4) { GROUPS(4) } \
    GROUPS(2)             \
    GROUPS(1)

/// Scores of `nk` (≤ MR) keys against LV·VW lanes in one pass over D, then their column maxima.
INLINE void scores_micro(const float *q, long stride, const float *keys, long dim, int nk, float *out,
                         float *rowMax) {
    vfloat acc[MR][LV];
#pragma clang loop unroll(full)
    for (int k = 0; k < MR; k++)
#pragma clang loop unroll(full)
        for (int v = 0; v < LV; v++) acc[k][v] = vsplat(0);
    outer_products(acc, q, stride, keys, dim, 1, dim, nk);
#pragma clang loop unroll(full)
    for (int v = 0; v < LV; v++) {
        vfloat m = vload(rowMax + v * VW);
#pragma clang loop unroll(full)
        for (int k = 0; k < MR; k++) {
            if (k < nk) {
                vstore(out + k * stride + v * VW, acc[k][v]);
                m = vmax(m, acc[k][v]);
            }
        }
        vstore(rowMax + v * VW, m);
    }
}

void KERNEL(scores)(const float *queriesT, long stride, long lanes, const float *keys, long dim, long keyCount,
                    float *scores, float *rowMax, const void *aheadKeys, const void *aheadValues, long aheadBytes) {
    // The next block's lines, spread evenly over this block's micro-kernels.
    prefetch_plan ahead = prefetch_spread(aheadKeys, aheadValues, aheadBytes,
                                          lanes / (LV * VW) * ((keyCount + MR - 1) / MR));
    for (long g = 0; g < lanes; g += LV * VW) {
        long c = 0;
#define SCORE_GROUPS(n)                                                                                    \
    for (; c + (n) <= keyCount; c += (n)) {                                                                \
        prefetch_some(&ahead);                                                                             \
        scores_micro(queriesT + g, stride, keys + c * dim, dim, (n), scores + c * stride + g, rowMax + g); \
    }
        FOR_TAILS(SCORE_GROUPS)
#undef SCORE_GROUPS
    }
}

void KERNEL(softmax)(float *scores, long stride, long lanes, long keyCount, float *blockMaxThenAlpha,
                     float *runningMax, float *runningSum) {
    const vfloat negInf = vsplat(-__builtin_inff());
    for (long r = 0; r < lanes; r += VW) {
        vfloat mPrev = vload(runningMax + r);
        vfloat m = vmax(mPrev, vload(blockMaxThenAlpha + r));
        vfloat shift = (vfloat)((vint)m & ~(vint)(m == negInf));  // 0 where m = −inf
        vfloat alpha = vexp2(mPrev - shift);
        vfloat s = vsplat(0);
        float *p = scores + r;
        for (long c = 0; c < keyCount; c++, p += stride) {
            vfloat e = vexp2(vload(p) - shift);
            vstore(p, e);
            s += e;
        }
        vstore(runningSum + r, vfma(vload(runningSum + r), alpha, s));
        vstore(runningMax + r, m);
        vstore(blockMaxThenAlpha + r, alpha);
    }
}

/// `nd` (≤ MR) output dimensions of LV·VW lanes: the rescale by α fused into the load, one pass over the keys.
INLINE void pv_micro(const float *p, long stride, long lanes, const float *values, long dim, long keyCount,
                     int nd, const float *alpha, float *out) {
    vfloat acc[MR][LV], a[LV];
#pragma clang loop unroll(full)
    for (int v = 0; v < LV; v++) a[v] = vload(alpha + v * VW);
#pragma clang loop unroll(full)
    for (int d = 0; d < MR; d++)
#pragma clang loop unroll(full)
        for (int v = 0; v < LV; v++) acc[d][v] = d < nd ? vload(out + d * lanes + v * VW) * a[v] : vsplat(0);
    outer_products(acc, p, stride, values, 1, dim, keyCount, nd);
#pragma clang loop unroll(full)
    for (int d = 0; d < MR; d++)
        if (d < nd)
#pragma clang loop unroll(full)
            for (int v = 0; v < LV; v++) vstore(out + d * lanes + v * VW, acc[d][v]);
}

/// Dimensions in groups of MR, then the tails. Where groups of MR would leave 2 (D = 128 on AVX2: 21·6 + 2),
/// the last MR + 2 go as two groups of 4: a group of 2 keeps 2·LV accumulators, fewer than the FMAs in flight
/// (latency × pipes), and ran at half rate. Each output's sum is in the same order either way.
void KERNEL(pv)(const float *probabilities, long stride, long lanes, const float *values, long dim, long keyCount,
                const float *alpha, float *outputT) {
    long i = 0, whole = MR > 4 && dim % MR == 2 && dim >= MR + 2 ? dim - MR - 2 : dim;
#define PV_GROUPS(n, end)                                                                                  \
    for (; i + (n) <= (end); i += (n))                                                                     \
        for (long g = 0; g < lanes; g += LV * VW)                                                          \
            pv_micro(probabilities + g, stride, lanes, values + i, dim, keyCount, (n), alpha + g,             \
                     outputT + i * lanes + g);
    PV_GROUPS(MR, whole)
    if (MR > 4) { PV_GROUPS(4, dim) }
    PV_GROUPS(2, dim)
    PV_GROUPS(1, dim)
#undef PV_GROUPS
}

float KERNEL(fma_probe)(long iterations) {
    vfloat c[PROBE_CHAINS];
    const vfloat a = vsplat(0.9999f), b = vsplat(1e-4f);
#pragma clang loop unroll(full)
    for (int k = 0; k < PROBE_CHAINS; k++) c[k] = vsplat(1.0f + k);
    for (long it = 0; it < iterations; it++) {
#pragma clang loop unroll(full)
        for (int k = 0; k < PROBE_CHAINS; k++) c[k] = vfma(c[k], a, b);
        __asm__ volatile("" : : : "memory");
    }
    vfloat s = vsplat(0);
#pragma clang loop unroll(full)
    for (int k = 0; k < PROBE_CHAINS; k++) s += c[k];
    return s[0];
}

#include "tile_kernels_int8.h"
#include "block_summaries.h"
#include "finish_rows.h"
#include "mask_exp.h"

/// The mask's compressed score, bit for bit as `MaskPredictor.dotDouble` defines it (which the GPU mask
/// kernels also repeat): over whole groups of 16, lane l accumulates fma(a[j+l], b[j+l], ·); the lanes fold
/// as v = acc[0..<8] + acc[8..<16], ((v0+v1)+(v2+v3))+((v4+v5)+(v6+v7)); the tail adds a[j]·b[j] rounded
/// twice, in order. A fused multiply-add is exact whoever computes it (the instruction here, the C
/// library's fma on the portable path), so every set gives the same Double.
double KERNEL(dot_double)(const double *a, const double *b, long d) {
#pragma clang fp contract(off)
    double acc[16];
#pragma clang loop unroll(full)
    for (int l = 0; l < 16; l++) acc[l] = 0;
    long j = 0;
    for (; j + 16 <= d; j += 16) {
#pragma clang loop unroll(full)
        for (int l = 0; l < 16; l++) acc[l] = __builtin_fma(a[j + l], b[j + l], acc[l]);
    }
    double v[8];
#pragma clang loop unroll(full)
    for (int l = 0; l < 8; l++) v[l] = acc[l] + acc[l + 8];
    double t = ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
    for (; j < d; j++) {
        double p = a[j] * b[j];
        t = t + p;
    }
    return t;
}

/// out[k] = dot_double(a, Double(b + k·d), d) for k < count, the key rows given as floats (widened exactly,
/// so the Doubles are those of the widened rows): four keys at a time, so that four dots' chains of
/// dependent FMAs run side by side (one dot alone waits on each FMA's latency); each dot keeps its own order,
/// so the Doubles are dot_double's. Written in vectors of 8 doubles (the compiler's own vectorization of
/// the 16-lane arrays spilled them). Floats, not Doubles, for the keys: half the bytes of a key tile, which
/// every row of a work item reads again, and no Double copy of the key means to make first.
typedef double dot_d8 __attribute__((vector_size(64), aligned(8)));
typedef float dot_f8 __attribute__((vector_size(32), aligned(4)));
/// Eight floats from `x` widened to Double (exactly).
INLINE dot_d8 KERNEL(widened8)(const float *x) { return __builtin_convertvector(*(const dot_f8 *)x, dot_d8); }
void KERNEL(dot_double_rows)(const double *a, const float *b, long count, long d, double *out) {
#pragma clang fp contract(off)
    long k = 0;
    for (; k + 4 <= count; k += 4) {
        const float *rows = b + k * d;
        dot_d8 lo[4] = {0}, hi[4] = {0};
        long j = 0;
        for (; j + 16 <= d; j += 16) {
            const dot_d8 x0 = *(const dot_d8 *)(a + j), x1 = *(const dot_d8 *)(a + j + 8);
#pragma clang loop unroll(full)
            for (int r = 0; r < 4; r++) {
                lo[r] = __builtin_elementwise_fma(x0, KERNEL(widened8)(rows + r * d + j), lo[r]);
                hi[r] = __builtin_elementwise_fma(x1, KERNEL(widened8)(rows + r * d + j + 8), hi[r]);
            }
        }
#pragma clang loop unroll(full)
        for (int r = 0; r < 4; r++) {
            dot_d8 v = lo[r] + hi[r];
            double t = ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
            for (long i = j; i < d; i++) {
                double p = a[i] * (double)rows[r * d + i];
                t = t + p;
            }
            out[k + r] = t;
        }
    }
    // The last keys one by one: each row widened into a copy, so that dot_double's own order sums it.
    double widened[d > 0 ? d : 1];
    for (; k < count; k++) {
        for (long j = 0; j < d; j++) widened[j] = (double)b[k * d + j];
        out[k] = KERNEL(dot_double)(a, widened, d);
    }
}

/// f16 to float, exactly: with F16C's vcvtph2ps eight at a time where the set has it (HAS_F16C), else (and
/// for the tail) by the bits — an f16 block stored by `--kv-precision f16` is widened once a visit, and
/// Swift's Float(Float16) in a portable build converted lane by lane in a library call (1.6× the pass's time).
void KERNEL(widen_f16)(const unsigned short *halves, long count, float *out) {
    long i = 0;
#if HAS_F16C
    for (; i + 8 <= count; i += 8)
        _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(halves + i))));
#endif
    for (; i < count; i++) {
        unsigned h = halves[i], sign = (h & 0x8000u) << 16, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
        unsigned bits;
        if (exponent == 0x1f) {
            bits = sign | 0x7f800000u | (mantissa << 13);  // ±∞, or a NaN
        } else if (exponent != 0) {
            bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
        } else {
            float m = (float)mantissa * 5.9604644775390625e-8f;  // ±0 or a subnormal: mantissa · 2⁻²⁴, exact
            memcpy(&bits, &m, 4);
            bits |= sign;
        }
        memcpy(out + i, &bits, 4);
    }
}

/// float to f16, to nearest even: with F16C's vcvtps2ph eight at a time where the set has it (HAS_F16C),
/// else (and for the tail) by the bits — each rank stores its K/V once a pass with `--kv-precision f16`,
/// where Swift's Float16(Float) in a portable build is a library call per value. Returns 0 when a finite value
/// overflowed (|x| rounds to 65520 or more: ±∞), else 1.
int KERNEL(narrow_f16)(const float *values, long count, unsigned short *out) {
    long i = 0;
    int fits = 1;
#if HAS_F16C
    const __m256 limit = _mm256_set1_ps(65520.0f), infinity = _mm256_set1_ps(__builtin_inff());
    const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256 beyond = _mm256_setzero_ps();
    for (; i + 8 <= count; i += 8) {
        __m256 x = _mm256_loadu_ps(values + i), a = _mm256_and_ps(x, magnitude);
        beyond = _mm256_or_ps(beyond, _mm256_and_ps(_mm256_cmp_ps(a, limit, _CMP_GE_OQ), _mm256_cmp_ps(a, infinity, _CMP_LT_OQ)));
        _mm_storeu_si128((__m128i *)(out + i), _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    fits = _mm256_movemask_ps(beyond) == 0;
#endif
    for (; i < count; i++) {
        unsigned u;
        memcpy(&u, values + i, 4);
        unsigned short sign = (unsigned short)((u >> 16) & 0x8000);
        unsigned a = u & 0x7fffffffu;
        if (a > 0x7f800000u) {
            out[i] = sign | 0x7e00 | (unsigned short)((u >> 13) & 0x3ff);  // a NaN: quiet, payload's top bits
        } else if (a >= 0x477ff000u) {  // rounds to 65520 or more: ∞
            if (a < 0x7f800000u) fits = 0;
            out[i] = sign | 0x7c00;
        } else if (a < 0x38800000u) {  // below 2⁻¹⁴: a subnormal or zero, a · 2²⁴ rounded to an integer (exact)
            float f;
            memcpy(&f, &a, 4);
            out[i] = sign | (unsigned short)__builtin_rintf(f * 16777216.0f);
        } else {
            unsigned rounded = a + 0xfff + ((a >> 13) & 1);
            out[i] = sign | (unsigned short)(((rounded >> 13) - (112 << 10)) & 0x7fff);
        }
    }
    return fits;
}

sparge_tile_kernels KERNEL(kernels)(void) {
    sparge_tile_kernels k = {KERNEL(scores), KERNEL(softmax), KERNEL(pv), KERNEL(fma_probe), VW, PROBE_CHAINS,
                             KERNEL(int8_scores), KERNEL(int8_softmax), KERNEL(int8_pv), KERNEL(madd_probe),
                             KERNEL(dot_double), KERNEL(widen_f16), KERNEL(narrow_f16), {0},
                             KERNEL(summarize_block), KERNEL(finish_rows), KERNEL(dot_double_rows),
                             KERNEL(mask_exp_row)};
    return k;
}
