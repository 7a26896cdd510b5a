// The whole dense pass of BlockSparseAttention in C, on 1 and on T threads, with one build's AVX2 kernels:
// every query block of every head (two 64-row tiles each) against every key block of its head, blocks
// claimed one at a time from a shared counter as the Swift driver claims them. Per thread it reports CPU
// time, wall time until it ran out of work, and blocks done; beside it the FMA probe on 1 and on T threads at
// once (what two busy cores cost the clock), and the scores kernel on one block in the L1/L2 against the
// probe run right before and after it (median of the ratios): the probe's FMA chains touch no memory, the
// kernel loads 8 values per 12 FMAs, so this ratio says whether loads are slow at the moment (on this shared
// machine it was ~90% at some moments and ~75% at others, the probe unchanged). Alternates 1 and T threads
// round by round. Built and run by cpu-threads-pass.sh; not part of the package.
#include "cpu-pass.h"
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <x86intrin.h>

sparge_tile_kernels sparge_kernels_avx2(void);

static double now(clockid_t clock) {
    struct timespec t;
    clock_gettime(clock, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

enum { MAXT = 8 };

typedef struct {
    sparge_tile_kernels k;
    const float *q, *keys, *values;
    float *out;
    long n, heads;
    atomic_long next;
    double start;
} job_t;

typedef struct {
    job_t *job;
    double cpu, wall, probe;
    long blocks;
    int probeOnly;
} worker_t;

/// Query block `item` (heads outer); its tiles' Oᵀ live in their own output rows.
static void query_block(job_t *j, long item, float *qt, float *scores) {
    long nq = j->n / BQ, h = item / nq, b = item % nq;
    pass_query_block(j->k, j->q + (h * j->n + b * BQ) * D, j->keys + h * j->n * D, j->values + h * j->n * D,
                     j->n / BK, qt, j->out + (h * j->n + b * BQ) * D, scores);
}

static void *work(void *arg) {
    worker_t *w = arg;
    job_t *j = w->job;
    double c0 = now(CLOCK_THREAD_CPUTIME_ID);
    if (w->probeOnly) {
        j->k.fmaProbe(100000000);
        double c = now(CLOCK_THREAD_CPUTIME_ID) - c0;
        w->probe = 2.0 * j->k.vectorWidth * j->k.probeChains * 100000000 / c / 1e9;
        w->wall = now(CLOCK_MONOTONIC) - j->start;
        return NULL;
    }
    float *qt = aligned_alloc(64, TILES * D * S * 4), *scores = aligned_alloc(64, (BK * S + L) * 4);
    long items = j->heads * (j->n / BQ);
    w->blocks = 0;
    for (long i; (i = atomic_fetch_add(&j->next, 1)) < items; w->blocks++) query_block(j, i, qt, scores);
    w->cpu = now(CLOCK_THREAD_CPUTIME_ID) - c0;
    w->wall = now(CLOCK_MONOTONIC) - j->start;
    free(qt), free(scores);
    return NULL;
}

/// Runs `threads` workers (the caller is one) and fills `w`.
static void run(job_t *j, int threads, int probeOnly, worker_t *w) {
    pthread_t tid[MAXT];
    atomic_store(&j->next, 0);
    j->start = now(CLOCK_MONOTONIC);
    for (int t = 0; t < threads; t++) w[t] = (worker_t){.job = j, .probeOnly = probeOnly};
    for (int t = 1; t < threads; t++) pthread_create(&tid[t], NULL, work, &w[t]);
    work(&w[0]);
    for (int t = 1; t < threads; t++) pthread_join(tid[t], NULL);
}

static double median(double *x, int n);

/// The hot scores kernel's rate over the probe's, each call between two probes of the same FLOPs (median).
static double hot_scores_share(sparge_tile_kernels k, const float *keys, float *qt, float *scores) {
    enum { PAIRS = 301 };
    double ratio[PAIRS];
    long iterations = 2L * L * BK * D / (2 * k.vectorWidth * k.probeChains);
    for (int i = 0; i < PAIRS; i++) {
        for (long r = 0; r < L; r++) scores[BK * S + r] = -INFINITY;
        unsigned long t0 = __rdtsc();
        k.fmaProbe(iterations);
        unsigned long t1 = __rdtsc();
        k.scores(qt, S, L, keys, D, BK, scores, scores + BK * S, NULL, NULL, 0);
        unsigned long t2 = __rdtsc();
        k.fmaProbe(iterations);
        unsigned long t3 = __rdtsc();
        ratio[i] = ((t1 - t0) + (t3 - t2)) / 2.0 / (t2 - t1);
    }
    return median(ratio, PAIRS);
}

static int ascending(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *x, int n) {
    qsort(x, n, sizeof(double), ascending);
    return x[n / 2];
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 5, threads = argc > 4 ? atoi(argv[4]) : 2;
    long n = argc > 2 ? atol(argv[2]) : 8192, heads = argc > 3 ? atol(argv[3]) : 4;
    if (rounds < 1 || rounds > 99 || n < BQ || n % BQ || threads < 1 || threads > MAXT)
        return fprintf(stderr, "usage: ROUNDS(1-99) N(multiple of 128) HEADS THREADS(1-%d)\n", MAXT), 2;
    long count = heads * n * D;
    float *q = aligned_alloc(64, count * 4), *keys = aligned_alloc(64, count * 4), *values = aligned_alloc(64, count * 4);
    float *out = aligned_alloc(64, count * 4);
    srand(1);
    for (long i = 0; i < count; i++) {
        q[i] = rand() / (float)RAND_MAX * 2 - 1;
        keys[i] = rand() / (float)RAND_MAX * 2 - 1;
        values[i] = rand() / (float)RAND_MAX * 2 - 1;
        out[i] = 0;
    }
    job_t job = {.k = sparge_kernels_avx2(), .q = q, .keys = keys, .values = values, .out = out, .n = n, .heads = heads};
    double flops = 4.0 * n * n * D * heads;
    double wall1[99], cpu1[99], wallT[99], perThreadT[99], lastT[99], probe1[99], probeT[99], hot[99];
    float *qt = aligned_alloc(64, D * S * 4), *scores = aligned_alloc(64, (BK * S + L) * 4);
    for (long i = 0; i < D * S; i++) qt[i] = q[i];
    printf("dense N %ld, %ld heads, D %d; rounds (1 thread | %d threads):\n", n, heads, D, threads);
    for (int r = 0; r < rounds; r++) {
        worker_t w[MAXT];
        hot[r] = hot_scores_share(job.k, keys, qt, scores);
        run(&job, 1, 1, w);
        probe1[r] = w[0].probe;
        run(&job, threads, 1, w);
        probeT[r] = 0;
        for (int t = 0; t < threads; t++) probeT[r] += w[t].probe;
        run(&job, 1, 0, w);
        wall1[r] = flops / w[0].wall / 1e9, cpu1[r] = flops / w[0].cpu / 1e9;
        run(&job, threads, 0, w);
        double wall = 0, cpu = 0, first = 1e30;
        for (int t = 0; t < threads; t++) {
            wall = w[t].wall > wall ? w[t].wall : wall, cpu += w[t].cpu;
            first = w[t].wall < first ? w[t].wall : first;
        }
        wallT[r] = flops / wall / 1e9, perThreadT[r] = flops / cpu / 1e9, lastT[r] = (wall - first) / wall;
        printf("  1: wall %.1f, CPU %.1f GFLOP/s, probe %.1f | %d: wall %.1f, CPU per thread %.1f GFLOP/s, blocks",
               wall1[r], cpu1[r], probe1[r], threads, wallT[r], perThreadT[r]);
        for (int t = 0; t < threads; t++) printf(" %ld", w[t].blocks);
        printf(", last thread alone %.1f%% of the wall, probe %.1f; hot scores %.0f%% of the probe\n", lastT[r] * 100,
               probeT[r], hot[r] * 100);
    }
    printf("medians: 1 thread wall %.1f CPU %.1f probe %.1f (%.0f%%) | %d threads wall %.1f, CPU per thread %.1f, "
           "probe %.1f (%.0f%%); tail %.1f%%; hot scores %.0f%% of the probe\n",
           median(wall1, rounds), median(cpu1, rounds), median(probe1, rounds),
           100 * median(wall1, rounds) / median(probe1, rounds), threads, median(wallT, rounds),
           median(perThreadT, rounds), median(probeT, rounds), 100 * median(wallT, rounds) / median(probeT, rounds),
           100 * median(lastT, rounds), 100 * median(hot, rounds));
    return 0;
}
