// TopK's selection for the mask (MaskPredictor.selectBlocks): the keep-th smallest of a row's distinct 64-bit
// sort keys, found by quickselect with branch-free partitions. Integer comparisons only, so every clone
// selects the same key; the set of keys not above it is the set a full sort's first `keep` entries hold.
// A binary heap popped `keep` times did the same with a mispredicted branch at almost every comparison (the
// mask rows at 32K × 8 heads on 2 Zen 5 cores: 12.0 ms with the heap, 8.4 with this).
#include "CSpargeKernels.h"
#include "per_isa_clones.h"

static inline unsigned long long median_of_three(unsigned long long a, unsigned long long b, unsigned long long c) {
    unsigned long long low = a < b ? a : b, high = a < b ? b : a;
    return c < low ? low : (c > high ? high : c);
}

PER_ISA_CLONES unsigned long long sparge_select_smallest(const unsigned long long *keys,
                                                         unsigned long long *scratch, long count, long keep) {
    // Each round partitions from[0..<n] into one half of `scratch` and goes on in the side that holds the
    // wanted rank; the halves take turns, so `keys` is only read.
    const unsigned long long *from = keys;
    unsigned long long *to = scratch, *other = scratch + count;
    long n = count, k = keep - 1;  // k: the wanted key's rank among from[0..<n], from 0
    while (n > 16) {
        // The pivot is one of the keys and the median of three distinct ones: both sides get at least one.
        unsigned long long pivot = median_of_three(from[0], from[n / 2], from[n - 1]);
        long below = 0, above = n - 1;
        for (long i = 0; i < n; i++) {
            unsigned long long v = from[i];
            long less = v < pivot;
            to[below] = v;
            to[above] = v;
            below += less;
            above -= 1 - less;
        }
        // (Distinct keys always leave one below the pivot; equal keys would not, and then the rest is sorted.)
        const int stuck = below == 0;
        unsigned long long *next = other;
        other = to;
        if (k < below) {
            from = to;
            n = below;
        } else {
            from = to + below;
            n -= below;
            k -= below;
        }
        to = next;
        if (stuck) break;
    }
    // A few keys left: insertion sort in scratch (never in `keys`), then the k-th.
    for (long i = 0; i < n; i++) to[i] = from[i];
    for (long i = 1; i < n; i++) {
        unsigned long long v = to[i];
        long j = i - 1;
        while (j >= 0 && to[j] > v) {
            to[j + 1] = to[j];
            j--;
        }
        to[j + 1] = v;
    }
    return to[k];
}
