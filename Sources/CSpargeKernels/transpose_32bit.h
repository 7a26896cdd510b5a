// An 8 × 8 transpose of 32-bit values in registers (three rounds of interleaving), for the layouts that turn
// rows into columns: the tile's finish (floats) and the packing of bf16 query pairs (words).
#ifndef SPARGE_TRANSPOSE_32BIT_H
#define SPARGE_TRANSPOSE_32BIT_H

typedef unsigned u32x8 __attribute__((vector_size(32), aligned(4)));

/// Column i of `r` (r[0][i] … r[7][i]) becomes `out[i]`.
static inline __attribute__((always_inline)) void transpose_32bit_8x8(const u32x8 r[8], u32x8 out[8]) {
    u32x8 t[8], u[8];
    for (int k = 0; k < 4; k++) {
        t[2 * k] = __builtin_shufflevector(r[2 * k], r[2 * k + 1], 0, 8, 1, 9, 4, 12, 5, 13);
        t[2 * k + 1] = __builtin_shufflevector(r[2 * k], r[2 * k + 1], 2, 10, 3, 11, 6, 14, 7, 15);
    }
    for (int k = 0; k < 2; k++) {
        for (int h = 0; h < 2; h++) {
            u32x8 a = t[4 * k + h], b = t[4 * k + 2 + h];
            u[4 * k + 2 * h] = __builtin_shufflevector(a, b, 0, 1, 8, 9, 4, 5, 12, 13);
            u[4 * k + 2 * h + 1] = __builtin_shufflevector(a, b, 2, 3, 10, 11, 6, 7, 14, 15);
        }
    }
    for (int q = 0; q < 4; q++) {
        out[q] = __builtin_shufflevector(u[q], u[4 + q], 0, 1, 2, 3, 8, 9, 10, 11);
        out[4 + q] = __builtin_shufflevector(u[q], u[4 + q], 4, 5, 6, 7, 12, 13, 14, 15);
    }
}

#endif
