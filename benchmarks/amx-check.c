// The bf16 tile kernels (AMX) against their scalar twin (bf16_tiles.c) on fresh random shapes, standalone, for
// a machine without Swift. Build it where the sources are (a static binary runs anywhere x86-64):
//   clang -O2 -static -pthread -ISources/CSpargeKernels/include -ISources/CSpargeKernels \
//       Sources/CSpargeKernels/*.c benchmarks/amx-check.c -lm -o amx-check
// Run: `amx-check [TRIALS] [SEED]`. Every trial draws lanes (64, 128), D (32, 64, 96, 128, 256), a key count
// 1…blockK (blockK 64 or 128: every tail of the 32-key padding), a partial query tile and a scale, then:
//   scores   kernel vs twin from the same packed Q̂ᵀ and K;
//   softmax  from the same scores and state: P's bf16 pairs bit for bit, α and the maxima exactly, the sums;
//   P·V      from the same P, α (some lane groups all 1, which the kernel skips) and accumulator;
//   chained  scores → softmax → P·V of each alone (P may differ by a bf16 step where the scores' order did).
// It runs the emulated kernels (the same source, tiles emulated in C) everywhere, and the AMX kernels where
// sparge_cpu_isa() says AMX, on two threads at once (each loads its own tile configuration). Prints the
// largest errors; exits 1 on a failure, 2 when this CPU has no AMX (the emulated check still ran). On AMX
// it then times a visit on one core (`rates`): the tiles' peak, a configuration load, and the kernels of a
// visit together and apart, on blocks in the L2 and streamed from the L3, and the whole visit with K, Vᵀ
// and Oᵀ off their cache lines as the driver had them (`make_pass`).
#include "CSpargeKernels.h"
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <immintrin.h>

typedef struct {
    unsigned long long state;
} rng;

static double uniform(rng *g) {
    g->state = g->state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(g->state >> 11) / 9007199254740992.0;
}
static long pick(rng *g, long n) { return (long)(uniform(g) * n) % n; }


typedef struct {
    const char *name;
    sparge_bf16_tile_kernels kernels;
    long trials;
    unsigned long long seed;
    double scores, sums, pv, chained;
    long pairMismatches, stateMismatches, failures;
} check;

/// Largest |a − b| over the largest of `magnitude` (the same sums of |terms|), over n values.
static double error_of_sums(const float *a, const float *b, const float *magnitude, long n) {
    double err = 0, ref = 0;
    for (long i = 0; i < n; i++) {
        if (isinf(a[i]) || isinf(b[i])) {
            if (a[i] != b[i]) return INFINITY;
            continue;
        }
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= err)) err = d;
        if (fabs(magnitude[i]) > ref) ref = fabs(magnitude[i]);
    }
    return ref > 0 ? err / ref : err;
}

/// Largest |a − b| over the largest |b| (0 when b is all 0 and a equals it).
static double relative_max(const float *a, const float *b, long n) { return error_of_sums(a, b, b, n); }

/// Tolerances: scores are fp32 sums of up to D = 256 exact products in another order (the tiles add a pair's
/// products before accumulating): two such orders differ by at most about 2·D·2⁻²⁴ of Σ|q_i·k_i|, 3.1e-5 at
/// D = 256, so the scores' error is measured against Σ|q_i|·|k_i| (the twin's scores of |Q| and |K|), not
/// against the scores, which cancel (a tile of one query row failed a bound relative to its largest score at
/// 2.3e-5 on the device); the sums and P·V are sums of positive terms or of ≤ 256 keys (a visit of up to three blocks): 1e-5. The
/// chained output may also differ where a score's last bit (the tiles' order of a pair's products) moved a p
/// across a bf16 rounding boundary: one bf16 step, ≤ 2⁻⁸ for p ≤ 1, times |v| ≤ 1, is ≤ 3.9e-3 of an output
/// whose largest value is about 1 or more here: 4e-3 of the largest output (the emulation shows 0).
static const double scoreTolerance = 3.1e-5, sumTolerance = 1e-5, pvTolerance = 1e-5, chainedTolerance = 4e-3;

static void *run_check(void *argument) {
    check *c = argument;
    rng g = {c->seed};
    sparge_bf16_tile_kernels twin = sparge_bf16_twin();
    for (long t = 0; t < c->trials; t++) {
        const long dims[] = {32, 64, 96, 128, 256};
        long lanes = 64 * (1 + pick(&g, 2)), stride = lanes + 16, dim = dims[pick(&g, 5)];
        // A visit of one to three blocks: every block but the last a multiple of 32 keys, the last any count.
        long blockK = pick(&g, 2) ? 64 : 128, blockCount = 1 + pick(&g, 3), counts[3], keyCount = 0, kp = 0;
        for (long b = 0; b < blockCount; b++) {
            counts[b] = b + 1 < blockCount ? 32 * (1 + pick(&g, 2)) : 1 + pick(&g, blockK);
            keyCount += counts[b], kp += sparge_bf16_padded_keys(counts[b]);
        }
        long rows = 1 + pick(&g, lanes);
        float scale = (float)(0.3 + 0.6 * uniform(&g)) / sqrtf((float)dim) * 1.4426950f;
        float *q = malloc(sizeof(float) * lanes * dim), *k = malloc(sizeof(float) * keyCount * dim);
        float *v = malloc(sizeof(float) * keyCount * dim);
        for (long i = 0; i < lanes * dim; i++) q[i] = (float)(uniform(&g) * 4 - 2);
        for (long i = 0; i < keyCount * dim; i++) k[i] = (float)(uniform(&g) * 4 - 2), v[i] = (float)(uniform(&g) * 2 - 1);
        unsigned *qT = malloc(4 * dim / 2 * stride);
        sparge_pack_bf16_queries(q, rows, dim, stride, lanes, qT);
        // Σ|q_i|·|k_i| of every score: the scale of its rounding errors.
        float *qa = malloc(sizeof(float) * lanes * dim), *ka = malloc(sizeof(float) * keyCount * dim);
        for (long i = 0; i < lanes * dim; i++) qa[i] = fabsf(q[i]);
        for (long i = 0; i < keyCount * dim; i++) ka[i] = fabsf(k[i]);
        unsigned *qTa = malloc(4 * dim / 2 * stride);
        sparge_pack_bf16_queries(qa, rows, dim, stride, lanes, qTa);
        sparge_bf16_block kb[3], kba[3];
        for (long b = 0, first = 0; b < blockCount; first += counts[b], b++) {
            long bp = sparge_bf16_padded_keys(counts[b]);
            unsigned short *keys = malloc(2 * bp * dim), *valuesT = malloc(2 * bp * dim);
            unsigned short *keysA = malloc(2 * bp * dim), *valuesTA = malloc(2 * bp * dim);
            sparge_pack_bf16_block(k + first * dim, v + first * dim, counts[b], dim, keys, valuesT);
            sparge_pack_bf16_block(ka + first * dim, v + first * dim, counts[b], dim, keysA, valuesTA);
            kb[b] = (sparge_bf16_block){keys, valuesT, counts[b]};
            kba[b] = (sparge_bf16_block){keysA, valuesTA, counts[b]};
        }
        long scoreFloats = kp * stride;
        float *magnitude = malloc(4 * scoreFloats), *maxa = malloc(4 * lanes);
        for (long r = 0; r < lanes; r++) maxa[r] = -INFINITY;
        twin.scores(qTa, stride, lanes, kba, blockCount, dim, scale, magnitude, maxa, NULL, 0);
        float *s1 = malloc(4 * scoreFloats), *s2 = malloc(4 * scoreFloats);
        float *max1 = malloc(4 * lanes), *max2 = malloc(4 * lanes), *run1 = malloc(4 * lanes), *run2 = malloc(4 * lanes);
        float *sum1 = malloc(4 * lanes), *sum2 = malloc(4 * lanes);
        float *o1 = malloc(4 * dim * lanes), *o2 = malloc(4 * dim * lanes), *o0 = malloc(4 * dim * lanes);
        for (long i = 0; i < scoreFloats; i++) s1[i] = s2[i] = NAN;  // rows the kernels must write, poisoned
        for (long r = 0; r < lanes; r++) {
            max1[r] = max2[r] = pick(&g, 4) ? (float)(uniform(&g) * 4 - 2) : -INFINITY;
            run1[r] = run2[r] = pick(&g, 4) ? (float)(uniform(&g) * 4 - 2) : -INFINITY;
            sum1[r] = sum2[r] = isinf(run1[r]) ? 0 : (float)(1 + uniform(&g) * 10);
        }
        for (long i = 0; i < dim * lanes; i++) o0[i] = o1[i] = o2[i] = (float)(uniform(&g) * 2 - 1);

        // Scores.
        c->kernels.scores(qT, stride, lanes, kb, blockCount, dim, scale, s1, max1, kb, blockCount);
        twin.scores(qT, stride, lanes, kb, blockCount, dim, scale, s2, max2, NULL, 0);
        double e = 0;
        for (long row = 0; row < kp; row++) {
            double er = error_of_sums(s1 + row * stride, s2 + row * stride, magnitude + row * stride, lanes);
            if (!(er <= e)) e = er;
        }
        double em = error_of_sums(max1, max2, maxa, lanes);
        if (!(em <= e)) e = em;
        free(qa), free(ka), free(qTa), free(magnitude), free(maxa);
        for (long b = 0; b < blockCount; b++) free((void *)kba[b].keys), free((void *)kba[b].valuesT);
        if (!(e <= c->scores)) c->scores = e;
        int bad = !(e <= scoreTolerance);

        // Softmax from the twin's scores, the same state.
        memcpy(s1, s2, 4 * scoreFloats);
        memcpy(max1, max2, 4 * lanes);
        float *sums0 = malloc(4 * lanes);
        memcpy(sums0, sum1, 4 * lanes);
        c->kernels.softmax(s1, stride, lanes, keyCount, scale, max1, run1, sum1);
        twin.softmax(s2, stride, lanes, keyCount, scale, max2, run2, sum2);
        long mismatches = 0, stateMismatches = 0;
        for (long j = 0; j < kp / 2; j++)
            for (long r = 0; r < lanes; r++) mismatches += ((unsigned *)s1)[j * stride + r] != ((unsigned *)s2)[j * stride + r];
        for (long r = 0; r < lanes; r++) stateMismatches += max1[r] != max2[r] || run1[r] != run2[r];
        double es = relative_max(sum1, sum2, lanes);
        if (!(es <= c->sums)) c->sums = es;
        c->pairMismatches += mismatches;
        c->stateMismatches += stateMismatches;
        bad |= mismatches > 0 || stateMismatches > 0 || !(es <= sumTolerance);

        // P·V from the twin's P; some lane groups with α all 1.
        for (long r = 0; r < lanes; r += 16)
            if (pick(&g, 2))
                for (long l = r; l < r + 16; l++) max2[l] = 1;
        c->kernels.pv((const unsigned *)s2, stride, lanes, kb, blockCount, dim, max2, o1);
        twin.pv((const unsigned *)s2, stride, lanes, kb, blockCount, dim, max2, o2);
        double ep = relative_max(o1, o2, dim * lanes);
        if (!(ep <= c->pv)) c->pv = ep;
        bad |= !(ep <= pvTolerance);

        // Chained, each on its own.
        sparge_bf16_tile_kernels sets[2] = {c->kernels, twin};
        float *outs[2] = {o1, o2};
        for (int which = 0; which < 2; which++) {
            float *s = which ? s2 : s1, *mx = which ? max2 : max1, *run = which ? run2 : run1, *sum = which ? sum2 : sum1;
            for (long r = 0; r < lanes; r++) mx[r] = -INFINITY, run[r] = -INFINITY, sum[r] = 0;
            memcpy(outs[which], o0, 4 * dim * lanes);
            sets[which].scores(qT, stride, lanes, kb, blockCount, dim, scale, s, mx, NULL, 0);
            sets[which].softmax(s, stride, lanes, keyCount, scale, mx, run, sum);
            sets[which].pv((const unsigned *)s, stride, lanes, kb, blockCount, dim, mx, outs[which]);
        }
        double ec = relative_max(o1, o2, dim * lanes);
        if (!(ec <= c->chained)) c->chained = ec;
        bad |= !(ec <= chainedTolerance);
        if (bad) {
            c->failures++;
            if (c->failures <= 5)
                printf("  %s FAILED trial %ld: lanes %ld, D %ld, keys %ld in %ld blocks (last of %ld), rows %ld: scores "
                       "%.2e, P pairs differing %ld, state %ld, sums %.2e, pv %.2e, chained %.2e\n",
                       c->name, t, lanes, dim, keyCount, blockCount, blockK, rows, e, mismatches, stateMismatches, es,
                       ep, ec);
        }
        free(q), free(k), free(v), free(qT), free(s1), free(s2), free(max1), free(max2);
        for (long b = 0; b < blockCount; b++) free((void *)kb[b].keys), free((void *)kb[b].valuesT);
        free(run1), free(run2), free(sum1), free(sum2), free(o1), free(o2), free(o0), free(sums0);
    }
    return NULL;
}

static int report(const check *c) {
    printf("%-22s %ld trials: scores %.2e (≤ %.0e), P pairs differing %ld (of the twin's bits; must be 0), "
           "maxima/α differing %ld, sums %.2e (≤ %.0e), P·V %.2e (≤ %.0e), chained %.2e (≤ %.0e): %s\n",
           c->name, c->trials, c->scores, scoreTolerance, c->pairMismatches, c->stateMismatches, c->sums,
           sumTolerance, c->pv, pvTolerance, c->chained, chainedTolerance,
           c->failures ? "FAILED" : "passed");
    return c->failures ? 1 : 0;
}

// ---- Rates on one core (AMX only): where a visit's time goes. A visit is 64 lanes × 64 keys at D = 128
// (2·2·64·64·128 = 2.1 MFLOP); two tiles of 64 lanes visit each block in turn, as in the pass.

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static int compare_doubles(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/// The kernels' configuration (8 tiles of 16 rows × 64 bytes), for the probes below: the kernels' own
/// configuration is released first (so that their next call loads it again), and the probe releases its own.
typedef struct __attribute__((aligned(64))) {
    unsigned char palette, startRow, reserved[14];
    unsigned short bytesPerRow[16];
    unsigned char rows[16];
} tile_configuration;

static tile_configuration probe_configuration(sparge_bf16_tile_kernels k) {
    k.release();
    tile_configuration c = {0};
    c.palette = 1;
    for (int t = 0; t < 8; t++) c.bytesPerRow[t] = 64, c.rows[t] = 16;
    return c;
}

/// The tiles' own peak: TDPBF16PS on 4 accumulators from operands that stay in the tiles (16·16·32·2 FLOPs
/// each); returns GFLOP/s. Tiles configured and released here (the kernels' configuration released first).
__attribute__((target("amx-tile,amx-bf16"))) static double tile_peak(sparge_bf16_tile_kernels k, long n) {
    tile_configuration c = probe_configuration(k);
    _tile_loadconfig(&c);
    static unsigned short ones[16 * 32] __attribute__((aligned(64)));
    for (int i = 0; i < 16 * 32; i++) ones[i] = 0x3F80;
    _tile_loadd(4, ones, 64);
    _tile_loadd(5, ones, 64);
    _tile_loadd(6, ones, 64);
    _tile_loadd(7, ones, 64);
    _tile_zero(0), _tile_zero(1), _tile_zero(2), _tile_zero(3);
    double t0 = now_ns();
    for (long i = 0; i < n; i++) {
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    static float sink[256] __attribute__((aligned(64)));
    _tile_stored(0, sink, 64);
    double t1 = now_ns();
    _tile_release();
    return 4.0 * n * 16 * 16 * 32 * 2 / (t1 - t0);
}

/// Nanoseconds per LDTILECFG (what every kernel call paid before the configuration was kept per thread).
__attribute__((target("amx-tile"))) static double loadconfig_ns(sparge_bf16_tile_kernels k, long n) {
    tile_configuration c = probe_configuration(k);
    double t0 = now_ns();
    for (long i = 0; i < n; i++) _tile_loadconfig(&c);
    double t1 = now_ns();
    _tile_release();
    return (t1 - t0) / n;
}

/// Nanoseconds per TILELOADD (16 rows of 64 bytes, 256 bytes apart, as K's rows at D = 128) into 4 tiles in
/// turn, walking a buffer of `bytes` (16 KB stays in the L1, 1 MB in the L2): what a visit's ~160 tile
/// loads cost where their rows are.
__attribute__((target("amx-tile"))) static double tile_load_ns(sparge_bf16_tile_kernels k, long bytes, long n) {
    tile_configuration c = probe_configuration(k);
    _tile_loadconfig(&c);
    char *buffer = aligned_alloc(4096, bytes);
    memset(buffer, 1, bytes);
    long tiles = bytes / 4096 * 4;  // 4 tiles per 4 KB: rows 256 bytes apart, each tile at its own 64-byte column
    double t0 = now_ns();
    for (long i = 0; i < n; i += 4) {
        long a = i % tiles;
        _tile_loadd(4, buffer + (a / 4) * 4096 + (a % 4) * 64, 256);
        _tile_loadd(5, buffer + ((a + 1) / 4) * 4096 + ((a + 1) % 4) * 64, 256);
        _tile_loadd(6, buffer + ((a + 2) / 4) * 4096 + ((a + 2) % 4) * 64, 256);
        _tile_loadd(7, buffer + ((a + 3) / 4) * 4096 + ((a + 3) % 4) * 64, 256);
    }
    static float sink[256] __attribute__((aligned(64)));
    _tile_stored(7, sink, 64);
    double t1 = now_ns();
    _tile_release();
    free(buffer);
    return (t1 - t0) / n;
}

typedef struct {
    long lanes, stride, dim, keys, blocks;
    float scale;
    unsigned *qT[2];
    unsigned short *kv;  // blocks × (K [64][D], Vᵀ [D][64]), `blockWords` apart
    long blockWords;
    float *scores, *rowMax, *runMax[2], *runSum[2], *out[2];
} pass;

/// A pass over `blocks` key/value blocks. `skewed`: laid out as the driver had them before its blocks and
/// accumulators were put on cache lines — each block 16 bytes further off a line than the one before (0, 16,
/// 32, 48: what malloc gave its 32 KB blocks) and Oᵀ 48 bytes off (a Swift array's elements), so that most
/// 64-byte tile rows of K, Vᵀ and Oᵀ span two lines.
static pass make_pass(long blocks, int skewed) {
    const long keys = 64;
    pass p = {64, 80, 128, keys, blocks, 0.0884f * 1.4427f};
    rng g = {42};
    float *q = malloc(4 * 64 * 128), *k = malloc(4 * keys * 128), *v = malloc(4 * keys * 128);
    p.blockWords = 2 * p.keys * p.dim + (skewed ? 8 : 0);
    p.kv = aligned_alloc(64, 2 * p.blockWords * blocks + 64);
    for (long b = 0; b < blocks; b++) {
        for (long i = 0; i < keys * 128; i++) k[i] = (float)(uniform(&g) * 4 - 2), v[i] = (float)(uniform(&g) * 2 - 1);
        sparge_pack_bf16_block(k, v, p.keys, p.dim, p.kv + b * p.blockWords, p.kv + b * p.blockWords + p.keys * p.dim);
    }
    for (int t = 0; t < 2; t++) {
        for (long i = 0; i < 64 * 128; i++) q[i] = (float)(uniform(&g) * 4 - 2);
        p.qT[t] = aligned_alloc(64, 4 * p.dim / 2 * p.stride);
        sparge_pack_bf16_queries(q, 64, p.dim, p.stride, p.lanes, p.qT[t]);
        p.runMax[t] = aligned_alloc(64, 4 * 64), p.runSum[t] = aligned_alloc(64, 4 * 64);
        p.out[t] = (float *)aligned_alloc(64, 4 * 64 * 128 + 64) + (skewed ? 12 : 0);
        for (long r = 0; r < 64; r++) p.runMax[t][r] = -INFINITY, p.runSum[t][r] = 0;
        memset(p.out[t], 0, 4 * 64 * 128);
    }
    p.scores = aligned_alloc(64, 4 * 4 * p.keys * p.stride), p.rowMax = aligned_alloc(64, 4 * 64);
    free(q), free(k), free(v);
    return p;
}

/// What one visit does in `mode`: 0 scores alone, 1 scores + softmax, 2 scores + softmax + P·V (what a
/// pass runs), 3 as 2 with the tiles released after each visit (a configuration load per visit). The visit
/// takes `perCall` blocks from block b on (one call of each kernel for all of them, as the driver groups them).
static void visit(pass *p, sparge_bf16_tile_kernels k, int mode, int t, long b, long ahead, long perCall) {
    sparge_bf16_block blocks[4];
    for (long i = 0; i < perCall; i++) {
        const unsigned short *keys = p->kv + (b + i) % p->blocks * p->blockWords;
        blocks[i] = (sparge_bf16_block){keys, keys + p->keys * p->dim, p->keys};
    }
    sparge_bf16_block next[4];  // the next visit's blocks, asked for by the first tile
    for (long i = 0; i < perCall; i++) {
        const unsigned short *keys = p->kv + (ahead + i) % p->blocks * p->blockWords;
        next[i] = (sparge_bf16_block){keys, keys + p->keys * p->dim, p->keys};
    }
    for (long r = 0; r < p->lanes; r++) p->rowMax[r] = -INFINITY;
    k.scores(p->qT[t], p->stride, p->lanes, blocks, perCall, p->dim, p->scale, p->scores, p->rowMax, next,
             t == 0 ? perCall : 0);
    if (mode >= 1)
        k.softmax(p->scores, p->stride, p->lanes, perCall * p->keys, p->scale, p->rowMax, p->runMax[t], p->runSum[t]);
    if (mode >= 2) k.pv((const unsigned *)p->scores, p->stride, p->lanes, blocks, perCall, p->dim, p->rowMax, p->out[t]);
    if (mode == 3) k.release();
}

/// Median over 5 rounds of ns per visited block: every block of the pass visited by both tiles, in order,
/// `perCall` blocks a call.
static double ns_per_visit(pass *p, sparge_bf16_tile_kernels k, int mode, long visits, long perCall) {
    double round[5];
    for (int r = 0; r < 5; r++) {
        long n = 0;
        double t0 = now_ns();
        while (n < visits) {
            for (long b = 0; b < p->blocks && n < visits; b += perCall, n += 2 * perCall) {
                long ahead = b + perCall < p->blocks ? b + perCall : 0;
                visit(p, k, mode, 0, b, ahead, perCall);
                visit(p, k, mode, 1, b, ahead, perCall);
            }
        }
        round[r] = (now_ns() - t0) / n;
    }
    qsort(round, 5, sizeof(double), compare_doubles);
    return round[2];
}

static void rates(sparge_bf16_tile_kernels k) {
    const double flops = 4.0 * 64 * 64 * 128;
    double peak = tile_peak(k, 2000000);
    double ghz = peak / 1024;
    printf("rates on one core: TDPBF16PS peak %.0f GFLOP/s (= %.2f GHz at 1024 FLOPs a cycle); LDTILECFG %.0f ns; "
           "TILELOADD %.1f ns from the L1 (16 KB), %.1f ns from the L2 (1 MB)\n",
           peak, ghz, loadconfig_ns(k, 100000), tile_load_ns(k, 16384, 400000), tile_load_ns(k, 1 << 20, 400000));
    const char *modes[] = {"scores alone", "scores + softmax", "scores + softmax + P·V (the pass)",
                           "the pass, configured per visit"};
    for (int which = 0; which < 2; which++) {
        pass p = make_pass(which ? 512 : 4, 0), skewed = make_pass(which ? 512 : 4, 1);
        const char *where = which ? "512 blocks, 16 MB: from the L3" : "4 blocks, 128 KB: in the L2";
        for (int mode = 0; mode < 5; mode++) {
            double ns = ns_per_visit(mode < 4 ? &p : &skewed, k, mode < 4 ? mode : 2, which ? 4096 : 8192, 1);
            printf("  %s (%s): %.0f ns a visit, %.0f cycles, %.0f GFLOP/s (a whole visit's FLOPs)\n",
                   mode < 4 ? modes[mode] : "the pass, K/Vᵀ and Oᵀ off their lines as the driver had them", where, ns,
                   ns * ghz, flops / ns);
        }
    }
    // The same visits with two and four blocks a call (the driver's grouping), per block: what a longer key
    // loop saves of the accumulators' loads, stores and drains around P·V, and of a call's fixed work.
    for (int which = 0; which < 2; which++) {
        pass p = make_pass(which ? 512 : 4, 0);
        const char *where = which ? "512 blocks, 16 MB: from the L3" : "4 blocks, 128 KB: in the L2";
        for (long perCall = 2; perCall <= 4; perCall *= 2) {
            for (int mode = 0; mode < 3; mode++) {
                double ns = ns_per_visit(&p, k, mode, which ? 4096 : 8192, perCall);
                printf("  %ld blocks a call, per block: %s (%s): %.0f ns, %.0f cycles, %.0f GFLOP/s\n", perCall,
                       modes[mode], where, ns, ns * ghz, flops / ns);
            }
        }
    }
    k.release();
}

// ---- int8's scores on AMX-INT8 tiles (TDPBSSD) against the same set's vector kernels (vpdpwssd).

/// `trials` random shapes (D 1–200, 1–100 keys, 64 or 128 lanes, lane and key scales, the K mean, row maxima
/// under way): `tiles` and `vectors` must give the same bits (the same integer sums, the same float
/// arithmetic). Returns the number of trials that differed.
static long check_int8_tiles(sparge_int8_scores_fn tiles, sparge_int8_scores_fn vectors, long trials,
                             unsigned long long seed) {
    rng g = {seed};
    long failures = 0;
    for (long t = 0; t < trials; t++) {
        long lanes = 64 * (1 + pick(&g, 2)), stride = lanes + 16, dim = 1 + pick(&g, 200), keys = 1 + pick(&g, 100);
        long pairs = (dim + 1) / 2;
        int *q = calloc(pairs * stride, 4), *k = calloc(keys * pairs, 4);
        for (long j = 0; j < pairs; j++)
            for (long r = 0; r < lanes; r++) {
                int lo = (int)pick(&g, 255) - 127, hi = 2 * j + 1 < dim ? (int)pick(&g, 255) - 127 : 0;
                q[j * stride + r] = (int)((unsigned)(unsigned short)lo | (unsigned)(unsigned short)hi << 16);
            }
        for (long c = 0; c < keys; c++)
            for (long j = 0; j < pairs; j++) {
                int lo = (int)pick(&g, 255) - 127, hi = 2 * j + 1 < dim ? (int)pick(&g, 255) - 127 : 0;
                k[c * pairs + j] = (int)((unsigned)(unsigned short)lo | (unsigned)(unsigned short)hi << 16);
            }
        float *laneScale = malloc(4 * lanes), *mean = calloc(2 * pairs, 4), keyScale = (float)(0.001 + 0.1 * uniform(&g));
        for (long r = 0; r < lanes; r++) laneScale[r] = (float)(1e-4 + 1e-2 * uniform(&g));
        for (long i = 0; i < dim; i++) mean[i] = (float)(uniform(&g) * 4 - 2);
        float *s[2], *m[2];
        for (int w = 0; w < 2; w++) {
            s[w] = malloc(4 * keys * stride), m[w] = malloc(4 * lanes);
            for (long i = 0; i < keys * stride; i++) s[w][i] = NAN;
            rng same = {seed + (unsigned long long)t};
            for (long r = 0; r < lanes; r++) m[w][r] = pick(&same, 2) ? -INFINITY : (float)(uniform(&same) * 4 - 2);
            (w ? vectors : tiles)(q, stride, lanes, laneScale, k, pairs, keys, keyScale, mean, s[w], m[w], NULL, NULL, 0);
        }
        int bad = memcmp(m[0], m[1], 4 * lanes) != 0;
        for (long c = 0; c < keys; c++) bad |= memcmp(s[0] + c * stride, s[1] + c * stride, 4 * lanes) != 0;
        if (bad && ++failures <= 5) printf("  int8 tiles FAILED trial %ld: lanes %ld, D %ld, keys %ld\n", t, lanes, dim, keys);
        free(q), free(k), free(laneScale), free(mean);
        for (int w = 0; w < 2; w++) free(s[w]), free(m[w]);
    }
    return failures;
}

/// Nanoseconds per call of an int8 scores kernel on one 64-lane tile against 64 keys at D = 128 (L1-resident).
static double int8_scores_ns(sparge_int8_scores_fn kernel, long calls) {
    static int q[64 * 80], k[64 * 64];
    static float laneScale[64], mean[128], s[64 * 80], m[64];
    for (long i = 0; i < 64 * 80; i++) q[i] = 0x00050003;
    for (long i = 0; i < 64 * 64; i++) k[i] = 0x0002fffd;
    for (long i = 0; i < 64; i++) laneScale[i] = 0.01f, m[i] = -INFINITY;
    double t0 = now_ns();
    for (long i = 0; i < calls; i++) kernel(q, 80, 64, laneScale, k, 64, 64, 0.01f, mean, s, m, NULL, NULL, 0);
    return (now_ns() - t0) / calls;
}

int main(int argc, char **argv) {
    long trials = argc > 1 ? atol(argv[1]) : 300;
    unsigned long long seed = argc > 2 ? strtoull(argv[2], NULL, 10) : 0;
    if (!seed) {
        FILE *f = fopen("/dev/urandom", "rb");
        if (!f || fread(&seed, sizeof seed, 1, f) != 1) seed = 12345;
        if (f) fclose(f);
    }
    int isa = sparge_cpu_isa();
    const char *names[] = {"portable", "avx2", "avx512", "avx512bf16", "amx"};
    printf("amx-check: seed %llu, %ld trials, sparge_cpu_isa = %s\n", seed, trials, isa >= 0 && isa <= 4 ? names[isa] : "?");
    int failed = 0;
#if defined(__x86_64__)
    if (isa >= SPARGE_ISA_AVX2) {
        check emulated = {"emulated tiles (AVX2)", sparge_bf16_emulated(), trials, seed, 0, 0, 0, 0, 0, 0, 0};
        run_check(&emulated);
        failed |= report(&emulated);
        check dot = {"emulated dot products (AVX2)", sparge_bf16_dot_emulated(), trials, seed, 0, 0, 0, 0, 0, 0, 0};
        run_check(&dot);
        failed |= report(&dot);
    }
    if (isa >= SPARGE_ISA_AVX2) {
        long bad = check_int8_tiles(sparge_int8_scores_amx_emulated(), sparge_kernels(SPARGE_ISA_AVX2).int8Scores, trials,
                                    seed + 4);
        printf("int8 scores on emulated TDPBSSD tiles against AVX2's vpmaddwd, %ld trials: %ld differing (must be 0): %s\n",
               trials, bad, bad ? "FAILED" : "passed");
        failed |= bad > 0;
    }
    if (isa >= SPARGE_ISA_AVX512_BF16) {
        check dot = {"avx512bf16 dot products", sparge_kernels(SPARGE_ISA_AVX512_BF16).bf16, trials, seed, 0, 0, 0, 0, 0, 0, 0};
        run_check(&dot);
        failed |= report(&dot);
    }
#endif
    if (isa != SPARGE_ISA_AMX) {
        printf("amx-check: this CPU (or its OS) offers no AMX; only the emulated kernels%s were checked\n",
               isa >= SPARGE_ISA_AVX512_BF16 ? " and AVX512-BF16's" : "");
        return failed ? 1 : 2;
    }
    sparge_tile_kernels amx = sparge_kernels(SPARGE_ISA_AMX);
    if (!amx.bf16.scores || !amx.bf16.softmax || !amx.bf16.pv) {
        printf("amx-check: FAILED: the AMX set has no bf16 kernels\n");
        return 1;
    }
    // Two threads at once, each from a fresh thread (its own tile configuration), different seeds.
    check threads[2] = {{"amx thread 1", amx.bf16, trials, seed + 1, 0, 0, 0, 0, 0, 0, 0},
                        {"amx thread 2", amx.bf16, trials, seed + 2, 0, 0, 0, 0, 0, 0, 0}};
    pthread_t id[2];
    for (int i = 0; i < 2; i++) pthread_create(&id[i], NULL, run_check, &threads[i]);
    for (int i = 0; i < 2; i++) pthread_join(id[i], NULL);
    for (int i = 0; i < 2; i++) failed |= report(&threads[i]);
    rates(amx.bf16);
    sparge_tile_kernels vnni = sparge_kernels(SPARGE_ISA_AVX512_BF16);
    if (amx.int8Scores != vnni.int8Scores) {
        long bad = check_int8_tiles(amx.int8Scores, vnni.int8Scores, trials, seed + 3);
        printf("int8 scores on TDPBSSD tiles against vpdpwssd, %ld trials: %ld differing (must be 0): %s\n", trials, bad,
               bad ? "FAILED" : "passed");
        failed |= bad > 0;
        printf("int8 scores, 64 lanes × 64 keys at D = 128 on one core: %.0f ns on tiles, %.0f ns in vpdpwssd\n",
               int8_scores_ns(amx.int8Scores, 20000), int8_scores_ns(vnni.int8Scores, 20000));
        amx.bf16.release();
    } else {
        printf("int8 scores: this CPU has no AMX-INT8; the AMX set computes them with vpdpwssd\n");
    }
    printf("amx-check: %s\n", failed ? "FAILED" : "PASSED");
    return failed ? 1 : 0;
}
