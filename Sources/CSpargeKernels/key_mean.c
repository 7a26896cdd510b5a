// The K mean's column sums (KeyMean.init(summing:rows:)): plain C, the same Doubles on every ISA. Each column
// is summed from zero over the rows in order, Double(x) added one row after another; nothing can fuse (no
// product) or reorder (one sum a column), so every clone gives the bits of its twin, KeyMean.columnSumsTwin.
// The sums of a group of columns stay in registers over all the rows (a Swift loop kept them in memory: a
// load, an addition and a store a value, 4.1 ms of a 113 ms sparse pass on the 16-core Xeon).
#include "CSpargeKernels.h"
#include "per_isa_clones.h"

typedef double vdouble8 __attribute__((vector_size(64), aligned(8)));
typedef float vfloat8 __attribute__((vector_size(32), aligned(4)));

/// Columns whose sums stay in registers while the rows go by: 4 vectors of 8 Doubles (4 zmm, 8 ymm).
#define KEY_MEAN_COLUMNS 32

PER_ISA_CLONES void sparge_key_column_sums(const float *x, long rows, long dim, double *sums) {
    long j = 0;
    for (; j + KEY_MEAN_COLUMNS <= dim; j += KEY_MEAN_COLUMNS) {
        vdouble8 s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
        for (long r = 0; r < rows; r++) {
            const float *row = x + r * dim + j;
            s0 += __builtin_convertvector(*(const vfloat8 *)row, vdouble8);
            s1 += __builtin_convertvector(*(const vfloat8 *)(row + 8), vdouble8);
            s2 += __builtin_convertvector(*(const vfloat8 *)(row + 16), vdouble8);
            s3 += __builtin_convertvector(*(const vfloat8 *)(row + 24), vdouble8);
        }
        *(vdouble8 *)(sums + j) = s0;
        *(vdouble8 *)(sums + j + 8) = s1;
        *(vdouble8 *)(sums + j + 16) = s2;
        *(vdouble8 *)(sums + j + 24) = s3;
    }
    for (; j < dim; j++) {
        double s = 0;
        for (long r = 0; r < rows; r++) s += (double)x[r * dim + j];
        sums[j] = s;
    }
}
