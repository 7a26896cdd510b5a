// AttentionPrecision.int8's rounding of Q, K and V: plain C, the same bits on every ISA (the integer
// products are the per-ISA part). The Swift scalar path dequantizes what these return, so both paths round alike.
// Loops run along rows so that the compiler vectorizes them (a block is quantized once per query block
// that visits it: in scalar code with a libm call per value it cost more than the products).
#include "CSpargeKernels.h"
#include <stdlib.h>
#include "per_isa_clones.h"
// The exported functions are PER_ISA_CLONES: no operation here can fuse or reorder (divisions, one
// subtraction, maxima), so every clone gives the same integers and scales.

/// `y` rounded to the nearest integer, ties to even, for |y| < 2²²: the 1.5·2²³ trick (no libm call).
/// (Without -ffast-math, which this target never gets, the compiler keeps both operations.)
static inline float round_even(float y) { return (y + 12582912.0f) - 12582912.0f; }

static inline float larger(float a, float b) { return a > b ? a : b; }
static inline float magnitude(float a) { return a < 0 ? -a : a; }

/// `y` within ±limit. Only a scale rounded down among the subnormals (largest ≲ 2⁻¹²⁶·limit) takes a value
/// past the limit, which the kernels' operands cannot hold (the int8 quads: a byte).
static inline float within(float y, float limit) { return y > limit ? limit : y < -limit ? -limit : y; }

/// n = round((x − mean) / scale), within ±limit, along one row of `dim` (mean NULL: 0); the loops the compiler
/// vectorizes.
static void round_row(const float *x, long dim, const float *mean, float scale, float limit, short *n) {
    if (mean)
        for (long i = 0; i < dim; i++) n[i] = (short)(int)within(round_even((x[i] - mean[i]) / scale), limit);
    else
        for (long i = 0; i < dim; i++) n[i] = (short)(int)within(round_even(x[i] / scale), limit);
}

PER_ISA_CLONES float sparge_quantize(const float *x, long count, long dim, const float *mean, float limit,
                                     short *n) {
    float largest = 0;
    for (long r = 0; r < count; r += dim) {
        if (mean)
            for (long i = 0; i < dim; i++) largest = larger(largest, magnitude(x[r + i] - mean[i]));
        else
            for (long i = 0; i < dim; i++) largest = larger(largest, magnitude(x[r + i]));
    }
    float scale = largest / limit;
    if (!(scale > 0)) {  // all zero, or so small that the scale underflows to 0: zeros
        for (long i = 0; i < count; i++) n[i] = 0;
        return 0;
    }
    for (long r = 0; r < count; r += dim) round_row(x + r, dim, mean, scale, limit, n + r);
    return scale;
}

PER_ISA_CLONES void sparge_column_mean(const float *x, long rows, long dim, float *mean) {
    for (long i = 0; i < dim; i++) mean[i] = 0;
    for (long r = 0; r < rows; r++)
        for (long i = 0; i < dim; i++) mean[i] += x[r * dim + i];
    for (long i = 0; i < dim; i++) mean[i] /= (float)rows;
}

/// `(lo, hi)` as one word of two int16 halves, low first (the kernels' pairs).
static inline int pair(short lo, short hi) { return (int)((unsigned)(unsigned short)lo | (unsigned)(unsigned short)hi << 16); }

PER_ISA_CLONES void sparge_quantize_block(const float *keys, const float *values, long rows, long dim, int *packedKeys,
                           float *keyMean, float *keyScale, int *packedValues, float *valueScale) {
    long pairs = (dim + 1) / 2;
    short *n = malloc((size_t)(rows * dim + dim) * sizeof(short));  // up to MBs: not on a worker's stack
    sparge_column_mean(keys, rows, dim, keyMean);
    if (dim % 2) keyMean[dim] = 0;
    *keyScale = sparge_quantize(keys, rows * dim, dim, keyMean, 127, n);
    for (long r = 0; r < rows; r++)
        for (long j = 0; j < pairs; j++)
            packedKeys[r * pairs + j] = pair(n[r * dim + 2 * j], 2 * j + 1 < dim ? n[r * dim + 2 * j + 1] : 0);
    // Values: one scale per dimension (column), max|v| / 2047 — sparge_quantize's rounding, by columns.
    float largest[dim];
    for (long i = 0; i < dim; i++) largest[i] = 0;
    for (long r = 0; r < rows; r++)
        for (long i = 0; i < dim; i++) largest[i] = larger(largest[i], magnitude(values[r * dim + i]));
    for (long i = 0; i < dim; i++) valueScale[i] = largest[i] / 2047;
    // A column of zeros has scale 0 (so has one whose scale underflows): divided by 1 instead, it rounds to 0.
    float divisor[dim];
    for (long i = 0; i < dim; i++) divisor[i] = valueScale[i] > 0 ? valueScale[i] : 1;
    for (long r = 0; r < rows; r++)
        for (long i = 0; i < dim; i++)
            n[r * dim + i] = (short)(int)within(round_even(values[r * dim + i] / divisor[i]), 2047);
    for (long i = 0; i < dim; i++) n[rows * dim + i] = 0;  // the pad row of an odd count
    for (long j = 0; j < (rows + 1) / 2; j++)
        for (long i = 0; i < dim; i++) packedValues[j * dim + i] = pair(n[2 * j * dim + i], n[(2 * j + 1) * dim + i]);
    free(n);
}
