// tile_kernels_bf16.h and tile_kernels_int8_amx.h with the tile instructions emulated in C and the vectors
// compiled for AVX2: the AMX kernels' loops, tails, strides and layouts, runnable on a machine without AMX. Only the tests call it
// (against the scalar twin, bf16_tiles.c); the instructions themselves are checked on an AMX machine by
// benchmarks/amx-check.c.
#if defined(__x86_64__)
#include "CSpargeKernels.h"
#include <string.h>
#pragma clang diagnostic ignored "-Wpsabi"  // 512-bit vectors in inlined helpers: no ABI crosses a call
#define KERNEL(name) sparge_##name##_emulated
#define VW 16
#define HAS_FMA 1
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#include "vector_ops.h"

/// Eight tile registers of 16 rows × 64 bytes per thread, as the configuration sets them.
static __thread unsigned char emulated_tiles[8][16][64];

static void emulated_load(int t, const void *p, long rowBytes) {
    for (int r = 0; r < 16; r++) memcpy(emulated_tiles[t][r], (const char *)p + r * rowBytes, 64);
}

static void emulated_store(int t, void *p, long rowBytes) {
    for (int r = 0; r < 16; r++) memcpy((char *)p + r * rowBytes, emulated_tiles[t][r], 64);
}

/// TDPBF16PS: C[m][n] += A[m][2k]·B[k][2n] + A[m][2k+1]·B[k][2n+1], k in order (each product exact in fp32).
static void emulated_dp(int c, int a, int b) {
    for (int m = 0; m < 16; m++) {
        float row[16];
        memcpy(row, emulated_tiles[c][m], 64);
        const unsigned short *am = (const unsigned short *)emulated_tiles[a][m];
        for (int k = 0; k < 16; k++) {
            const unsigned short *bk = (const unsigned short *)emulated_tiles[b][k];
            for (int n = 0; n < 16; n++) {
                row[n] += sparge_bf16_widened(am[2 * k]) * sparge_bf16_widened(bk[2 * n]);
                row[n] += sparge_bf16_widened(am[2 * k + 1]) * sparge_bf16_widened(bk[2 * n + 1]);
            }
        }
        memcpy(emulated_tiles[c][m], row, 64);
    }
}

/// TDPBSSD: C[m][n] += Σ_k Σ_i A[m][4k + i]·B[k][4n + i] over signed bytes, in int32 (exact).
static void emulated_dp_int8(int c, int a, int b) {
    for (int m = 0; m < 16; m++) {
        int row[16];
        memcpy(row, emulated_tiles[c][m], 64);
        const signed char *am = (const signed char *)emulated_tiles[a][m];
        for (int k = 0; k < 16; k++) {
            const signed char *bk = (const signed char *)emulated_tiles[b][k];
            for (int n = 0; n < 16; n++)
                for (int i = 0; i < 4; i++) row[n] += am[4 * k + i] * bk[4 * n + i];
        }
        memcpy(emulated_tiles[c][m], row, 64);
    }
}

#define TILE_CONFIGURE() ((void)0)
#define TILE_RELEASE() ((void)0)
#define TILE_ZERO(t) memset(emulated_tiles[t], 0, 1024)
#define TILE_LOAD(t, p, rowBytes) emulated_load(t, p, rowBytes)
#define TILE_STORE(t, p, rowBytes) emulated_store(t, p, rowBytes)
#define TILE_DP(c, a, b) emulated_dp(c, a, b)
#define TILE_DP_INT8(c, a, b) emulated_dp_int8(c, a, b)

#include "bf16_pairs.h"

#include "tile_kernels_bf16.h"
#include "tile_kernels_int8_amx.h"
#pragma clang attribute pop

sparge_bf16_tile_kernels sparge_bf16_emulated(void) { return sparge_bf16_kernels_emulated(); }
sparge_int8_scores_fn sparge_int8_scores_amx_emulated(void) { return sparge_int8_tile_scores_emulated; }
#endif
