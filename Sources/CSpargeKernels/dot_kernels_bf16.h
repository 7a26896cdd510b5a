// AttentionPrecision.bf16's products in vectors of bf16 pairs (AVX512-BF16's VDPBF16PS: 16 fp32 lanes, each
// += the dot product of its two bf16 pairs), on the same operand layouts as the AMX tiles (CSpargeKernels.h,
// `sparge_bf16_*_fn`) and with the same online softmax between them (bf16_softmax.h), so that one driver and
// one packing serve both. Included by kernels_avx512bf16.c (the instruction) and by
// kernels_avx512bf16_emulated.c (the same loops with the instruction written out in C, for the tests on any
// machine with AVX2).
//
// The including file includes vector_ops.h (VW = 16, HAS_FMA) and defines KERNEL(name), `bf16_pairs(lo, hi)`
// (bf16_softmax.h) and
//   vfloat dot_pairs(vfloat acc, vint pairs, unsigned word)
//       acc[n] + lo(pairs[n])·lo(word) + hi(pairs[n])·hi(word), bf16 halves widened with denormals as 0
//
// Both products are outer products of 32 lanes (two vectors) against 8 rows, over the pairs along their sum:
//   Sᵀ[c][r] = Σ_j K[c] pair j · Q̂ᵀ[j][r]      (8 keys c, their pair j as one broadcast word)
//   Oᵀ[i][r] += Σ_j Vᵀ[i] pair j · Pᵀ[j][r]    (8 dimensions i)
// 16 accumulators, 2 vector loads and 8 broadcasts for 16 VDPBF16PS a pair: 32 multiply-adds an instruction,
// twice an FMA's. A visit of 64 lanes × 64 keys at D = 128 is 64·64·128 multiply-adds a product: 16384
// VDPBF16PS against fp32's 32768 FMAs. The softmax between them is bf16_softmax.h's, as on AMX.

#include "bf16_softmax.h"
#include "bf16_ahead.h"

/// Rows of the outer products: keys of Sᵀ, dimensions of Oᵀ.
#define DOT_ROWS 8

/// acc[m][v] += Σ_{j < pairs} row m's pair j · lanes' pair j, rows `rowWords` words apart, lanes' pair rows
/// `stride` words apart (two vectors of 16 lanes each).
INLINE void dot_outer_products(vfloat acc[DOT_ROWS][2], const unsigned *rows, long rowWords, const unsigned *lanes,
                               long stride, long pairs) {
    for (long j = 0; j < pairs; j++) {
        vint x0 = vloadi((const int *)lanes + j * stride), x1 = vloadi((const int *)lanes + j * stride + VW);
#pragma clang loop unroll(full)
        for (int m = 0; m < DOT_ROWS; m++) {
            unsigned word = rows[m * rowWords + j];
            acc[m][0] = dot_pairs(acc[m][0], x0, word);
            acc[m][1] = dot_pairs(acc[m][1], x1, word);
        }
    }
}

/// Sᵀ for 32 lanes × 8 keys at a time over every padded key of the visit's blocks (rows past a block's key
/// count are 0 in K, so their scores are 0, as the tiles leave them), then each 16 lanes' maxima over the real
/// keys, scaled.
void KERNEL(bf16_scores)(const unsigned *queriesT, long stride, long lanes, const sparge_bf16_block *blocks,
                         long blockCount, long dim, float scale, float *scores, float *rowMax,
                         const sparge_bf16_block *ahead, long aheadCount) {
    const long keyCount = sparge_bf16_visit_keys(blocks, blockCount), pairs = dim / 2;
    const vfloat s = vsplat(scale);
    ahead_plan asked = ahead_spread(ahead, aheadCount, dim, lanes / 32 * (sparge_bf16_padded_keys(keyCount) / DOT_ROWS));
    for (long g = 0; g < lanes; g += 32) {
        for (long b = 0, row = 0; b < blockCount; row += sparge_bf16_padded_keys(blocks[b].keyCount), b++) {
            const unsigned short *keys = blocks[b].keys;
            for (long c = 0; c < sparge_bf16_padded_keys(blocks[b].keyCount); c += DOT_ROWS) {
                ahead_some(&asked);
                vfloat acc[DOT_ROWS][2];
#pragma clang loop unroll(full)
                for (int m = 0; m < DOT_ROWS; m++) acc[m][0] = acc[m][1] = vsplat(0);
                dot_outer_products(acc, (const unsigned *)(keys + c * dim), pairs, queriesT + g, stride, pairs);
#pragma clang loop unroll(full)
                for (int m = 0; m < DOT_ROWS; m++) {
                    vstore(scores + (row + c + m) * stride + g, acc[m][0]);
                    vstore(scores + (row + c + m) * stride + g + VW, acc[m][1]);
                }
            }
        }
        row_maxima16(scores, stride, g, keyCount, s, rowMax);
        row_maxima16(scores, stride, g + VW, keyCount, s, rowMax);
    }
}

/// Oᵀ ← α·Oᵀ + Vᵀ·Pᵀ for 32 lanes × 8 dimensions at a time: the accumulators start as Oᵀ times α (the same
/// rounded product the tiles add onto), then take every padded key pair of the visit's blocks in order.
void KERNEL(bf16_pv)(const unsigned *probabilities, long stride, long lanes, const sparge_bf16_block *blocks,
                     long blockCount, long dim, const float *alpha, float *outputT) {
    for (long g = 0; g < lanes; g += 32) {
        const vfloat a0 = vload(alpha + g), a1 = vload(alpha + g + VW);
        for (long i = 0; i < dim; i += DOT_ROWS) {
            float *o = outputT + i * lanes + g;
            vfloat acc[DOT_ROWS][2];
#pragma clang loop unroll(full)
            for (int m = 0; m < DOT_ROWS; m++) {
                acc[m][0] = vload(o + m * lanes) * a0;
                acc[m][1] = vload(o + m * lanes + VW) * a1;
            }
            for (long b = 0, row = 0; b < blockCount; row += sparge_bf16_padded_keys(blocks[b].keyCount), b++) {
                const long kp = sparge_bf16_padded_keys(blocks[b].keyCount);
                dot_outer_products(acc, (const unsigned *)(blocks[b].valuesT + i * kp), kp / 2,
                                   probabilities + row / 2 * stride + g, stride, kp / 2);
            }
#pragma clang loop unroll(full)
            for (int m = 0; m < DOT_ROWS; m++) {
                vstore(o + m * lanes, acc[m][0]);
                vstore(o + m * lanes + VW, acc[m][1]);
            }
        }
    }
}

/// VDPBF16PS's ceiling: 16 independent accumulators (latency × pipes in flight, as the FMA probe), each taking
/// pairs (−2⁻¹⁰, 2⁻¹⁰)·(2⁻¹⁰, 2⁻¹⁰) whose products cancel, so the values stay near their start (an
/// instruction that rounds after each product may move one by an ulp; the timing does not depend on it).
#define DOT_PROBE_CHAINS 16
float KERNEL(bf16_probe)(long iterations) {
    static volatile unsigned word = 0x3A803A80u;  // (2⁻¹⁰, 2⁻¹⁰): opaque to the compiler
    const vint pairs = vspliti(0x3A80BA80);         // (−2⁻¹⁰, 2⁻¹⁰)
    const unsigned w = word;
    vfloat c[DOT_PROBE_CHAINS];
#pragma clang loop unroll(full)
    for (int k = 0; k < DOT_PROBE_CHAINS; k++) c[k] = vsplat(1.0f + k);
    for (long it = 0; it < iterations; it++) {
#pragma clang loop unroll(full)
        for (int k = 0; k < DOT_PROBE_CHAINS; k++) c[k] = dot_pairs(c[k], pairs, w);
        __asm__ volatile("" : : : "memory");
    }
    vfloat s = vsplat(0);
#pragma clang loop unroll(full)
    for (int k = 0; k < DOT_PROBE_CHAINS; k++) s += c[k];
    return s[0];
}

/// Nothing to give back: vectors hold no state between calls.
static void KERNEL(bf16_release)(void) {}

sparge_bf16_tile_kernels KERNEL(bf16_kernels)(void) {
    sparge_bf16_tile_kernels k = {KERNEL(bf16_scores), KERNEL(bf16_softmax), KERNEL(bf16_pv), KERNEL(bf16_release),
                                  KERNEL(bf16_probe), DOT_PROBE_CHAINS * VW * 2 * 2};
    return k;
}
