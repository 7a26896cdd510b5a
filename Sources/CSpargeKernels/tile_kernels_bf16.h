// AttentionPrecision.bf16's products on bf16 matrix tiles (layouts and definitions: CSpargeKernels.h,
// `sparge_bf16_*_fn`): Sᵀ = K·Q̂ᵀ and Oᵀ += Vᵀ·Pᵀ as 16×16 fp32 tiles of TDPBF16PS, which computes
// C[16][16] += A[16][32 bf16]·B[16 pairs][16 × 2 bf16] with B's pairs along the sum, and the online-softmax
// update in vectors of 16 floats between them. Included by kernels_amx.c (AMX instructions) and by
// kernels_amx_emulated.c (the same code with the tile instructions emulated in C, which the tests run on
// any machine with AVX2).
//
// The including file includes vector_ops.h (VW = 16, HAS_FMA) and defines KERNEL(name) and
//   TILE_CONFIGURE()                    makes sure this thread has the one configuration (8 tiles of 16 rows ×
//                                       64 bytes) loaded: once per thread until TILE_RELEASE(), not per call
//   TILE_RELEASE()                      releases the tiles (the next TILE_CONFIGURE() loads the configuration)
//   TILE_ZERO(t), TILE_LOAD(t, p, rowBytes), TILE_STORE(t, p, rowBytes), TILE_DP(c, a, b)   (t: constants)
//   bf16_pairs(lo, hi)                  16 words bf16(lo) | bf16(hi) << 16 (ties to even, below 2⁻¹²⁶ 0)
// Tiles 0–3 hold a 2×2 block of C, 4–5 two row groups of A, 6–7 two lane groups of B.
//
// Work per visit of one block (64 lanes × 64 keys, D = 128; counted from the loops below): scores 64 TDPBF16PS, 64 tile
// loads, 16 stores, 16 zeroings; P·V 64 TDPBF16PS, 64 operand loads and Oᵀ's 32 KB in (32 loads) and out
// (32 stores). In vectors: the maxima 256 loads and 256 max; the softmax per 16 lanes and key pair ~28
// instructions (2 loads, 2 FMAs, 2 × 9 for exp2 — vexp2_probability, 2 × 12 with vexp2 —, vcvtne2ps2bf16 +
// vpermw, a store, 2 adds), 4·32·28 ≈ 3600. The tiles' arithmetic is 128 × 16 = 2048 cycles; the vectors
// ~2000 cycles on two 512-bit ports (~2500 with vexp2). The tile
// registers are not renamed, and a tile's softmax sits between its own scores and P·V, so within one tile
// the two kinds of work wait for each other. Interleaving one lane group's softmax with another's P·V
// (`bf16_softmax_pv`, 1ab15bf) made a visit 0.2–2.6 µs slower on the device (BENCHMARKS.md): the tile
// loads of P then read rows that vector stores had just written.
//
// A visit of several blocks (the driver groups up to 256 keys) runs the same loops over all their keys:
// P·V then loads each 32 × 32 chunk of Oᵀ once, accumulates every key of the visit onto it and stores it once,
// where a 64-key visit had only two steps of products between a chunk's load and the drain of its tiles
// before the store. On the device's Xeon, 256-key visits made the dense pass 14% faster than 64-key ones
// (BENCHMARKS.md, 2026-11-30).
//
// Bytes: a visit's tile loads read ~128 KB (K and Vᵀ twice, Q̂ᵀ, Pᵀ, Oᵀ) and store ~48 KB (Sᵀ, Oᵀ), mostly
// from the L2 (a query block's tiles keep ~200 KB in use). Asking for every next step's rows in the L1
// (prefetcht0, 64 lines a step) made a visit 2.3 µs slower in the L2 and 0.6 µs slower from the L3
// (BENCHMARKS.md): the hardware keeps up without it.

#include "bf16_softmax.h"
#include "bf16_ahead.h"

/// C tiles 0–3 += A·B for two row groups of A (`a0`, `a1`: 16 rows of 32 bf16, `aBytes` apart) and two
/// lane groups of B (`b`, `b + 16`: 16 rows of 16 pairs, `bBytes` apart): the step of both products.
INLINE void products_2x2(const unsigned short *a0, const unsigned short *a1, long aBytes, const unsigned *b,
                         long bBytes) {
    TILE_LOAD(4, a0, aBytes);
    TILE_LOAD(5, a1, aBytes);
    TILE_LOAD(6, b, bBytes);
    TILE_LOAD(7, b + 16, bBytes);
    TILE_DP(0, 4, 6);
    TILE_DP(1, 4, 7);
    TILE_DP(2, 5, 6);
    TILE_DP(3, 5, 7);
}

/// Sᵀ for 32 lanes × 32 keys at a time (a 2×2 block of C tiles), block by block of the visit, stored straight
/// into the score rows (Kp of them), then the visit's maxima over the real keys, scaled. The maxima of one
/// 32-lane group are taken while the tiles compute the next group's scores, and the next visit's blocks are asked
/// for a few lines per step.
void KERNEL(bf16_scores)(const unsigned *queriesT, long stride, long lanes, const sparge_bf16_block *blocks,
                         long blockCount, long dim, float scale, float *scores, float *rowMax,
                         const sparge_bf16_block *ahead, long aheadCount) {
    const long keyCount = sparge_bf16_visit_keys(blocks, blockCount), rowBytes = stride * 4, keyBytes = dim * 2;
    const vfloat s = vsplat(scale);
    ahead_plan asked = ahead_spread(ahead, aheadCount, dim,
                                    lanes / 32 * (sparge_bf16_padded_keys(keyCount) / 32) * (dim / 32));
    TILE_CONFIGURE();
    for (long g = 0; g <= lanes; g += 32) {
        for (long b = 0, row = 0; g < lanes && b < blockCount; row += sparge_bf16_padded_keys(blocks[b].keyCount), b++) {
            const unsigned short *keys = blocks[b].keys;
            for (long c = 0; c < sparge_bf16_padded_keys(blocks[b].keyCount); c += 32) {
                float *out = scores + (row + c) * stride + g;
                TILE_ZERO(0);
                TILE_ZERO(1);
                TILE_ZERO(2);
                TILE_ZERO(3);
                for (long i = 0; i < dim; i += 32) {
                    ahead_some(&asked);
                    products_2x2(keys + c * dim + i, keys + (c + 16) * dim + i, keyBytes,
                                 queriesT + i / 2 * stride + g, rowBytes);
                }
                TILE_STORE(0, out, rowBytes);
                TILE_STORE(1, out + 16, rowBytes);
                TILE_STORE(2, out + 16 * stride, rowBytes);
                TILE_STORE(3, out + 16 * stride + 16, rowBytes);
            }
        }
        if (g > 0) {
            row_maxima16(scores, stride, g - 32, keyCount, s, rowMax);
            row_maxima16(scores, stride, g - 16, keyCount, s, rowMax);
        }
    }
}

/// Oᵀ ← α·Oᵀ in memory for the 32 lanes from g, for those of its 16-lane groups whose α is not all 1 (the
/// products then accumulate onto it).
INLINE void rescale32(const float *alpha, long lanes, long g, long dim, float *outputT) {
    const vfloat one = vsplat(1);
    for (long r = g; r < g + 32; r += VW) {
        vfloat a = vload(alpha + r);
        if (__builtin_reduce_and((vint)(a == one)) != 0) continue;
        for (long i = 0; i < dim; i++) vstore(outputT + i * lanes + r, vload(outputT + i * lanes + r) * a);
    }
}

/// Oᵀ in chunks of 32 rows × 32 lanes (4 C tiles loaded, every 32 keys of the visit's blocks, stored), each
/// lane group rescaled first: a visit of several blocks loads and stores each chunk once for all of them.
void KERNEL(bf16_pv)(const unsigned *probabilities, long stride, long lanes, const sparge_bf16_block *blocks,
                     long blockCount, long dim, const float *alpha, float *outputT) {
    const long rowBytes = stride * 4, outBytes = lanes * 4;
    TILE_CONFIGURE();
    for (long g = 0; g < lanes; g += 32) {
        rescale32(alpha, lanes, g, dim, outputT);
        for (long i = 0; i < dim; i += 32) {
            float *o = outputT + i * lanes + g;
            TILE_LOAD(0, o, outBytes);
            TILE_LOAD(1, o + 16, outBytes);
            TILE_LOAD(2, o + 16 * lanes, outBytes);
            TILE_LOAD(3, o + 16 * lanes + 16, outBytes);
            for (long b = 0, row = 0; b < blockCount; row += sparge_bf16_padded_keys(blocks[b].keyCount), b++) {
                const long kp = sparge_bf16_padded_keys(blocks[b].keyCount), valueBytes = kp * 2;
                const unsigned short *valuesT = blocks[b].valuesT;
                for (long c = 0; c < kp; c += 32) {
                    products_2x2(valuesT + i * kp + c, valuesT + (i + 16) * kp + c, valueBytes,
                                 probabilities + (row + c) / 2 * stride + g, rowBytes);
                }
            }
            TILE_STORE(0, o, outBytes);
            TILE_STORE(1, o + 16, outBytes);
            TILE_STORE(2, o + 16 * lanes, outBytes);
            TILE_STORE(3, o + 16 * lanes + 16, outBytes);
        }
    }
}

static void KERNEL(bf16_release)(void) { TILE_RELEASE(); }

/// TDPBF16PS's ceiling: four accumulator tiles from two A and two B tiles of zeros loaded once, 16 × 16 × 32
/// multiply-adds a product; the tiles are given back at the end.
float KERNEL(bf16_probe)(long iterations) {
    static const unsigned short zeros[16 * 32] __attribute__((aligned(64))) = {0};
    float out[16 * 16] __attribute__((aligned(64)));
    TILE_CONFIGURE();
    TILE_ZERO(0);
    TILE_ZERO(1);
    TILE_ZERO(2);
    TILE_ZERO(3);
    TILE_LOAD(4, zeros, 64);
    TILE_LOAD(5, zeros, 64);
    TILE_LOAD(6, zeros, 64);
    TILE_LOAD(7, zeros, 64);
    for (long it = 0; it < iterations; it++) {
        TILE_DP(0, 4, 6);
        TILE_DP(1, 4, 7);
        TILE_DP(2, 5, 6);
        TILE_DP(3, 5, 7);
    }
    TILE_STORE(0, out, 64);
    TILE_RELEASE();
    return out[0] + 1;
}

sparge_bf16_tile_kernels KERNEL(bf16_kernels)(void) {
    sparge_bf16_tile_kernels k = {KERNEL(bf16_scores), KERNEL(bf16_softmax), KERNEL(bf16_pv), KERNEL(bf16_release),
                                  KERNEL(bf16_probe), 4 * 16 * 16 * 32 * 2};
    return k;
}
