// AttentionPrecision.bf16's products on bf16 matrix tiles (layouts and definitions: CSpargeKernels.h,
// `sparge_bf16_*_fn`): Sᵀ = K·Q̂ᵀ and Oᵀ += Vᵀ·Pᵀ as 16×16 fp32 tiles of TDPBF16PS, which computes
// C[16][16] += A[16][32 bf16]·B[16 pairs][16 × 2 bf16] with B's pairs along the sum, and the online-softmax
// update in vectors of 16 floats between them. Included by kernels_amx.c (AMX instructions) and by
// kernels_amx_emulated.c (the same code with the tile instructions emulated in C, which the tests run on
// any machine with AVX2).
//
// The including file includes vector_ops.h (VW = 16, HAS_FMA) and defines KERNEL(name) and
//   TILE_CONFIGURE()                    loads the one configuration (8 tiles of 16 rows × 64 bytes) on this thread
//   TILE_ZERO(t), TILE_LOAD(t, p, rowBytes), TILE_STORE(t, p, rowBytes), TILE_DP(c, a, b)   (t: constants)
//   bf16_pairs(lo, hi)                  16 words bf16(lo) | bf16(hi) << 16 (ties to even, below 2⁻¹²⁶ 0)
// Tiles 0–3 hold a 2×2 block of C, 4–5 two row groups of A, 6–7 two lane groups of B. The configuration is
// loaded at every call: another library on the same thread may have loaded its own or released the tiles.
//
// Written down before the kernels, for dense N = 32768, 8 heads, D = 128, 16 threads (the shape):
// - FLOPs 4·N²·D·H = 4.4e12. One TDPBF16PS is 16·16·32 multiply-adds in 16 cycles: 1024 FLOPs per cycle and
//   core, ~33 TFLOP/s on 16 cores at 2 GHz, so 0.13 s at the tiles' peak. The goal, 1.5× PyTorch's
//   3093 GFLOP/s = 4.6 TFLOP/s (0.95 s), is 14% of it: the tiles are not the limit.
// - The softmax in AVX-512: N²·H = 8.6e9 scores. Per vector of 16: the maxima pass (load, max) 2, then
//   load, fma (scale and shift), exp2 (max, add, sub, sub, 6 fma, sub, shift, add: 13), the sum's add, and
//   half of (vcvtne2ps2bf16, vpermw, store) — about 20 instructions, 1.1e10 in all: 0.17 s on 16 cores with two
//   512-bit vector ports at 2 GHz. The rescale of Oᵀ by α (load, multiply, store per 16 outputs) is skipped
//   for lane groups whose α is 1, which is every one once the running maxima settle.
// - Tile moves per visit (64 queries × 64 keys, D = 128): scores 64 loads and 16 stores, P·V 128 (C in and
//   out, A and B), 208 moves of 1 KB against 128 TDPBF16PS (2048 cycles); at ~8 cycles a load, another
//   ~1700 cycles, partly overlapped. Per visit then ≈ 2048 + 1700 + 2600 (vectors) + ~500 (the tile's
//   bookkeeping in Swift) cycles for 2.1e6 FLOPs: ~300 FLOPs per cycle and core, ~10 TFLOP/s if nothing waits.
// - Bytes: each query block (128 rows, 2 compute tiles) streams its head's packed K and Vᵀ, 16 MB in bf16,
//   34 GB per pass: 36 GB/s at 0.95 s, from the L3 or DRAM (one head's K/V does not fit a core's share of L3).
// Prediction: 5–7 TFLOP/s (1.6–2.3× PyTorch bf16), the softmax and the tile moves taking most of the time,
// the tiles' arithmetic about a quarter; memory waits are what could keep it below that.

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

/// Sᵀ for 32 lanes × 32 keys at a time (a 2×2 block of C tiles), stored straight into the score rows (Kp
/// of them), then the block's maxima over the real keys, scaled.
void KERNEL(bf16_scores)(const unsigned *queriesT, long stride, long lanes, const unsigned short *keys, long dim,
                         long keyCount, float scale, float *scores, float *rowMax, const void *aheadKeys,
                         const void *aheadValues, long aheadBytes) {
    const long kp = sparge_bf16_padded_keys(keyCount), rowBytes = stride * 4, keyBytes = dim * 2;
    prefetch_plan ahead = prefetch_spread(aheadKeys, aheadValues, aheadBytes, lanes / 32 * (kp / 32));
    TILE_CONFIGURE();
    for (long g = 0; g < lanes; g += 32) {
        for (long c = 0; c < kp; c += 32) {
            prefetch_some(&ahead);
            TILE_ZERO(0);
            TILE_ZERO(1);
            TILE_ZERO(2);
            TILE_ZERO(3);
            for (long i = 0; i < dim; i += 32)
                products_2x2(keys + c * dim + i, keys + (c + 16) * dim + i, keyBytes, queriesT + i / 2 * stride + g,
                             rowBytes);
            TILE_STORE(0, scores + c * stride + g, rowBytes);
            TILE_STORE(1, scores + c * stride + g + 16, rowBytes);
            TILE_STORE(2, scores + (c + 16) * stride + g, rowBytes);
            TILE_STORE(3, scores + (c + 16) * stride + g + 16, rowBytes);
        }
    }
    // Scaling is monotone, so the scaled maximum is the maximum of the scaled scores.
    const vfloat s = vsplat(scale);
    for (long r = 0; r < lanes; r += VW) {
        vfloat m = vsplat(-__builtin_inff());
        for (long c = 0; c < keyCount; c++) m = vmax(m, vload(scores + c * stride + r));
        vstore(rowMax + r, vmax(vload(rowMax + r), m * s));
    }
}

void KERNEL(bf16_softmax)(float *scores, long stride, long lanes, long keyCount, float scale,
                          float *blockMaxThenAlpha, float *runningMax, float *runningSum) {
    const vfloat negInf = vsplat(-__builtin_inff()), s = vsplat(scale), zero = vsplat(0);
    const long kp = sparge_bf16_padded_keys(keyCount);
    int *pairs = (int *)scores;
    for (long r = 0; r < lanes; r += VW) {
        vfloat mPrev = vload(runningMax + r);
        vfloat m = vmax(mPrev, vload(blockMaxThenAlpha + r));
        vfloat shift = (vfloat)((vint)m & ~(vint)(m == negInf));  // 0 where m = −inf
        vfloat alpha = vexp2(mPrev - shift), negShift = zero - shift;
        vfloat sum = zero;
        // Pair row j overwrites score row j, read already (as row 2j or 2j+1 ≥ j) for these lanes.
        long c = 0;
        for (; c + 1 < keyCount; c += 2) {
            vfloat e0 = vexp2(vfma(vload(scores + c * stride + r), s, negShift));
            vfloat e1 = vexp2(vfma(vload(scores + (c + 1) * stride + r), s, negShift));
            vstorei(pairs + c / 2 * stride + r, bf16_pairs(e0, e1));
            sum += e0;
            sum += e1;
        }
        if (c < keyCount) {
            vfloat e0 = vexp2(vfma(vload(scores + c * stride + r), s, negShift));
            vstorei(pairs + c / 2 * stride + r, bf16_pairs(e0, zero));
            sum += e0;
            c += 2;
        }
        for (; c < kp; c += 2) vstorei(pairs + c / 2 * stride + r, vspliti(0));
        vstore(runningSum + r, vfma(vload(runningSum + r), alpha, sum));
        vstore(runningMax + r, m);
        vstore(blockMaxThenAlpha + r, alpha);
    }
}

void KERNEL(bf16_pv)(const unsigned *probabilities, long stride, long lanes, const unsigned short *valuesT, long dim,
                     long keyCount, const float *alpha, float *outputT) {
    const long kp = sparge_bf16_padded_keys(keyCount), rowBytes = stride * 4, outBytes = lanes * 4, valueBytes = kp * 2;
    // Oᵀ ← α·Oᵀ in memory, for the lane groups whose α is not all 1 (the products then accumulate onto it).
    const vfloat one = vsplat(1);
    for (long r = 0; r < lanes; r += VW) {
        vfloat a = vload(alpha + r);
        if (__builtin_reduce_and((vint)(a == one)) != 0) continue;
        for (long i = 0; i < dim; i++) vstore(outputT + i * lanes + r, vload(outputT + i * lanes + r) * a);
    }
    TILE_CONFIGURE();
    for (long i = 0; i < dim; i += 32) {
        for (long g = 0; g < lanes; g += 32) {
            float *o = outputT + i * lanes + g;
            TILE_LOAD(0, o, outBytes);
            TILE_LOAD(1, o + 16, outBytes);
            TILE_LOAD(2, o + 16 * lanes, outBytes);
            TILE_LOAD(3, o + 16 * lanes + 16, outBytes);
            for (long c = 0; c < kp; c += 32)
                products_2x2(valuesT + i * kp + c, valuesT + (i + 16) * kp + c, valueBytes,
                             probabilities + c / 2 * stride + g, rowBytes);
            TILE_STORE(0, o, outBytes);
            TILE_STORE(1, o + 16, outBytes);
            TILE_STORE(2, o + 16 * lanes, outBytes);
            TILE_STORE(3, o + 16 * lanes + 16, outBytes);
        }
    }
}

sparge_bf16_tile_kernels KERNEL(bf16_kernels)(void) {
    sparge_bf16_tile_kernels k = {KERNEL(bf16_scores), KERNEL(bf16_softmax), KERNEL(bf16_pv)};
    return k;
}
