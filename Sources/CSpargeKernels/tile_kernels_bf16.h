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
// Work per visit (64 lanes × 64 keys, D = 128; counted from the loops below): scores 64 TDPBF16PS, 64 tile
// loads, 16 stores, 16 zeroings; P·V 64 TDPBF16PS, 64 operand loads and Oᵀ's 32 KB in (32 loads) and out
// (32 stores). In vectors: the maxima 256 loads and 256 max; the softmax per 16 lanes and key pair ~36
// instructions (2 loads, 2 FMAs, 2 × 13 for exp2, vcvtne2ps2bf16 + vpermw, a store, 2 adds), 4·32·36 ≈ 4600.
// The tiles' arithmetic is 128 × 16 = 2048 cycles; the vectors ~2500 cycles on two 512-bit ports. The tile
// registers are not renamed, so a tile's next load waits for the last product that reads it, and the
// vector work and the tile work of one lane group depend on each other: what the kernels can overlap is the
// tile work of one 32-lane group with the vector work of another, which `bf16_softmax_pv` and
// `bf16_scores` arrange in program order (the out-of-order core then runs both).
//
// Bytes: a visit's tile loads read ~128 KB (K and Vᵀ twice, Q̂ᵀ, Pᵀ, Oᵀ) and store ~48 KB (Sᵀ, Oᵀ), while
// the two tiles of a query block keep ~160 KB in use (their Q̂ᵀ and Oᵀ, Sᵀ, the block): more than the 48 KB
// L1, so most tile loads find their 16 rows in the L2. Unless `l1Prefetch` is 0, every step asks for the
// rows of the next step's operands (and every Oᵀ chunk for the next chunk's) with prefetcht0 while its
// products run, one step (~64 cycles of TDPBF16PS) ahead: 64 lines a step, what the L2 can deliver in that
// time. The variant without it (`KERNEL(bf16_kernels_without_l1_prefetch)`) is there to be measured.

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

/// Asks for the 16 rows of a tile operand (64 bytes each, `rowBytes` apart) in the L1.
INLINE void prefetch_tile(const void *p, long rowBytes) {
    for (int r = 0; r < 16; r++) __builtin_prefetch((const char *)p + r * rowBytes, 0, 3);
}

/// rowMax[r] = max(rowMax[r], scale·max_{c < keyCount} Sᵀ[c][r]) for the 16 lanes from r (scaling is
/// monotone, so the scaled maximum is the maximum of the scaled scores).
INLINE void row_maxima16(const float *scores, long stride, long r, long keyCount, vfloat scale, float *rowMax) {
    vfloat m = vsplat(-__builtin_inff());
    for (long c = 0; c < keyCount; c++) m = vmax(m, vload(scores + c * stride + r));
    vstore(rowMax + r, vmax(vload(rowMax + r), m * scale));
}

/// Sᵀ for 32 lanes × 32 keys at a time (a 2×2 block of C tiles), stored straight into the score rows (Kp
/// of them), then the block's maxima over the real keys, scaled. The maxima of one 32-lane group are taken
/// while the tiles compute the next group's scores, and the next block is asked for a few lines per step.
INLINE void scores_tiles(const unsigned *queriesT, long stride, long lanes, const unsigned short *keys, long dim,
                         long keyCount, float scale, float *scores, float *rowMax, const void *aheadKeys,
                         const void *aheadValues, long aheadBytes, int l1Prefetch) {
    const long kp = sparge_bf16_padded_keys(keyCount), rowBytes = stride * 4, keyBytes = dim * 2;
    const vfloat s = vsplat(scale);
    prefetch_plan ahead = prefetch_spread(aheadKeys, aheadValues, aheadBytes, lanes / 32 * (kp / 32) * (dim / 32));
    TILE_CONFIGURE();
    for (long g = 0; g <= lanes; g += 32) {
        if (g < lanes) {
            for (long c = 0; c < kp; c += 32) {
                TILE_ZERO(0);
                TILE_ZERO(1);
                TILE_ZERO(2);
                TILE_ZERO(3);
                for (long i = 0; i < dim; i += 32) {
                    prefetch_some(&ahead);
                    if (l1Prefetch) {
                        // The next step's rows: K's two row groups and Q̂ᵀ's two lane groups.
                        long ni = i + 32 < dim ? i + 32 : 0, nc = i + 32 < dim ? c : c + 32, ng = g;
                        if (nc >= kp) nc = 0, ng = g + 32;
                        if (ng < lanes) {
                            prefetch_tile(keys + nc * dim + ni, keyBytes);
                            prefetch_tile(keys + (nc + 16) * dim + ni, keyBytes);
                            prefetch_tile(queriesT + ni / 2 * stride + ng, rowBytes);
                            prefetch_tile(queriesT + ni / 2 * stride + ng + 16, rowBytes);
                        }
                    }
                    products_2x2(keys + c * dim + i, keys + (c + 16) * dim + i, keyBytes,
                                 queriesT + i / 2 * stride + g, rowBytes);
                }
                TILE_STORE(0, scores + c * stride + g, rowBytes);
                TILE_STORE(1, scores + c * stride + g + 16, rowBytes);
                TILE_STORE(2, scores + (c + 16) * stride + g, rowBytes);
                TILE_STORE(3, scores + (c + 16) * stride + g + 16, rowBytes);
            }
        }
        if (g > 0) {
            row_maxima16(scores, stride, g - 32, keyCount, s, rowMax);
            row_maxima16(scores, stride, g - 16, keyCount, s, rowMax);
        }
    }
}

/// The online-softmax update of 16 lanes, split so that it can run in parts between tile work: begin (m,
/// α, the shift), the key pairs of a range, end (the state written back).
typedef struct {
    vfloat m, alpha, negShift, sum;
} softmax16;

INLINE softmax16 softmax16_begin(long r, const float *blockMaxThenAlpha, const float *runningMax) {
    const vfloat negInf = vsplat(-__builtin_inff()), zero = vsplat(0);
    vfloat mPrev = vload(runningMax + r);
    vfloat m = vmax(mPrev, vload(blockMaxThenAlpha + r));
    vfloat shift = (vfloat)((vint)m & ~(vint)(m == negInf));  // 0 where m = −inf
    softmax16 st = {m, vexp2(mPrev - shift), zero - shift, zero};
    return st;
}

/// Pair rows [j0, j1) of the 16 lanes from r: pair row j (keys 2j, 2j+1) overwrites score row j, read
/// already (as row 2j or 2j+1 ≥ j) for these lanes when the ranges go up in order. Pairs past the key
/// count are 0.
INLINE void softmax16_pairs(softmax16 *st, float *scores, long stride, long r, long keyCount, vfloat s, long j0,
                            long j1) {
    int *pairs = (int *)scores;
    const vfloat zero = vsplat(0);
    vfloat sum = st->sum, negShift = st->negShift;
    long j = j0, full = keyCount / 2 < j1 ? keyCount / 2 : j1;
    for (; j < full; j++) {
        vfloat e0 = vexp2(vfma(vload(scores + 2 * j * stride + r), s, negShift));
        vfloat e1 = vexp2(vfma(vload(scores + (2 * j + 1) * stride + r), s, negShift));
        vstorei(pairs + j * stride + r, bf16_pairs(e0, e1));
        sum += e0;
        sum += e1;
    }
    for (; j < j1; j++) {
        if (2 * j < keyCount) {
            vfloat e0 = vexp2(vfma(vload(scores + 2 * j * stride + r), s, negShift));
            vstorei(pairs + j * stride + r, bf16_pairs(e0, zero));
            sum += e0;
        } else {
            vstorei(pairs + j * stride + r, vspliti(0));
        }
    }
    st->sum = sum;
}

INLINE void softmax16_end(const softmax16 *st, long r, float *blockMaxThenAlpha, float *runningMax,
                          float *runningSum) {
    vstore(runningSum + r, vfma(vload(runningSum + r), st->alpha, st->sum));
    vstore(runningMax + r, st->m);
    vstore(blockMaxThenAlpha + r, st->alpha);
}

void KERNEL(bf16_softmax)(float *scores, long stride, long lanes, long keyCount, float scale,
                          float *blockMaxThenAlpha, float *runningMax, float *runningSum) {
    const vfloat s = vsplat(scale);
    const long pairRows = sparge_bf16_padded_keys(keyCount) / 2;
    for (long r = 0; r < lanes; r += VW) {
        softmax16 st = softmax16_begin(r, blockMaxThenAlpha, runningMax);
        softmax16_pairs(&st, scores, stride, r, keyCount, s, 0, pairRows);
        softmax16_end(&st, r, blockMaxThenAlpha, runningMax, runningSum);
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

/// Oᵀ rows i…i+31, lanes g…g+31 += Vᵀ·Pᵀ over the Kp keys: 4 C tiles loaded, Kp/32 steps, stored.
/// With `l1Prefetch`, each step asks for the next step's Vᵀ and Pᵀ rows, and the chunk for the next chunk's
/// Oᵀ rows (`nextI`, `nextG`: the chunk the caller computes next; nextI < 0 for none).
INLINE void products_pv32(const unsigned *probabilities, long stride, long lanes, const unsigned short *valuesT,
                          long dim, long kp, long i, long g, float *outputT, int l1Prefetch, long nextI, long nextG) {
    const long rowBytes = stride * 4, outBytes = lanes * 4, valueBytes = kp * 2;
    float *o = outputT + i * lanes + g;
    TILE_LOAD(0, o, outBytes);
    TILE_LOAD(1, o + 16, outBytes);
    TILE_LOAD(2, o + 16 * lanes, outBytes);
    TILE_LOAD(3, o + 16 * lanes + 16, outBytes);
    if (l1Prefetch && nextI >= 0) {
        const float *next = outputT + nextI * lanes + nextG;
        prefetch_tile(next, outBytes);
        prefetch_tile(next + 16, outBytes);
        prefetch_tile(next + 16 * lanes, outBytes);
        prefetch_tile(next + 16 * lanes + 16, outBytes);
    }
    for (long c = 0; c < kp; c += 32) {
        if (l1Prefetch) {
            // The next step's rows: this chunk's next keys, else the next chunk's first.
            long nc = c + 32 < kp ? c + 32 : 0, ni = c + 32 < kp ? i : nextI, ng = c + 32 < kp ? g : nextG;
            if (ni >= 0 && ni < dim) {
                prefetch_tile(valuesT + ni * kp + nc, valueBytes);
                prefetch_tile(valuesT + (ni + 16) * kp + nc, valueBytes);
                prefetch_tile(probabilities + nc / 2 * stride + ng, rowBytes);
                prefetch_tile(probabilities + nc / 2 * stride + ng + 16, rowBytes);
            }
        }
        products_2x2(valuesT + i * kp + c, valuesT + (i + 16) * kp + c, valueBytes, probabilities + c / 2 * stride + g,
                     rowBytes);
    }
    TILE_STORE(0, o, outBytes);
    TILE_STORE(1, o + 16, outBytes);
    TILE_STORE(2, o + 16 * lanes, outBytes);
    TILE_STORE(3, o + 16 * lanes + 16, outBytes);
}

INLINE void pv_tiles(const unsigned *probabilities, long stride, long lanes, const unsigned short *valuesT, long dim,
                     long keyCount, const float *alpha, float *outputT, int l1Prefetch) {
    const long kp = sparge_bf16_padded_keys(keyCount);
    TILE_CONFIGURE();
    for (long g = 0; g < lanes; g += 32) {
        rescale32(alpha, lanes, g, dim, outputT);
        for (long i = 0; i < dim; i += 32) {
            long nextI = i + 32 < dim ? i + 32 : (g + 32 < lanes ? 0 : -1), nextG = i + 32 < dim ? g : g + 32;
            products_pv32(probabilities, stride, lanes, valuesT, dim, kp, i, g, outputT, l1Prefetch, nextI, nextG);
        }
    }
}

/// `bf16_softmax`, then `bf16_pv` on its P and α, in one pass over 32-lane groups: step g runs the softmax
/// of group g in parts between the D chunks of group g − 1's P·V (every lane's operations and their order
/// are those of the two kernels, so the results are theirs bit for bit).
INLINE void softmax_pv_tiles(float *scores, long stride, long lanes, long keyCount, float scale,
                             float *blockMaxThenAlpha, float *runningMax, float *runningSum,
                             const unsigned short *valuesT, long dim, float *outputT, int l1Prefetch) {
    const vfloat s = vsplat(scale);
    const long kp = sparge_bf16_padded_keys(keyCount), pairRows = kp / 2, chunks = dim / 32;
    const unsigned *probabilities = (const unsigned *)scores;
    TILE_CONFIGURE();
    for (long g = 0; g <= lanes; g += 32) {
        int soft = g < lanes, product = g > 0;
        softmax16 st[2];
        if (soft) {
            st[0] = softmax16_begin(g, blockMaxThenAlpha, runningMax);
            st[1] = softmax16_begin(g + 16, blockMaxThenAlpha, runningMax);
        }
        if (product) {
            if (l1Prefetch) {
                // The first chunk's operands of group g − 1 (later ones are asked for chunk by chunk).
                const float *o = outputT + g - 32;
                prefetch_tile(o, lanes * 4);
                prefetch_tile(o + 16, lanes * 4);
                prefetch_tile(o + 16 * lanes, lanes * 4);
                prefetch_tile(o + 16 * lanes + 16, lanes * 4);
                prefetch_tile(valuesT, kp * 2);
                prefetch_tile(valuesT + 16 * kp, kp * 2);
            }
            rescale32(blockMaxThenAlpha, lanes, g - 32, dim, outputT);
        }
        for (long part = 0; part < chunks; part++) {
            if (product) {
                long i = part * 32, nextI = i + 32 < dim ? i + 32 : -1;  // the next group's P is not written yet
                products_pv32(probabilities, stride, lanes, valuesT, dim, kp, i, g - 32, outputT, l1Prefetch, nextI, g - 32);
            }
            if (soft) {
                long j0 = pairRows * part / chunks, j1 = pairRows * (part + 1) / chunks;
                softmax16_pairs(&st[0], scores, stride, g, keyCount, s, j0, j1);
                softmax16_pairs(&st[1], scores, stride, g + 16, keyCount, s, j0, j1);
            }
        }
        if (soft) {
            softmax16_end(&st[0], g, blockMaxThenAlpha, runningMax, runningSum);
            softmax16_end(&st[1], g + 16, blockMaxThenAlpha, runningMax, runningSum);
        }
    }
}

void KERNEL(bf16_scores)(const unsigned *queriesT, long stride, long lanes, const unsigned short *keys, long dim,
                         long keyCount, float scale, float *scores, float *rowMax, const void *aheadKeys,
                         const void *aheadValues, long aheadBytes) {
    scores_tiles(queriesT, stride, lanes, keys, dim, keyCount, scale, scores, rowMax, aheadKeys, aheadValues,
                 aheadBytes, 1);
}

void KERNEL(bf16_pv)(const unsigned *probabilities, long stride, long lanes, const unsigned short *valuesT, long dim,
                     long keyCount, const float *alpha, float *outputT) {
    pv_tiles(probabilities, stride, lanes, valuesT, dim, keyCount, alpha, outputT, 1);
}

void KERNEL(bf16_softmax_pv)(float *scores, long stride, long lanes, long keyCount, float scale,
                             float *blockMaxThenAlpha, float *runningMax, float *runningSum,
                             const unsigned short *valuesT, long dim, float *outputT) {
    softmax_pv_tiles(scores, stride, lanes, keyCount, scale, blockMaxThenAlpha, runningMax, runningSum, valuesT, dim,
                     outputT, 1);
}

static void KERNEL(bf16_scores_without_l1_prefetch)(const unsigned *queriesT, long stride, long lanes,
                                                    const unsigned short *keys, long dim, long keyCount, float scale,
                                                    float *scores, float *rowMax, const void *aheadKeys,
                                                    const void *aheadValues, long aheadBytes) {
    scores_tiles(queriesT, stride, lanes, keys, dim, keyCount, scale, scores, rowMax, aheadKeys, aheadValues,
                 aheadBytes, 0);
}

static void KERNEL(bf16_pv_without_l1_prefetch)(const unsigned *probabilities, long stride, long lanes,
                                                const unsigned short *valuesT, long dim, long keyCount,
                                                const float *alpha, float *outputT) {
    pv_tiles(probabilities, stride, lanes, valuesT, dim, keyCount, alpha, outputT, 0);
}

static void KERNEL(bf16_softmax_pv_without_l1_prefetch)(float *scores, long stride, long lanes, long keyCount,
                                                        float scale, float *blockMaxThenAlpha, float *runningMax,
                                                        float *runningSum, const unsigned short *valuesT, long dim,
                                                        float *outputT) {
    softmax_pv_tiles(scores, stride, lanes, keyCount, scale, blockMaxThenAlpha, runningMax, runningSum, valuesT, dim,
                     outputT, 0);
}

static void KERNEL(bf16_release)(void) { TILE_RELEASE(); }

sparge_bf16_tile_kernels KERNEL(bf16_kernels)(void) {
    sparge_bf16_tile_kernels k = {KERNEL(bf16_scores), KERNEL(bf16_softmax), KERNEL(bf16_pv),
                                  KERNEL(bf16_softmax_pv), KERNEL(bf16_release)};
    return k;
}

/// The same kernels without the L1 prefetch of the next step's operands (to be measured against them).
sparge_bf16_tile_kernels KERNEL(bf16_kernels_without_l1_prefetch)(void) {
    sparge_bf16_tile_kernels k = {KERNEL(bf16_scores_without_l1_prefetch), KERNEL(bf16_softmax),
                                  KERNEL(bf16_pv_without_l1_prefetch), KERNEL(bf16_softmax_pv_without_l1_prefetch),
                                  KERNEL(bf16_release)};
    return k;
}
