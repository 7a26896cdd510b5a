// AttentionPrecision.int8's scores with their integer sums on AMX-INT8 tiles (TDPBSSD: C[16][16] int32 +=
// A[16][64 int8] · B[16 quads][16 lanes], each quad four int8 along the sum): the same integers as the vector
// kernels' pairs and quads (tile_kernels_int8.h), then the same float arithmetic (int8_score_terms.h), so the same
// bits on every set. The operands arrive in the int8 kernels' int16-pair layouts (CSpargeKernels.h) and are
// narrowed here into tile rows: K as [32][Dp] bytes per 32 keys, Q̂ᵀ as [Dp/4][64] quads per 64 lanes (Dp: D
// rounded up to 64, the bytes of an A row), ~20 KB at D = 128 against the 16384 vpdpwssd (8192 vpdpbusd) a
// 64 × 64 visit's scores take (32 TDPBSSD here). P·V stays on the vector kernels.
//
// The including file includes vector_ops.h (VW = 16) and defines KERNEL(name), TILE_CONFIGURE(), TILE_ZERO,
// TILE_LOAD, TILE_STORE (as tile_kernels_bf16.h takes them) and TILE_DP_INT8(c, a, b) (TDPBSSD).

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "int8_score_terms.h"

typedef short int8_tile_i16x32 __attribute__((vector_size(64), aligned(4)));
typedef signed char int8_tile_i8x32 __attribute__((vector_size(32), aligned(1)));

/// Key c's int8 values (its int16 pairs narrowed) into a tile row of `dp` bytes, zero past D.
INLINE void int8_tile_key_row(const int *pairs, long count, long dp, signed char *out) {
    const short *values = (const short *)pairs;  // little-endian: pair j = (values[2j], values[2j + 1])
    long i = 0;
    for (; i + 32 <= 2 * count; i += 32)
        *(int8_tile_i8x32 *)(out + i) = __builtin_convertvector(*(const int8_tile_i16x32 *)(values + i), int8_tile_i8x32);
    for (; i < 2 * count; i++) out[i] = (signed char)values[i];
    memset(out + 2 * count, 0, (size_t)(dp - 2 * count));
}

/// Q̂ᵀ's quad row j (values 4j…4j+3 of every lane) from its pair rows 2j and 2j + 1 (0 past the pairs).
INLINE void int8_tile_query_quads(const int *queriesT, long stride, long lanes, long pairs, long j, int *out) {
    for (long r = 0; r < lanes; r += VW) {
        vint w0 = 2 * j < pairs ? vloadi(queriesT + 2 * j * stride + r) : vspliti(0);
        vint w1 = 2 * j + 1 < pairs ? vloadi(queriesT + (2 * j + 1) * stride + r) : vspliti(0);
        vstorei(out + r, (w0 & 0xFF) | ((w0 >> 8) & 0xFF00) | ((w1 & 0xFF) << 16) | ((w1 << 8) & (int)0xFF000000));
    }
}

/// One 64-lane group's scores against keys c0 … c0 + 31 (`sums`: their int32 sums, [32][64]) on the tiles.
INLINE void int8_tile_sums(const signed char *k8, long dp, const int *q4, int *sums, prefetch_plan *ahead) {
    for (long g = 0; g < 64; g += 32) {
        TILE_ZERO(0);
        TILE_ZERO(1);
        TILE_ZERO(2);
        TILE_ZERO(3);
        for (long i = 0; i < dp; i += 64) {
            prefetch_some(ahead);
            TILE_LOAD(4, k8 + i, dp);
            TILE_LOAD(5, k8 + 16 * dp + i, dp);
            TILE_LOAD(6, q4 + i / 4 * 64 + g, 256);
            TILE_LOAD(7, q4 + i / 4 * 64 + g + 16, 256);
            TILE_DP_INT8(0, 4, 6);
            TILE_DP_INT8(1, 4, 7);
            TILE_DP_INT8(2, 5, 6);
            TILE_DP_INT8(3, 5, 7);
        }
        TILE_STORE(0, sums + g, 256);
        TILE_STORE(1, sums + g + 16, 256);
        TILE_STORE(2, sums + 16 * 64 + g, 256);
        TILE_STORE(3, sums + 16 * 64 + g + 16, 256);
    }
}

/// Lane group by lane group (64 lanes: Q̂ᵀ narrowed once per group), 32 keys at a time (K narrowed per chunk),
/// so that the scratch is bounded by D alone: 96·Dp bytes and 8 KB of sums, on the stack up to Dp = 512.
void KERNEL(int8_tile_scores)(const int *queriesT, long stride, long lanes, const float *laneScale, const int *keys,
                              long pairs, long keyCount, float keyScale, const float *keyMean, float *scores,
                              float *rowMax, const void *aheadKeys, const void *aheadValues, long aheadBytes) {
    const long dp = (2 * pairs + 63) / 64 * 64, quads = dp / 4, bytes = 96 * dp + 32 * 64 * 4 + 64;
    unsigned char onStack[dp <= 512 ? bytes : 1];
    unsigned char *raw = dp <= 512 ? onStack : malloc((size_t)bytes);
    signed char *k8 = (signed char *)(((uintptr_t)raw + 63) & ~(uintptr_t)63);  // [32][Dp]
    int *q4 = (int *)(k8 + 32 * dp), *sums = q4 + quads * 64;                   // [Dp/4][64], [32][64]
    prefetch_plan ahead = prefetch_spread(aheadKeys, aheadValues, aheadBytes,
                                          lanes / 32 * ((keyCount + 31) / 32) * (dp / 64));
    const vfloat ks = vsplat(keyScale);
    TILE_CONFIGURE();
    for (long l0 = 0; l0 < lanes; l0 += 64) {
        for (long j = 0; j < quads; j++) int8_tile_query_quads(queriesT + l0, stride, 64, pairs, j, q4 + j * 64);
        // Each 16 lanes' q·mean, as the vector kernels form it, and their maxima so far.
        vfloat offset[4], m[4];
        for (int v = 0; v < 4; v++) {
            offset[v] = vsplat(0);
            m[v] = vload(rowMax + l0 + v * VW);
            for (long j = 0; keyMean && j < pairs; j++)
                offset[v] = int8_offset_step(offset[v], vloadi(queriesT + j * stride + l0 + v * VW), vsplat(keyMean[2 * j]),
                                             vsplat(keyMean[2 * j + 1]));
        }
        for (long c0 = 0; c0 < keyCount; c0 += 32) {
            const long n = keyCount - c0 < 32 ? keyCount - c0 : 32;
            for (long c = 0; c < 32; c++) {
                if (c < n) int8_tile_key_row(keys + (c0 + c) * pairs, pairs, dp, k8 + c * dp);
                else memset(k8 + c * dp, 0, (size_t)dp);
            }
            int8_tile_sums(k8, dp, q4, sums, &ahead);
            // The sums scaled as the vector kernels scale theirs, and the maxima.
            for (int v = 0; v < 4; v++) {
                const vfloat scale = vload(laneScale + l0 + v * VW);
                for (long c = 0; c < n; c++) {
                    vfloat s = int8_score(vloadi(sums + c * 64 + v * VW), ks, offset[v], scale);
                    vstore(scores + (c0 + c) * stride + l0 + v * VW, s);
                    m[v] = vmax(m[v], s);
                }
            }
        }
        for (int v = 0; v < 4; v++) vstore(rowMax + l0 + v * VW, m[v]);
    }
    if (raw != onStack) free(raw);
}
