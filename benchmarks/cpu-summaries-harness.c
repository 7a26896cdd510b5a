// The mask's block summaries alone (Sources/CSpargeKernels/block_summaries.h), on T threads: how many
// nanoseconds a value costs with and without the self-similarity, at 1, 2, 4, 8 and 16 threads, over 67M
// floats (Q and K of N = 32768, 8 heads, D = 128: 8192 blocks of 64 rows). Built here, run on a machine without
// Swift (the device's Xeon):
//   clang -O2 -march=x86-64-v3 -static -I Sources/CSpargeKernels benchmarks/cpu-summaries-harness.c -o summaries -lpthread -lm
// (-march=x86-64-v4 for the AVX-512 code). Prints the best of three runs of each case.
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#define INLINE static inline __attribute__((always_inline))
#define KERNEL(name) name
#include "block_summaries.h"

enum { ROWS = 64, DIM = 128, BLOCKS = 8192 };
static float *values;
static int threads, similarity;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void *summarize_share(void *first) {
    float mean[DIM] = {0}, out[DIM];
    double scratch[2 * DIM], kept = 0;
    for (long b = (long)first; b < BLOCKS; b += threads)
        kept += summarize_block(values + b * ROWS * DIM, ROWS, DIM, mean, out, scratch, similarity);
    return (void *)(long)(kept == 1.5);
}

int main(void) {
    const long count = (long)BLOCKS * ROWS * DIM;
    values = malloc(sizeof(float) * count);
    for (long i = 0; i < count; i++) values[i] = (float)(i % 977) * 0.001f - 0.4f;
    const int counts[] = {1, 2, 4, 8, 16};
    for (int k = 0; k < 5; k++) {
        threads = counts[k];
        for (similarity = 1; similarity >= 0; similarity--) {
            double best = 1e9;
            for (int round = 0; round < 3; round++) {
                pthread_t workers[16];
                double start = now();
                for (long i = 0; i < threads; i++) pthread_create(&workers[i], 0, summarize_share, (void *)i);
                for (int i = 0; i < threads; i++) pthread_join(workers[i], 0);
                const double seconds = now() - start;
                if (seconds < best) best = seconds;
            }
            printf("%2d threads, similarity %d: %.4f s, %.3f ns per value per thread\n", threads, similarity, best,
                   best * threads / count * 1e9);
        }
    }
    return 0;
}
