// AttentionPrecision.bf16 for the bf16 tile kernels (CSpargeKernels.h, `sparge_bf16_*_fn`): the packing of
// queries and key/value blocks, and the kernels' scalar twin — the same definitions in plain loops, on any
// CPU (the exponentials are the kernels' own recipes, vector_ops.h's vexp2_probability for P and vexp2 for α,
// on one lane, so P is the same bits).
#include "CSpargeKernels.h"
#include <string.h>
#define VW 1
#define HAS_FMA 1
#include "vector_ops.h"
#include "transpose_32bit.h"
#include "per_isa_clones.h"

/// bf16(x) from x's bits, without a branch (so that loops of it vectorize).
static inline unsigned short bf16_of_bits(unsigned bits) {
    unsigned short rounded = (unsigned short)((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
    return (bits & 0x7FFFFFFFu) > 0x7F800000u ? 0x7FC0 : rounded;  // NaN
}

unsigned short sparge_bf16(float x) {
    unsigned bits;
    memcpy(&bits, &x, 4);
    return bf16_of_bits(bits);
}

/// bf16 of `count` floats, in a loop the compiler vectorizes.
static void bf16_row(const float *x, long count, unsigned short *out) {
    for (long i = 0; i < count; i++) {
        unsigned bits;
        memcpy(&bits, x + i, 4);
        out[i] = bf16_of_bits(bits);
    }
}

typedef unsigned short u16x8 __attribute__((vector_size(16)));
typedef unsigned u32x4 __attribute__((vector_size(16)));
typedef unsigned long long u64x2 __attribute__((vector_size(16)));

/// Eight vectors of eight 16-bit values transposed in registers (three rounds of interleaving: 16-bit,
/// 32-bit, 64-bit lanes): column i of `r` (r[0][i] … r[7][i]) becomes `out[i]`.
static inline void transpose_8x8(const u16x8 r[8], u16x8 out[8]) {
    u16x8 t[8];
    for (int k = 0; k < 4; k++) {
        t[2 * k] = __builtin_shufflevector(r[2 * k], r[2 * k + 1], 0, 8, 1, 9, 2, 10, 3, 11);
        t[2 * k + 1] = __builtin_shufflevector(r[2 * k], r[2 * k + 1], 4, 12, 5, 13, 6, 14, 7, 15);
    }
    u32x4 u[8];
    for (int k = 0; k < 2; k++) {
        for (int h = 0; h < 2; h++) {
            u32x4 a = (u32x4)t[4 * k + h], b = (u32x4)t[4 * k + 2 + h];
            u[4 * k + 2 * h] = __builtin_shufflevector(a, b, 0, 4, 1, 5);
            u[4 * k + 2 * h + 1] = __builtin_shufflevector(a, b, 2, 6, 3, 7);
        }
    }
    for (int q = 0; q < 4; q++) {
        u64x2 a = (u64x2)u[q], b = (u64x2)u[4 + q];
        out[2 * q] = (u16x8)__builtin_shufflevector(a, b, 0, 2);
        out[2 * q + 1] = (u16x8)__builtin_shufflevector(a, b, 1, 3);
    }
}

/// Rows first … first + 7 of `x` (`rows` of them exist, each `dim` floats) rounded to bf16 into `eight`, zeros
/// past the last.
static inline void round_eight_rows(const float *x, long first, long rows, long dim, unsigned short eight[8][dim]) {
    for (long k = 0; k < 8; k++) {
        if (first + k < rows) bf16_row(x + (first + k) * dim, dim, eight[k]);
        else memset(eight[k], 0, sizeof(unsigned short) * dim);
    }
}

/// Eight rows of `dim` bf16 words (keys c0 … c0 + 7) into Vᵀ's columns c0 … c0 + 7 (`kp` words a row), 8 × 8
/// squares transposed in registers (dim a multiple of 8).
static inline void store_transposed_rows(long dim, unsigned short eight[8][dim], long kp, long c0,
                                         unsigned short *valuesT) {
    for (long i0 = 0; i0 < dim; i0 += 8) {
        u16x8 r[8], out[8];
        for (int j = 0; j < 8; j++) memcpy(&r[j], &eight[j][i0], 16);
        transpose_8x8(r, out);
        for (int i = 0; i < 8; i++) memcpy(valuesT + (i0 + i) * kp + c0, &out[i], 16);
    }
}

// Rows are rounded whole (vectorized); V's are then transposed eight keys × eight dimensions at a time in
// registers. Rounded one value at a time in the transposed order, packing took 1.6–2.5 ns a value on a Zen
// 3; rows rounded whole and scattered value by value, ~0.5 ns, still the largest cost of the driver around
// the kernels in a sparse pass (`sparge bench-kernel` with SPARGE_BF16_TILES=bookkeeping, `perf record`).
// Kp is a multiple of 32 and D of 32 where the tiles run, so the 8 × 8 squares tile both.
PER_ISA_CLONES void sparge_pack_bf16_block(const float *keys, const float *values, long rows, long dim,
                                           unsigned short *packedKeys, unsigned short *valuesT) {
    long kp = sparge_bf16_padded_keys(rows);
    bf16_row(keys, rows * dim, packedKeys);
    memset(packedKeys + rows * dim, 0, sizeof(unsigned short) * (kp - rows) * dim);
    if (dim % 8 != 0) {  // not a shape the tiles take; kept correct anyway, a value at a time
        unsigned short row[dim];
        for (long c = 0; c < kp; c++) {
            if (c < rows) bf16_row(values + c * dim, dim, row);
            for (long i = 0; i < dim; i++) valuesT[i * kp + c] = c < rows ? row[i] : 0;
        }
        return;
    }
    unsigned short eight[8][dim];
    for (long c0 = 0; c0 < kp; c0 += 8) {
        round_eight_rows(values, c0, rows, dim, eight);
        store_transposed_rows(dim, eight, kp, c0, valuesT);
    }
}

/// A stored bf16 word as packing a float leaves it: NaNs become the one quiet NaN 0x7FC0 (what bf16(x) makes
/// of any NaN), every other word is already its own rounding.
static inline unsigned short bf16_canonical(unsigned short w) { return (w & 0x7FFFu) > 0x7F80u ? 0x7FC0 : w; }

PER_ISA_CLONES void sparge_pack_bf16_block_stored(const unsigned short *keys, const unsigned short *values,
                                                  long rows, long dim, unsigned short *packedKeys,
                                                  unsigned short *valuesT) {
    long kp = sparge_bf16_padded_keys(rows);
    for (long i = 0; i < rows * dim; i++) packedKeys[i] = bf16_canonical(keys[i]);
    memset(packedKeys + rows * dim, 0, sizeof(unsigned short) * (kp - rows) * dim);
    if (dim % 8 != 0) {  // not a shape the tiles take; kept correct anyway, a value at a time
        for (long c = 0; c < kp; c++)
            for (long i = 0; i < dim; i++) valuesT[i * kp + c] = c < rows ? bf16_canonical(values[c * dim + i]) : 0;
        return;
    }
    unsigned short eight[8][dim];
    for (long c0 = 0; c0 < kp; c0 += 8) {
        for (long j = 0; j < 8; j++) {
            if (c0 + j < rows) {
                for (long i = 0; i < dim; i++) eight[j][i] = bf16_canonical(values[(c0 + j) * dim + i]);
            } else {
                memset(eight[j], 0, sizeof(unsigned short) * dim);
            }
        }
        store_transposed_rows(dim, eight, kp, c0, valuesT);
    }
}

PER_ISA_CLONES void sparge_bf16_round(const float *values, long count, unsigned short *out) {
    bf16_row(values, count, out);
}

// Q̂ᵀ eight lanes × eight pairs at a time: eight rows rounded whole, their pair words transposed in registers
// and stored eight lanes at once (word by word, the scattered stores were the packing's cost).
PER_ISA_CLONES void sparge_pack_bf16_queries(const float *queries, long rows, long dim, long stride, long lanes,
                                             unsigned *queriesT) {
    const long pairs = dim / 2;
    if (pairs % 8 != 0 || lanes % 8 != 0) {  // not a shape the tiles take; kept correct anyway
        unsigned short row[dim];
        for (long r = 0; r < lanes; r++) {
            if (r < rows) bf16_row(queries + r * dim, dim, row);
            for (long j = 0; j < pairs; j++)
                queriesT[j * stride + r] = r < rows ? (unsigned)row[2 * j] | (unsigned)row[2 * j + 1] << 16 : 0;
        }
        return;
    }
    unsigned short eight[8][dim];
    for (long r0 = 0; r0 < lanes; r0 += 8) {
        round_eight_rows(queries, r0, rows, dim, eight);
        for (long j0 = 0; j0 < pairs; j0 += 8) {
            u32x8 r[8], out[8];
            for (int k = 0; k < 8; k++) memcpy(&r[k], &eight[k][2 * j0], 32);  // pair j: low half first
            transpose_32bit_8x8(r, out);
            for (int i = 0; i < 8; i++) memcpy(queriesT + (j0 + i) * stride + r0, &out[i], 32);
        }
    }
}

float sparge_bf16_widened(unsigned short w) {
    unsigned bits = (unsigned)w << 16;
    if ((bits & 0x7F800000u) == 0) bits &= 0x80000000u;
    float x;
    memcpy(&x, &bits, 4);
    return x;
}

/// P's rounding: a denormal p is 0, else bf16(p).
static unsigned short round_probability(float p) { return p < 0x1p-126f ? 0 : sparge_bf16(p); }

float sparge_bf16_exp2(float x) { return vexp2_probability((vfloat){x})[0]; }

static void twin_scores(const unsigned *queriesT, long stride, long lanes, const sparge_bf16_block *blocks,
                        long blockCount, long dim, float scale, float *scores, float *rowMax,
                        const sparge_bf16_block *ahead, long aheadCount) {
    (void)ahead, (void)aheadCount;
    long keyCount = sparge_bf16_visit_keys(blocks, blockCount);
    for (long b = 0, row = 0; b < blockCount; row += sparge_bf16_padded_keys(blocks[b].keyCount), b++) {
        for (long c = 0; c < sparge_bf16_padded_keys(blocks[b].keyCount); c++) {
            for (long r = 0; r < lanes; r++) {
                float s = 0;
                for (long i = 0; i < dim; i++)
                    s += sparge_bf16_widened((unsigned short)(queriesT[i / 2 * stride + r] >> (16 * (i % 2)))) *
                         sparge_bf16_widened(blocks[b].keys[c * dim + i]);
                scores[(row + c) * stride + r] = s;
            }
        }
    }
    for (long r = 0; r < lanes; r++) {
        float m = -__builtin_inff();
        for (long c = 0; c < keyCount; c++) m = scores[c * stride + r] > m ? scores[c * stride + r] : m;
        m *= scale;
        if (m > rowMax[r]) rowMax[r] = m;
    }
}

static void twin_softmax(float *scores, long stride, long lanes, long keyCount, float scale, float *blockMaxThenAlpha,
                         float *runningMax, float *runningSum) {
    long kp = sparge_bf16_padded_keys(keyCount);
    unsigned short p[kp];
    for (long r = 0; r < lanes; r++) {
        float mPrev = runningMax[r], m = blockMaxThenAlpha[r] > mPrev ? blockMaxThenAlpha[r] : mPrev;
        float shift = m == -__builtin_inff() ? 0 : m;
        float alpha = vexp2((vfloat){mPrev - shift})[0], sum = 0;
        for (long c = 0; c < kp; c++) {
            float e = c < keyCount ? sparge_bf16_exp2(__builtin_fmaf(scores[c * stride + r], scale, -shift)) : 0;
            sum += e;
            p[c] = round_probability(e);
        }
        for (long j = 0; j < kp / 2; j++) ((unsigned *)scores)[j * stride + r] = p[2 * j] | (unsigned)p[2 * j + 1] << 16;
        runningSum[r] = __builtin_fmaf(runningSum[r], alpha, sum);
        runningMax[r] = m;
        blockMaxThenAlpha[r] = alpha;
    }
}

static void twin_pv(const unsigned *probabilities, long stride, long lanes, const sparge_bf16_block *blocks,
                    long blockCount, long dim, const float *alpha, float *outputT) {
    for (long i = 0; i < dim; i++) {
        for (long r = 0; r < lanes; r++) {
            float o = alpha[r] * outputT[i * lanes + r];
            for (long b = 0, row = 0; b < blockCount; row += sparge_bf16_padded_keys(blocks[b].keyCount), b++) {
                long kp = sparge_bf16_padded_keys(blocks[b].keyCount);
                for (long c = 0; c < kp; c++)
                    o += sparge_bf16_widened(blocks[b].valuesT[i * kp + c]) *
                         sparge_bf16_widened((unsigned short)(probabilities[(row + c) / 2 * stride + r] >> (16 * ((row + c) % 2))));
            }
            outputT[i * lanes + r] = o;
        }
    }
}

static void twin_release(void) {}

sparge_bf16_tile_kernels sparge_bf16_twin(void) {
    sparge_bf16_tile_kernels k = {twin_scores, twin_softmax, twin_pv, twin_release};
    return k;
}

// ---- Kernels with no products: what a pass costs around the kernels (bench-kernel's SPARGE_BF16_TILES).

/// Scores: none are computed; every lane's block maximum is 0 (so the λ rule never skips P·V). The score block
/// is not written: on a causal diagonal block the driver reads maxima from it, so time dense passes only.
static void bookkeeping_scores(const unsigned *queriesT, long stride, long lanes, const sparge_bf16_block *blocks,
                               long blockCount, long dim, float scale, float *scores, float *rowMax,
                               const sparge_bf16_block *ahead, long aheadCount) {
    (void)queriesT, (void)stride, (void)blocks, (void)blockCount, (void)dim, (void)scale, (void)scores;
    (void)ahead, (void)aheadCount;
    for (long r = 0; r < lanes; r++) rowMax[r] = rowMax[r] > 0 ? rowMax[r] : 0;
}

/// The online-softmax state as if every p were 1: m = max(m, blockMax), α = 1, sum += keyCount.
static void bookkeeping_softmax(float *scores, long stride, long lanes, long keyCount, float scale,
                                float *blockMaxThenAlpha, float *runningMax, float *runningSum) {
    (void)scores, (void)stride, (void)scale;
    for (long r = 0; r < lanes; r++) {
        runningMax[r] = blockMaxThenAlpha[r] > runningMax[r] ? blockMaxThenAlpha[r] : runningMax[r];
        runningSum[r] += (float)keyCount;
        blockMaxThenAlpha[r] = 1;
    }
}

static void bookkeeping_pv(const unsigned *probabilities, long stride, long lanes, const sparge_bf16_block *blocks,
                           long blockCount, long dim, const float *alpha, float *outputT) {
    (void)probabilities, (void)stride, (void)lanes, (void)blocks, (void)blockCount, (void)dim, (void)alpha, (void)outputT;
}

sparge_bf16_tile_kernels sparge_bf16_bookkeeping(void) {
    sparge_bf16_tile_kernels k = {bookkeeping_scores, bookkeeping_softmax, bookkeeping_pv, twin_release};
    return k;
}
