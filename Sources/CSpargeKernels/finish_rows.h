// The tile's last step (AttentionTile.finish): output rows O[r][i] = Oᵀ[i][r] · (1 / l[r]) (0 where l[r] is
// not positive), Oᵀ read eight lanes × eight dimensions at a time and transposed in registers, so that both
// sides move in whole vectors (value by value, the strided reads were ~1% of a sparse pass). Included by
// tile_kernels.h (KERNEL).

#include "transpose_32bit.h"

typedef float vfloat8 __attribute__((vector_size(32), aligned(4)));

void KERNEL(finish_rows)(const float *outputT, long lanes, long dim, long rows, const float *runningSum,
                         float *output) {
    float inv[rows > 0 ? rows : 1];
    for (long r = 0; r < rows; r++) inv[r] = runningSum[r] > 0 ? 1 / runningSum[r] : 0;
    const long rows8 = rows / 8 * 8, dim8 = dim / 8 * 8;
    for (long r0 = 0; r0 < rows8; r0 += 8) {
        for (long i0 = 0; i0 < dim8; i0 += 8) {
            u32x8 r[8], out[8];
            for (int k = 0; k < 8; k++) r[k] = *(const u32x8 *)(outputT + (i0 + k) * lanes + r0);
            transpose_32bit_8x8(r, out);
            for (int k = 0; k < 8; k++) *(vfloat8 *)(output + (r0 + k) * dim + i0) = (vfloat8)out[k] * inv[r0 + k];
        }
        for (long r = r0; r < r0 + 8; r++)
            for (long i = dim8; i < dim; i++) output[r * dim + i] = outputT[i * lanes + r] * inv[r];
    }
    for (long r = rows8; r < rows; r++)
        for (long i = 0; i < dim; i++) output[r * dim + i] = outputT[i * lanes + r] * inv[r];
}
