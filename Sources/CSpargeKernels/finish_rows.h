// The tile's last step (AttentionTile.finish): output rows O[r][i] = Oᵀ[i][r] · (1 / l[r]) (0 where l[r] is
// not positive), Oᵀ read eight lanes × eight dimensions at a time and transposed in registers, so that both
// sides move in whole vectors (value by value, the strided reads were ~1% of a sparse pass). Included by
// tile_kernels.h (KERNEL).

typedef float vfloat8 __attribute__((vector_size(32), aligned(4)));

/// Eight rows of eight floats transposed: column i of `r` becomes `out[i]`.
INLINE void transpose_floats_8x8(const vfloat8 r[8], vfloat8 out[8]) {
    vfloat8 t[8], u[8];
    for (int k = 0; k < 4; k++) {
        t[2 * k] = __builtin_shufflevector(r[2 * k], r[2 * k + 1], 0, 8, 1, 9, 4, 12, 5, 13);
        t[2 * k + 1] = __builtin_shufflevector(r[2 * k], r[2 * k + 1], 2, 10, 3, 11, 6, 14, 7, 15);
    }
    for (int k = 0; k < 2; k++) {
        for (int h = 0; h < 2; h++) {
            vfloat8 a = t[4 * k + h], b = t[4 * k + 2 + h];
            u[4 * k + 2 * h] = __builtin_shufflevector(a, b, 0, 1, 8, 9, 4, 5, 12, 13);
            u[4 * k + 2 * h + 1] = __builtin_shufflevector(a, b, 2, 3, 10, 11, 6, 7, 14, 15);
        }
    }
    for (int q = 0; q < 4; q++) {
        out[q] = __builtin_shufflevector(u[q], u[4 + q], 0, 1, 2, 3, 8, 9, 10, 11);
        out[4 + q] = __builtin_shufflevector(u[q], u[4 + q], 4, 5, 6, 7, 12, 13, 14, 15);
    }
}

void KERNEL(finish_rows)(const float *outputT, long lanes, long dim, long rows, const float *runningSum,
                         float *output) {
    float inv[rows > 0 ? rows : 1];
    for (long r = 0; r < rows; r++) inv[r] = runningSum[r] > 0 ? 1 / runningSum[r] : 0;
    const long rows8 = rows / 8 * 8, dim8 = dim / 8 * 8;
    for (long r0 = 0; r0 < rows8; r0 += 8) {
        for (long i0 = 0; i0 < dim8; i0 += 8) {
            vfloat8 r[8], out[8];
            for (int k = 0; k < 8; k++) r[k] = *(const vfloat8 *)(outputT + (i0 + k) * lanes + r0);
            transpose_floats_8x8(r, out);
            for (int k = 0; k < 8; k++) *(vfloat8 *)(output + (r0 + k) * dim + i0) = out[k] * inv[r0 + k];
        }
        for (long r = r0; r < r0 + 8; r++)
            for (long i = dim8; i < dim; i++) output[r * dim + i] = outputT[i * lanes + r] * inv[r];
    }
    for (long r = rows8; r < rows; r++)
        for (long i = 0; i < dim; i++) output[r * dim + i] = outputT[i * lanes + r] * inv[r];
}
