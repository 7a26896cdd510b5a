// One query block of a dense pass as BlockSparseAttention runs it, for the C harnesses (cpu-kernel-pass.c,
// cpu-threads-pass.c): its two 64-row tiles packed as Q̂ᵀ, then every key block of the head visited by both
// tiles in turn (scores, softmax, P·V), the first tile asking for the next block's lines. Not part of the
// package.
#include "CSpargeKernels.h"
#include <math.h>
#include <string.h>

enum { D = 128, BQ = 128, BK = 64, L = 64, S = L + 16, TILES = BQ / L };

/// `rows` (BQ × D) against `nk` key blocks of `keys` and `values`; the tiles' Oᵀ go to `out` (TILES × D × L).
/// `qt` holds TILES × D × S floats, `scores` BK × S + L.
static void pass_query_block(sparge_tile_kernels k, const float *rows, const float *keys, const float *values,
                             long nk, float *qt, float *out, float *scores) {
    float *rowMax = scores + BK * S, m[TILES][L], l[TILES][L];
    const float scale = 0.088388347f * 1.442695041f;
    for (long t = 0; t < TILES; t++) {
        for (long r = 0; r < L; r++)
            for (long i = 0; i < D; i++) qt[t * D * S + i * S + r] = rows[(t * L + r) * D + i] * scale;
        memset(out + t * D * L, 0, sizeof(float) * D * L);
        for (long r = 0; r < L; r++) m[t][r] = -INFINITY, l[t][r] = 0;
    }
    for (long j = 0; j < nk; j++) {
        const float *kj = keys + j * BK * D, *vj = values + j * BK * D;
        for (long t = 0; t < TILES; t++) {
            for (long r = 0; r < L; r++) rowMax[r] = -INFINITY;
            int ahead = t == 0 && j + 1 < nk;
            k.scores(qt + t * D * S, S, L, kj, D, BK, scores, rowMax, ahead ? kj + BK * D : NULL,
                     ahead ? vj + BK * D : NULL, BK * D * 4);
            k.softmax(scores, S, L, BK, rowMax, m[t], l[t]);
            k.pv(scores, S, L, vj, D, BK, rowMax, out + t * D * L);
        }
    }
}
