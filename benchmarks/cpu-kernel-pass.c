// One thread's share of a dense pass as BlockSparseAttention runs it (query blocks of two 64-row tiles, each
// key block visited by both tiles: scores, softmax, P·V), timed in CPU time so that other processes on the
// machine count less; two kernel sets A and B (the AVX2 objects of two builds) alternate round by round.
// Built and run by cpu-kernel-pass.sh; not part of the package.
#include "cpu-pass.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

sparge_tile_kernels a_sparge_kernels_avx2(void), b_sparge_kernels_avx2(void);

static double cpu_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/// GFLOP/s of `blocks` query blocks against every key block of one head of N tokens.
static double pass(sparge_tile_kernels k, const float *q, const float *keys, const float *values, long n, long blocks,
                   float *qt, float *out, float *scores) {
    double t0 = cpu_seconds();
    for (long b = 0; b < blocks; b++)
        pass_query_block(k, q + (b * 37 % (n / BQ)) * BQ * D, keys, values, n / BK, qt, out, scores);
    return 4.0 * BQ * n * D * blocks / (cpu_seconds() - t0) / 1e9;
}

/// GFLOP/s of the scores (`which` 0) or P·V (1) kernel alone on one block that stays in the L1/L2.
static double alone(sparge_tile_kernels k, int which, const float *keys, float *qt, float *out, float *scores) {
    float *rowMax = scores + BK * S, alpha[L];
    for (long r = 0; r < L; r++) alpha[r] = 1;
    const long calls = 2000;
    double t0 = cpu_seconds();
    for (long c = 0; c < calls; c++) {
        if (which == 0) {
            for (long r = 0; r < L; r++) rowMax[r] = -INFINITY;
            k.scores(qt, S, L, keys, D, BK, scores, rowMax, NULL, NULL, 0);
        } else {
            k.pv(scores, S, L, keys, D, BK, alpha, out);
        }
    }
    return 2.0 * L * BK * D * calls / (cpu_seconds() - t0) / 1e9;
}

static int ascending(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 9;
    long n = argc > 2 ? atol(argv[2]) : 8192, blocks = argc > 3 ? atol(argv[3]) : 2;
    if (rounds < 1 || rounds > 99 || n < BK || n % BQ) return fprintf(stderr, "usage: ROUNDS(1-99) N(multiple of 128) BLOCKS\n"), 2;
    float *q = aligned_alloc(64, n * D * 4), *keys = aligned_alloc(64, n * D * 4), *values = aligned_alloc(64, n * D * 4);
    float *qt = aligned_alloc(64, TILES * D * S * 4), *out = aligned_alloc(64, TILES * D * L * 4);
    float *scores = aligned_alloc(64, (BK * S + L) * 4);
    srand(1);
    for (long i = 0; i < n * D; i++) {
        q[i] = rand() / (float)RAND_MAX * 2 - 1;
        keys[i] = rand() / (float)RAND_MAX * 2 - 1;
        values[i] = rand() / (float)RAND_MAX * 2 - 1;
    }
    sparge_tile_kernels sets[2] = {a_sparge_kernels_avx2(), b_sparge_kernels_avx2()};
    double rate[2][99], probe[99], kernel[2][2][99];
    for (int r = 0; r < rounds; r++) {
        double t0 = cpu_seconds();
        sets[0].fmaProbe(5000000);
        probe[r] = 2.0 * sets[0].vectorWidth * sets[0].probeChains * 5000000 / (cpu_seconds() - t0) / 1e9;
        for (int s = 0; s < 2; s++) rate[s][r] = pass(sets[s], q, keys, values, n, blocks, qt, out, scores);
        for (int s = 0; s < 2; s++)
            for (int w = 0; w < 2; w++) kernel[s][w][r] = alone(sets[s], w, keys, qt, out, scores);
    }
    printf("N %ld, %ld query blocks of %d rows, D %d, one thread, CPU time; rounds:\n", n, blocks, BQ, D);
    for (int s = 0; s < 2; s++) {
        printf("%c:", "AB"[s]);
        for (int r = 0; r < rounds; r++) printf(" %.1f", rate[s][r]);
        qsort(rate[s], rounds, sizeof(double), ascending);
        printf("  median %.1f GFLOP/s\n", rate[s][rounds / 2]);
    }
    for (int w = 0; w < 2; w++) {
        printf("%s alone (one block in the L1/L2):", w ? "P·V" : "scores");
        for (int s = 0; s < 2; s++) {
            qsort(kernel[s][w], rounds, sizeof(double), ascending);
            printf(" %c %.1f", "AB"[s], kernel[s][w][rounds / 2]);
        }
        printf(" GFLOP/s (medians)\n");
    }
    qsort(probe, rounds, sizeof(double), ascending);
    printf("FMA probe median %.1f GFLOP/s\n", probe[rounds / 2]);
    return 0;
}
