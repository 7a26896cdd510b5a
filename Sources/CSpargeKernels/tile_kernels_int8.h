// The integer micro-kernels of AttentionPrecision.int8 (its doc comment says what they compute), included
// by tile_kernels.h after the fp32 ones, with the same VW, LV, MR and loop orders.
//
// Every product is `vmadd16` (but the VNNI set's scores: vpdpbusd's u8 × s8 quads, below): two int16 products
// summed into each 32-bit lane (AVX2's vpmaddwd, 16 products
// per instruction against an FMA's 8). On Zen 3 vpmaddwd alone issues 2 per cycle (twice the FMAs'
// multiply-adds), but the vpaddd that accumulates each one shares its pipes: the kernels' step measures
// 1.35–1.45× the FMA rate (73–79 against 53–56 G multiply-adds per second on one core; `madd_probe`).
// Operands are int16 pairs packed into 32-bit words, low half first, the pair running along the sum:
//   Q̂ᵀ   [⌈D/2⌉][stride]    lane r of pair j: (q[r][2j], q[r][2j+1]), int8 values (|q| ≤ 127)
//   K    [keys][⌈D/2⌉]      key c, pair j: (k[c][2j], k[c][2j+1]), int8 values; an odd D pads with 0
//   Pᵀ   [⌈keys/2⌉][stride] lane r of pair j: (p[2j][r], p[2j+1][r]), 0 ≤ p ≤ P_ONE; an odd count pads with 0
//   V    [⌈keys/2⌉][D]      pair j of dimension i: (v[2j][i], v[2j+1][i]), |v| ≤ 2047
// (vpmaddubsw, the u8 × s8 instruction, does 32 products but its int16 sums need a vpmaddwd by ones to
// widen: the same two multiply-pipe instructions per 32 products, plus saturation to care for.)

#include "int8_score_terms.h"

#define P_ONE 16383  // a probability of 1 in Pᵀ's fixed point (14 bits)

/// Lane by lane, `lo(a)·lo(b) + hi(a)·hi(b)` of the int16 halves (vpmaddwd). Never wraps here: |q·k| pairs
/// sum to ≤ 2·127² and p·v pairs to ≤ 2·16383·2047. The including file says which instruction: MADD16_VNNI
/// (16 lanes: AVX512-BW's vpmaddwd; the step is then vpdpwssd), MADD16_AVX2
/// (8 lanes: one vpmaddwd), MADD16_AVX2_HALVES (16 lanes: AVX-512F has no vpmaddwd of its own — that is
/// AVX512BW —, so one on each 256-bit half), else plain vector arithmetic, the same integers (the portable
/// path, which the tests run against the others on every machine).
INLINE vint vmadd16(vint a, vint b) {
#if defined(MADD16_VNNI)
    return (vint)_mm512_madd_epi16((__m512i)a, (__m512i)b);
#elif defined(MADD16_AVX2)
    return (vint)__builtin_ia32_pmaddwd256((__v16hi)a, (__v16hi)b);
#elif defined(MADD16_AVX2_HALVES)
    typedef int half __attribute__((vector_size(32)));
    half lo = (half)__builtin_ia32_pmaddwd256((__v16hi)__builtin_shufflevector(a, a, 0, 1, 2, 3, 4, 5, 6, 7),
                                              (__v16hi)__builtin_shufflevector(b, b, 0, 1, 2, 3, 4, 5, 6, 7));
    half hi = (half)__builtin_ia32_pmaddwd256((__v16hi)__builtin_shufflevector(a, a, 8, 9, 10, 11, 12, 13, 14, 15),
                                              (__v16hi)__builtin_shufflevector(b, b, 8, 9, 10, 11, 12, 13, 14, 15));
    return __builtin_shufflevector(lo, hi, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
#else
    return ((a << 16) >> 16) * ((b << 16) >> 16) + (a >> 16) * (b >> 16);
#endif
}

/// `acc + Σ pairs of a·x`: the integer step of `int_outer_products`. With MADD16_VNNI (AVX512-VNNI) one
/// vpdpwssd: the same products and sums in one instruction instead of vpmaddwd and vpaddd (neither saturates
/// here, and the sums never wrap, so the integers are the same).
#if defined(MADD16_VNNI)
INLINE vint madd_step(vint a, vint x, vint acc) {
    return (vint)_mm512_dpwssd_epi32((__m512i)acc, (__m512i)a, (__m512i)x);
}
#else
INLINE vint madd_step(vint a, vint x, vint acc) { return acc + vmadd16(a, x); }
#endif
DEFINE_OUTER_PRODUCTS(int_outer_products, vint, int, vloadi, vspliti, madd_step, 1)

/// The scores of `nk` (≤ MR) keys from their integer sums `acc`, scaled as int8_scores' signature says, stored
/// (keys `stride` apart) and taken into the lanes' running maxima.
INLINE void int8_finish_scores(vint acc[MR][LV], int nk, const vfloat *scale, const vfloat *offset, float keyScale,
                               float *out, long stride, float *rowMax) {
    const vfloat ks = vsplat(keyScale);
#pragma clang loop unroll(full)
    for (int v = 0; v < LV; v++) {
        vfloat m = vload(rowMax + v * VW);
#pragma clang loop unroll(full)
        for (int k = 0; k < MR; k++) {
            if (k < nk) {
                vfloat s = int8_score(acc[k][v], ks, offset[v], scale[v]);
                vstore(out + k * stride + v * VW, s);
                m = vmax(m, s);
            }
        }
        vstore(rowMax + v * VW, m);
    }
}

/// Scores of `nk` (≤ MR) keys against LV·VW lanes: integer sums over D of the pairs, scaled.
INLINE void int8_scores_micro(const int *q, long stride, const int *keys, long pairs, int nk, const vfloat *scale,
                              const vfloat *offset, float keyScale, float *out, float *rowMax) {
    vint acc[MR][LV];
#pragma clang loop unroll(full)
    for (int k = 0; k < MR; k++)
#pragma clang loop unroll(full)
        for (int v = 0; v < LV; v++) acc[k][v] = vspliti(0);
    int_outer_products(acc, q, stride, keys, pairs, 1, pairs, nk);
    int8_finish_scores(acc, nk, scale, offset, keyScale, out, stride, rowMax);
}

/// One lane group's q·mean (Q̂ᵀ's integers times the K mean, in fp32; 0 without a mean) and lane scales.
INLINE void int8_lane_terms(const int *q, long stride, long pairs, const float *laneScale, const float *keyMean,
                            vfloat *offset, vfloat *scale) {
#pragma clang loop unroll(full)
    for (int v = 0; v < LV; v++) {
        offset[v] = vsplat(0);
        scale[v] = vload(laneScale + v * VW);
    }
    for (long j = 0; keyMean && j < pairs; j++) {
        const vfloat lo = vsplat(keyMean[2 * j]), hi = vsplat(keyMean[2 * j + 1]);
#pragma clang loop unroll(full)
        for (int v = 0; v < LV; v++) offset[v] = int8_offset_step(offset[v], vloadi(q + j * stride + v * VW), lo, hi);
    }
}

#if defined(MADD16_VNNI)
/// AVX512-VNNI's vpdpbusd: four u8 × s8 products summed into each 32-bit lane, exactly, 64 products an
/// instruction where vpdpwssd's int16 pairs take 32. The scores take it: Q's values biased by +128 to u8 and
/// K's as s8, so that a lane sums Σ (q + 128)·k = Σ q·k + 128·Σ k, and each key's accumulators start at
/// −128·Σ k: the same integer sums as the pairs give. Both are repacked from the pairs at each call (P·V keeps
/// the pairs: P has 14 bits).
INLINE vint quad_step(vint a, vint x, vint acc) {
    return (vint)_mm512_dpbusd_epi32((__m512i)acc, (__m512i)a, (__m512i)x);
}
DEFINE_OUTER_PRODUCTS(quad_outer_products, vint, int, vloadi, vspliti, quad_step, 1)
#define QUAD_LANES (LV * VW)
// The repacked operands live on the stack: up to D = 256 and 128 keys a chunk (48 KiB); larger D takes the pairs.
#define QUADS_MAX 64
#define QUAD_KEYS 128

/// One lane group of Q̂ᵀ's pairs (`q`, rows `stride` apart) as biased u8 quads [⌈pairs/2⌉][QUAD_LANES]: quad j
/// of lane r holds q[r][4j…4j+3] + 128, low byte first (a missing last pair's values 0, so 128, against K's 0).
INLINE void queries_as_quads(const int *q, long stride, long pairs, int *quads) {
    const vint bias = vspliti(128), byte = vspliti(0xFF);
    for (long j = 0; 2 * j < pairs; j++) {
#pragma clang loop unroll(full)
        for (int v = 0; v < LV; v++) {
            const vint a = vloadi(q + 2 * j * stride + v * VW);
            const vint b = 2 * j + 1 < pairs ? vloadi(q + (2 * j + 1) * stride + v * VW) : vspliti(0);
            // Each biased value is a byte (0…255); the shifts that place them are unsigned.
            const vbits lo = (vbits)((((vint)((vbits)a << 16) >> 16) + bias) & byte);
            const vbits hi = (vbits)(((a >> 16) + bias) & byte);
            const vbits lo2 = (vbits)((((vint)((vbits)b << 16) >> 16) + bias) & byte);
            const vbits hi2 = (vbits)(((b >> 16) + bias) & byte);
            vstorei(quads + j * QUAD_LANES + v * VW, (vint)(lo | hi << 8 | lo2 << 16 | hi2 << 24));
        }
    }
}

/// K's pairs (`pairs` words a key) as s8 quads [keys][⌈pairs/2⌉] — the pairs' int16 values in memory order,
/// narrowed, a last odd pair followed by zeros — and each key's −128·Σ k.
INLINE void keys_as_quads(const int *keys, long pairs, long keyCount, int *quads, int *start) {
    const long values = 2 * pairs, quadCount = (pairs + 1) / 2;
    const __m512i ones = _mm512_set1_epi16(1);
    for (long c = 0; c < keyCount; c++) {
        const short *k = (const short *)(keys + c * pairs);
        unsigned char *out = (unsigned char *)(quads + c * quadCount);
        __m512i sums = _mm512_setzero_si512();
        for (long i = 0; i < 4 * quadCount; i += 32) {
            const long left = values - i, room = 4 * quadCount - i;
            const __m512i x = _mm512_maskz_loadu_epi16(left >= 32 ? ~0u : left > 0 ? (1u << left) - 1 : 0, k + i);
            sums = _mm512_add_epi32(sums, _mm512_madd_epi16(x, ones));
            _mm256_mask_storeu_epi8(out + i, room >= 32 ? ~0u : (1u << room) - 1, _mm512_cvtepi16_epi8(x));
        }
        start[c] = -128 * _mm512_reduce_add_epi32(sums);
    }
}

/// Scores of `nk` (≤ MR) keys against QUAD_LANES lanes from the quads, each key's sums started at `start`.
INLINE void int8_quad_scores_micro(const int *q, const int *keys, long quads, int nk, const int *start,
                                   const vfloat *scale, const vfloat *offset, float keyScale, float *out, long stride,
                                   float *rowMax) {
    vint acc[MR][LV];
#pragma clang loop unroll(full)
    for (int k = 0; k < MR; k++)
#pragma clang loop unroll(full)
        for (int v = 0; v < LV; v++) acc[k][v] = vspliti(k < nk ? start[k] : 0);
    quad_outer_products(acc, q, QUAD_LANES, keys, quads, 1, quads, nk);
    int8_finish_scores(acc, nk, scale, offset, keyScale, out, stride, rowMax);
}

/// int8_scores on the quads, QUAD_KEYS keys at a time (each chunk's K repacked once for every lane group).
INLINE void int8_quad_scores(const int *queriesT, long stride, long lanes, const float *laneScale, const int *keys,
                             long pairs, long keyCount, float keyScale, const float *keyMean, float *scores,
                             float *rowMax, prefetch_plan *ahead) {
    const long quadCount = (pairs + 1) / 2;
    int keyQuads[QUAD_KEYS * QUADS_MAX] __attribute__((aligned(64))), keyStart[QUAD_KEYS],
        queryQuads[QUADS_MAX * QUAD_LANES] __attribute__((aligned(64)));
    for (long c0 = 0; c0 < keyCount; c0 += QUAD_KEYS) {
        const long n = keyCount - c0 < QUAD_KEYS ? keyCount - c0 : QUAD_KEYS;
        keys_as_quads(keys + c0 * pairs, pairs, n, keyQuads, keyStart);
        for (long g = 0; g < lanes; g += QUAD_LANES) {
            vfloat offset[LV], scale[LV];
            int8_lane_terms(queriesT + g, stride, pairs, laneScale + g, keyMean, offset, scale);
            queries_as_quads(queriesT + g, stride, pairs, queryQuads);
            long c = 0;
#define INT8_QUAD_GROUPS(m)                                                                                \
    for (; c + (m) <= n; c += (m)) {                                                                       \
        prefetch_some(ahead);                                                                              \
        int8_quad_scores_micro(queryQuads, keyQuads + c * quadCount, quadCount, (m), keyStart + c, scale,   \
                               offset, keyScale, scores + (c0 + c) * stride + g, stride, rowMax + g);        \
    }
            FOR_TAILS(INT8_QUAD_GROUPS)
#undef INT8_QUAD_GROUPS
        }
    }
}
#endif

void KERNEL(int8_scores)(const int *queriesT, long stride, long lanes, const float *laneScale, const int *keys,
                         long pairs, long keyCount, float keyScale, const float *keyMean, float *scores,
                         float *rowMax, const void *aheadKeys, const void *aheadValues, long aheadBytes) {
    prefetch_plan ahead = prefetch_spread(aheadKeys, aheadValues, aheadBytes,
                                          lanes / (LV * VW) * ((keyCount + MR - 1) / MR));
#if defined(MADD16_VNNI)
    if ((pairs + 1) / 2 <= QUADS_MAX) {
        int8_quad_scores(queriesT, stride, lanes, laneScale, keys, pairs, keyCount, keyScale, keyMean, scores, rowMax,
                         &ahead);
        return;
    }
#endif
    for (long g = 0; g < lanes; g += LV * VW) {
        vfloat offset[LV], scale[LV];
        int8_lane_terms(queriesT + g, stride, pairs, laneScale + g, keyMean, offset, scale);
        long c = 0;
#define INT8_SCORE_GROUPS(n)                                                                               \
    for (; c + (n) <= keyCount; c += (n)) {                                                                \
        prefetch_some(&ahead);                                                                             \
        int8_scores_micro(queriesT + g, stride, keys + c * pairs, pairs, (n), scale, offset, keyScale,      \
                          scores + c * stride + g, rowMax + g);                                             \
    }
        FOR_TAILS(INT8_SCORE_GROUPS)
#undef INT8_SCORE_GROUPS
    }
}

/// `round(p · P_ONE)` (ties to even, the 1.5·2²³ trick; p ∈ [0, 1]) as integers and as floats.
INLINE vint quantize_probability(vfloat p, vfloat *asFloat) {
#pragma clang fp contract(off)  // the product rounded by itself, never fused into the addition
    const vfloat magic = vsplat(12582912.0f);
    vfloat scaled = p * vsplat((float)P_ONE);
    vfloat t = scaled + magic;
    *asFloat = t - magic;
    return (vint)t - (vint)magic;
}

void KERNEL(int8_softmax)(float *scores, long stride, long lanes, long keyCount, float *blockMaxThenAlpha,
                          float *runningMax, float *runningSum) {
    const vfloat negInf = vsplat(-__builtin_inff()), unit = vsplat(1.0f / P_ONE);
    for (long r = 0; r < lanes; r += VW) {
        vfloat mPrev = vload(runningMax + r);
        vfloat m = vmax(mPrev, vload(blockMaxThenAlpha + r));
        vfloat shift = (vfloat)((vint)m & ~(vint)(m == negInf));  // 0 where m = −inf
        vfloat alpha = vexp2(mPrev - shift);
        vfloat s = vsplat(0);
        // Row j of the packed Pᵀ overwrites score row j, read already (as row 2j or 2j+1 ≥ j).
        for (long c = 0; c < keyCount; c += 2) {
            vfloat f0, f1 = vsplat(0);
            vint p0 = quantize_probability(vexp2(vload(scores + c * stride + r) - shift), &f0), p1 = vspliti(0);
            if (c + 1 < keyCount) p1 = quantize_probability(vexp2(vload(scores + (c + 1) * stride + r) - shift), &f1);
            vstorei((int *)scores + c / 2 * stride + r, (p0 & 0xFFFF) | (p1 << 16));
            s += f0 + f1;
        }
        vstore(runningSum + r, vfma(vload(runningSum + r), alpha, s * unit));
        vstore(runningMax + r, m);
        vstore(blockMaxThenAlpha + r, alpha);
    }
}

/// `nd` (≤ MR) output dimensions of LV·VW lanes over at most 64 keys (32 pairs): the integer sums stay below
/// 64·16383·2047 < 2³¹. The rescale by α (NULL: none) is fused into the load.
INLINE void int8_pv_micro(const int *p, long stride, long lanes, const int *values, long dim, long pairs, int nd,
                          const float *valueScale, const float *alpha, float *out) {
    vint acc[MR][LV];
#pragma clang loop unroll(full)
    for (int d = 0; d < MR; d++)
#pragma clang loop unroll(full)
        for (int v = 0; v < LV; v++) acc[d][v] = vspliti(0);
    int_outer_products(acc, p, stride, values, 1, dim, pairs, nd);
#pragma clang loop unroll(full)
    for (int d = 0; d < MR; d++) {
        if (d < nd) {
            const vfloat vs = vsplat(valueScale[d] * (1.0f / P_ONE));
#pragma clang loop unroll(full)
            for (int v = 0; v < LV; v++) {
                vfloat o = vload(out + d * lanes + v * VW);
                if (alpha) o *= vload(alpha + v * VW);
                vstore(out + d * lanes + v * VW, vfma(vfloat_of(acc[d][v]), vs, o));
            }
        }
    }
}

void KERNEL(int8_pv)(const int *probabilities, long stride, long lanes, const int *values, long dim, long keyCount,
                     const float *valueScale, const float *alpha, float *outputT) {
    long pairs = (keyCount + 1) / 2, i = 0;
#define INT8_PV_GROUPS(n)                                                                                  \
    for (; i + (n) <= dim; i += (n))                                                                       \
        for (long g = 0; g < lanes; g += LV * VW)                                                          \
            for (long j = 0; j < pairs; j += 32)                                                           \
                int8_pv_micro(probabilities + j * stride + g, stride, lanes, values + j * dim + i, dim,       \
                              pairs - j < 32 ? pairs - j : 32, (n), valueScale + i, j == 0 ? alpha + g : 0,  \
                              outputT + i * lanes + g);
    FOR_TAILS(INT8_PV_GROUPS)
#undef INT8_PV_GROUPS
}

int KERNEL(madd_probe)(long iterations) {
    // Multiplied by 0 (which the compiler cannot see): every chain keeps its nonzero start, and the timing
    // of integer multiplies does not depend on the values.
    static volatile int zero = 0;
    vint c[PROBE_CHAINS];
    const vint b = vspliti(zero);
#pragma clang loop unroll(full)
    for (int k = 0; k < PROBE_CHAINS; k++) c[k] = vspliti(k + 1);
    for (long it = 0; it < iterations; it++) {
#pragma clang loop unroll(full)
        for (int k = 0; k < PROBE_CHAINS; k++) c[k] = madd_step(c[k], b, c[k]);
        __asm__ volatile("" : : : "memory");
    }
    vint s = vspliti(0);
#pragma clang loop unroll(full)
    for (int k = 0; k < PROBE_CHAINS; k++) s += c[k];
    return s[0];
}
