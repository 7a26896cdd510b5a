// AttentionPrecision.int8's scores with their integer sums on AMX-INT8 tiles (TDPBSSD: C[16][16] int32 +=
// A[16][64 int8] · B[16 quads][16 lanes], each quad four int8 along the sum): the same integers as the vector
// kernels' vpdpwssd (tile_kernels_int8.h), then the same float arithmetic (int8_score_terms.h), so the same
// bits on every set. The operands arrive in the int8 kernels' int16-pair layouts (CSpargeKernels.h) and are
// narrowed here into tile rows: K as [Kp][Dp] bytes, Q̂ᵀ as [Dp/4][lanes] quads (Dp: D rounded up to 64, the
// bytes of an A row; Kp: the keys rounded up to 32), a few KB on the stack per call against the 16384
// vpdpwssd a 64 × 64 visit's scores take at D = 128 (32 TDPBSSD here). P·V stays on the vector kernels.
//
// The including file includes vector_ops.h (VW = 16) and defines KERNEL(name), TILE_CONFIGURE(), TILE_ZERO,
// TILE_LOAD, TILE_STORE (as tile_kernels_bf16.h takes them) and TILE_DP_INT8(c, a, b) (TDPBSSD).

#include <stdint.h>
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

void KERNEL(int8_tile_scores)(const int *queriesT, long stride, long lanes, const float *laneScale, const int *keys,
                              long pairs, long keyCount, float keyScale, const float *keyMean, float *scores,
                              float *rowMax, const void *aheadKeys, const void *aheadValues, long aheadBytes) {
    const long dp = (2 * pairs + 63) / 64 * 64, kp = (keyCount + 31) / 32 * 32, quads = dp / 4;
    unsigned char raw[kp * dp + quads * lanes * 4 + kp * lanes * 4 + 64];
    signed char *k8 = (signed char *)(((uintptr_t)raw + 63) & ~(uintptr_t)63);
    int *q4 = (int *)(k8 + kp * dp), *sums = q4 + quads * lanes;  // sums: [Kp][lanes] int32
    for (long c = 0; c < kp; c++) {
        if (c < keyCount) int8_tile_key_row(keys + c * pairs, pairs, dp, k8 + c * dp);
        else memset(k8 + c * dp, 0, (size_t)dp);
    }
    for (long j = 0; j < quads; j++) int8_tile_query_quads(queriesT, stride, lanes, pairs, j, q4 + j * lanes);
    prefetch_plan ahead = prefetch_spread(aheadKeys, aheadValues, aheadBytes, lanes / 32 * (kp / 32) * (dp / 64));
    const long laneBytes = lanes * 4;
    TILE_CONFIGURE();
    for (long g = 0; g < lanes; g += 32) {
        for (long c = 0; c < kp; c += 32) {
            TILE_ZERO(0);
            TILE_ZERO(1);
            TILE_ZERO(2);
            TILE_ZERO(3);
            for (long i = 0; i < dp; i += 64) {
                prefetch_some(&ahead);
                TILE_LOAD(4, k8 + c * dp + i, dp);
                TILE_LOAD(5, k8 + (c + 16) * dp + i, dp);
                TILE_LOAD(6, q4 + i / 4 * lanes + g, laneBytes);
                TILE_LOAD(7, q4 + i / 4 * lanes + g + 16, laneBytes);
                TILE_DP_INT8(0, 4, 6);
                TILE_DP_INT8(1, 4, 7);
                TILE_DP_INT8(2, 5, 6);
                TILE_DP_INT8(3, 5, 7);
            }
            int *out = sums + c * lanes + g;
            TILE_STORE(0, out, laneBytes);
            TILE_STORE(1, out + 16, laneBytes);
            TILE_STORE(2, out + 16 * lanes, laneBytes);
            TILE_STORE(3, out + 16 * lanes + 16, laneBytes);
        }
    }
    // The sums scaled as the vector kernels scale theirs, lane by lane, and the block's maxima.
    const vfloat ks = vsplat(keyScale);
    for (long r = 0; r < lanes; r += VW) {
        vfloat offset = vsplat(0), m = vload(rowMax + r);
        const vfloat scale = vload(laneScale + r);
        for (long j = 0; keyMean && j < pairs; j++)
            offset = int8_offset_step(offset, vloadi(queriesT + j * stride + r), vsplat(keyMean[2 * j]),
                                      vsplat(keyMean[2 * j + 1]));
        for (long c = 0; c < keyCount; c++) {
            vfloat s = int8_score(vloadi(sums + c * lanes + r), ks, offset, scale);
            vstore(scores + c * stride + r, s);
            m = vmax(m, s);
        }
        vstore(rowMax + r, m);
    }
}
