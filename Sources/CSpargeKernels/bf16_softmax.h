// AttentionPrecision.bf16's online-softmax update between the two products, kept apart from the products
// (tile_kernels_bf16.h, on AMX tiles) so that other bf16 kernel sets can share it: the scores' row maxima,
// then P = 2^(s·scale − m) rounded to bf16 pairs over the score rows (vexp2_probability), its row sums, α.
// Layouts: CSpargeKernels.h (`sparge_bf16_*_fn`). The including file includes vector_ops.h (VW = 16) and
// defines KERNEL(name) and `bf16_pairs(lo, hi)`: 16 words bf16(lo) | bf16(hi) << 16 (ties to even, below
// 2⁻¹²⁶ 0).

/// rowMax[r] = max(rowMax[r], scale·max_{c < keyCount} Sᵀ[c][r]) for the 16 lanes from r (scaling is
/// monotone, so the scaled maximum is the maximum of the scaled scores).
INLINE void row_maxima16(const float *scores, long stride, long r, long keyCount, vfloat scale, float *rowMax) {
    vfloat m = vsplat(-__builtin_inff());
    for (long c = 0; c < keyCount; c++) m = vmax(m, vload(scores + c * stride + r));
    vstore(rowMax + r, vmax(vload(rowMax + r), m * scale));
}

/// The online-softmax update of 16 lanes: begin (m, α, the shift), the key pairs of a range, end (the state
/// written back).
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
        vfloat e0 = vexp2_probability(vfma(vload(scores + 2 * j * stride + r), s, negShift));
        vfloat e1 = vexp2_probability(vfma(vload(scores + (2 * j + 1) * stride + r), s, negShift));
        vstorei(pairs + j * stride + r, bf16_pairs(e0, e1));
        sum += e0;
        sum += e1;
    }
    for (; j < j1; j++) {
        if (2 * j < keyCount) {
            vfloat e0 = vexp2_probability(vfma(vload(scores + 2 * j * stride + r), s, negShift));
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
