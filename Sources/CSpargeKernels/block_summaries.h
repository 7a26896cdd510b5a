// The mask's block summaries (BlockSummaries.summarizeBlock in Swift, the plain reference, and the GPU's mask
// kernels repeat the same operations) in vectors, bit for bit: every sum keeps the reference's order and
// rounding, so the mask is the same whichever computes it. Included by tile_kernels.h (VW, KERNEL).
//
// The reference, per row: a[j] = Double(x[j] − mean[j]) (the subtraction in Float); four partial sums of
// squares q[j mod 4] over whole groups of four, the tail into q[0]; sum[j] += a[j]; with the similarity,
// norm = √((q0 + q1) + (q2 + q3)), unit = 1 / norm and dir[j] += a[j] · unit (a zero norm makes the block's
// similarity NaN). One division a row, not one a value: a Double division a value bounded the summaries
// (VDIVPD: 4–8 cycles a vector of four).
// Then mean[j] = Float(sum[j] / n) and the similarity (√Σ_j dir[j]²)² / n², the sum in j's order.
// Here the four q's are one vector of 4 doubles (their lanes), SUMMARY_ROWS rows' chains side by side
// (one row's 32 dependent additions at D = 128 would wait on each other), and sum/dir go 8 dimensions a
// vector, then 4, then 1, with every row's addition in row order. No FMA anywhere: each product is rounded, as Swift's.

// 4-double vectors in inlined helpers: no ABI crosses a call, whatever the set's vector width.
#pragma clang diagnostic ignored "-Wpsabi"

typedef double vdouble4 __attribute__((vector_size(32), aligned(8)));

typedef double vdouble8 __attribute__((vector_size(64), aligned(8)));

/// Double(x[j + i] − mean[j + i]) for i < 8.
INLINE vdouble8 summary_centered8(const float *x, const float *mean, long j) {
    typedef float vfloat8 __attribute__((vector_size(32), aligned(4)));
    vfloat8 a = *(const vfloat8 *)(x + j) - *(const vfloat8 *)(mean + j);
    return __builtin_convertvector(a, vdouble8);
}

/// Rows whose sums of squares run side by side.
#define SUMMARY_ROWS 8

/// Double(x[j] − mean[j]) for j, j+1, j+2, j+3.
INLINE vdouble4 summary_centered4(const float *x, const float *mean, long j) {
    typedef float vfloat4 __attribute__((vector_size(16), aligned(4)));
    vfloat4 a = *(const vfloat4 *)(x + j) - *(const vfloat4 *)(mean + j);
    return __builtin_convertvector(a, vdouble4);
}

/// The norms of rows [r0, r0 + rows) (rows ≤ SUMMARY_ROWS), as the reference computes them.
INLINE void summary_norms(const float *x, long r0, long rows, long d, const float *mean, double *norm) {
#pragma clang fp contract(off)
    const long d4 = d / 4 * 4;
    vdouble4 q[SUMMARY_ROWS];
    for (long r = 0; r < SUMMARY_ROWS; r++) q[r] = (vdouble4){0, 0, 0, 0};
    for (long j = 0; j < d4; j += 4) {
#pragma clang loop unroll(full)
        for (long r = 0; r < SUMMARY_ROWS; r++) {
            if (r < rows) {
                vdouble4 a = summary_centered4(x + (r0 + r) * d, mean, j);
                q[r] += a * a;
            }
        }
    }
    for (long r = 0; r < rows; r++) {
        const float *xr = x + (r0 + r) * d;
        double q0 = q[r][0];
        for (long j = d4; j < d; j++) {
            double a = (double)(xr[j] - mean[j]);
            q0 += a * a;
        }
        norm[r] = __builtin_sqrt((q0 + q[r][1]) + (q[r][2] + q[r][3]));
    }
}

double KERNEL(summarize_block)(const float *x, long n, long d, const float *mean, float *meanOut, double *scratch,
                               int needSimilarity) {
#pragma clang fp contract(off)
    double *sum = scratch, *dir = scratch + d;
    for (long j = 0; j < d; j++) sum[j] = dir[j] = 0;
    const long d4 = d / 4 * 4;
    int zeroRow = 0;
    for (long r0 = 0; r0 < n; r0 += SUMMARY_ROWS) {
        const long rows = n - r0 < SUMMARY_ROWS ? n - r0 : SUMMARY_ROWS;
        double norm[SUMMARY_ROWS] = {0}, unit[SUMMARY_ROWS] = {0};
        if (needSimilarity) {
            summary_norms(x, r0, rows, d, mean, norm);
            for (long r = 0; r < rows; r++) {
                zeroRow |= norm[r] == 0;
                unit[r] = norm[r] != 0 ? 1.0 / norm[r] : 0;
            }
        }
        // Each column's sums run over the rows in order, whatever the vectors' width: eight columns at a time
        // (one register or several, as the set has them), then four, then one. A zero row's values are all
        // zero and its unit 0, so it adds nothing (and the similarity is NaN anyway); a row of norm ∞ has
        // unit 0 and adds NaN where a value is ∞, as the reference does.
        long j = 0;
        for (; j + 8 <= d; j += 8) {
            vdouble8 s = *(vdouble8 *)(sum + j), t = *(vdouble8 *)(dir + j);
            for (long r = 0; r < rows; r++) {
                vdouble8 a = summary_centered8(x + (r0 + r) * d, mean, j);
                s += a;
                if (needSimilarity) t += a * unit[r];
            }
            *(vdouble8 *)(sum + j) = s;
            *(vdouble8 *)(dir + j) = t;
        }
        for (; j < d4; j += 4) {
            vdouble4 s = *(vdouble4 *)(sum + j), t = *(vdouble4 *)(dir + j);
            for (long r = 0; r < rows; r++) {
                vdouble4 a = summary_centered4(x + (r0 + r) * d, mean, j);
                s += a;
                if (needSimilarity) t += a * unit[r];
            }
            *(vdouble4 *)(sum + j) = s;
            *(vdouble4 *)(dir + j) = t;
        }
        for (; j < d; j++) {
            for (long r = 0; r < rows; r++) {
                double a = (double)(x[(r0 + r) * d + j] - mean[j]);
                sum[j] += a;
                if (needSimilarity) dir[j] += a * unit[r];
            }
        }
    }
    const double nd = (double)n;
    for (long j = 0; j < d; j++) meanOut[j] = (float)(sum[j] / nd);
    if (!needSimilarity) return 0;
    if (zeroRow) return __builtin_nan("");
    double q = 0;
    for (long j = 0; j < d; j++) q += dir[j] * dir[j];
    double norm = __builtin_sqrt(q);
    return norm * norm / (nd * nd);
}
