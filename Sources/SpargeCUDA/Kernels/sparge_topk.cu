// sparge_topk.cu: TopK's selection for rows too long for sparge_select_rows_sorted; appended to sparge_mask.cu
// (it uses sparge_exp and sparge_mask_f4 from there). See MaskKernelSource (SpargeCUDA) for the whole set.
//
// The selection is the CPU's: per row the Float softmax (max, exps, their serial Float sum in index order,
// p = e·(1/sum)), then the first k blocks by the rank key (~bits(p), j) — descending p, ascending index on
// ties, the blocks of p = 0 in index order last. Two kernels split it where its parallelism differs:
// - sparge_softmax_rows, a thread per row: the max, the exps and their serial sum (one thread owns the
//   CPU's serial sum; 32 rows a warp keep the loads coalesced and the FP64 pipe busy);
// - sparge_topk_rows, a thread block per row: a radix select of the k-th smallest 32-bit key T = ~bits(p)
//   (three digit passes over the row, 11, 11 and 10 bits, each a histogram in shared memory), then every
//   block whose key is below T, and of those whose key equals T the lowest indices until k.
// Its cost does not grow with k (the heap popped k times, each pop a walk down a heap in global memory).
//
// Scores come in octets (sparge_scores with octets = 1): key block j of the launch's item t at
// scores[((j >> 3) * items + t) * 8 + (j & 7)], so that a thread per row reads 32 bytes a step (a warp's 32
// rows 1 KiB together) and a thread block per row reads whole 32-byte sectors. Only the blocks below a row's
// causal limit are read: past it every score is −∞, an exp of 0 that changes no sum (the sum is never −0)
// and a probability of 0.

// A float4 of an octet: half h (0 or 1) of octet g of item t.
__device__ __forceinline__ long long sparge_octet_quad(long long items, long long t, long long g, int h) {
    return ((g * items + t) * 8 + 4 * h) / 4;
}

__device__ __forceinline__ float sparge_quad_lane(sparge_mask_f4 q, int i) {
    return i == 0 ? q.a : i == 1 ? q.b : i == 2 ? q.c : q.d;
}

// One thread per item: writes the exps over the scores (the blocks below the limit only) and 1/sum to
// inverses[t] — 0 for a row with no finite score, which selects nothing (as sparge_select_row returns).
extern "C" __global__ void sparge_softmax_rows(
    const int* limits, int rowsPerHead, long long firstItem, int items, float* scores, float* inverses)
{
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= items) return;
    const int limit = limits[(firstItem + t) % rowsPerHead];
    const float negInf = __int_as_float(0xff800000);
    sparge_mask_f4* quads = (sparge_mask_f4*)scores;
    const int octets = (limit + 7) / 8;
    float mx = negInf;
#pragma unroll 4
    for (int g = 0; g < octets; ++g) {  // (unrolled: four octets' loads in flight a thread)
        sparge_mask_f4 lo = quads[sparge_octet_quad(items, t, g, 0)], hi = quads[sparge_octet_quad(items, t, g, 1)];
        const int n = min(8, limit - 8 * g);
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            float v = sparge_quad_lane(i < 4 ? lo : hi, i & 3);
            if (i < n && v > mx) mx = v;
        }
    }
    if (!(mx > negInf)) { inverses[t] = 0.0f; return; }
    float sum = 0.0f;
    for (int g = 0; g < octets; ++g) {
        long long at = sparge_octet_quad(items, t, g, 0);
        sparge_mask_f4 q[2] = {quads[at], quads[at + 1]};
        // A score of −∞ gives exp(−∞) = 0, the 0 that sparge_select_row puts there.
        float x[8], e[8];
#pragma unroll
        for (int i = 0; i < 8; ++i) x[i] = __fsub_rn(sparge_quad_lane(q[i / 4], i & 3), mx);
        sparge_exp_n<8>(x, e);
        const int n = min(8, limit - 8 * g);
#pragma unroll
        for (int i = 0; i < 8; ++i) if (i < n) sum = __fadd_rn(sum, e[i]);
        sparge_mask_f4 lo = {e[0], e[1], e[2], e[3]}, hi = {e[4], e[5], e[6], e[7]};
        quads[at] = lo;
        quads[at + 1] = hi;
    }
    inverses[t] = __fdiv_rn(1.0f, sum);
}

#define TOPK_BINS 2048  // an 11-bit digit
struct __align__(16) sparge_topk_u4 { unsigned a, b, c, d; };

// The rank key's high word: ~bits(p), p = RN(e·inv) as the CPU forms it (p ≥ 0, so its bits order like p).
__device__ __forceinline__ unsigned sparge_topk_key(float e, float inv) {
    return ~__float_as_uint(__fmul_rn(e, inv));
}

// Block j's key: from shared memory when the row is cached there, else from its exp in global memory.
__device__ __forceinline__ unsigned sparge_topk_key_at(
    const unsigned* keys, bool cached, const float* exps, long long items, long long t, int j, float inv)
{
    if (cached) return keys[j];
    return sparge_topk_key(exps[(((long long)(j >> 3)) * items + t) * 8 + (j & 7)], inv);
}

// The exclusive prefix sum of `value` over the block's threads in thread order (Hillis–Steele in `scan`,
// two buffers of blockDim.x). Every thread calls it; it ends with the buffers free again.
__device__ unsigned sparge_block_exclusive_scan(unsigned value, unsigned* scan) {
    const int n = blockDim.x, i = threadIdx.x;
    unsigned* from = scan;
    unsigned* to = scan + n;
    from[i] = value;
    __syncthreads();
    for (int offset = 1; offset < n; offset *= 2) {
        to[i] = from[i] + (i >= offset ? from[i - offset] : 0u);
        __syncthreads();
        unsigned* swap = from; from = to; to = swap;
    }
    unsigned inclusive = from[i];
    __syncthreads();
    return inclusive - value;
}

// The bin where the keys counted in `bins` reach the need-th (1 ≤ need ≤ their total): found[0] = the bin,
// found[1] = the keys in lower bins, found[2] = the keys in it. Each thread sums a run of bins; the thread
// whose run holds the crossing walks it. Every thread calls it; found is read after its barrier.
__device__ void sparge_topk_crossing(const unsigned* bins, unsigned need, unsigned* scan, unsigned* found) {
    const int per = (TOPK_BINS + blockDim.x - 1) / blockDim.x;
    const int lo = min(TOPK_BINS, (int)threadIdx.x * per), hi = min(TOPK_BINS, lo + per);
    unsigned run = 0;
    for (int b = lo; b < hi; ++b) run += bins[b];
    unsigned before = sparge_block_exclusive_scan(run, scan);
    if (before < need && need <= before + run) {
        for (int b = lo; b < hi; ++b) {
            if (need <= before + bins[b]) { found[0] = b; found[1] = before; found[2] = bins[b]; break; }
            before += bins[b];
        }
    }
    __syncthreads();
}

// One thread block per item: its TopK bits (zeroed before) from the exps and 1/sum of sparge_softmax_rows.
// Shared memory (dynamic): the row's keys when its limit is at most cachedKeys (a multiple of 4; else each
// pass reads the exps again from global memory), then the bins, the scan's two buffers and three words.
//
// The k-th smallest key T is found a digit at a time: each pass counts, per digit value, the keys that match
// the digits found so far, and takes the bin where the count reaches what is still needed. The blocks past
// the limit are keys 0xffffffff that are counted, not read. Then the selection: every key below T, and of the
// `need` keys equal to T wanted, the lowest indices — in a row's blocks below the limit, each thread walking
// a contiguous run (odd-sized, so that the runs start in distinct shared-memory banks) and knowing from a
// prefix count how many equal keys lie before its run; then, for T = 0xffffffff, the blocks past the limit
// in index order.
extern "C" __global__ void sparge_topk_rows(
    const int* limits, int rowsPerHead, int keyBlocks, long long firstItem, int items, int keepCount,
    const float* exps, const float* inverses, int cachedKeys, unsigned char* bits)
{
    extern __shared__ __align__(16) unsigned char sparge_select_smem[];
    unsigned* keys = (unsigned*)sparge_select_smem;
    unsigned* bins = keys + cachedKeys;
    unsigned* scan = bins + TOPK_BINS;
    unsigned* found = scan + 2 * blockDim.x;
    const int t = blockIdx.x, nk = keyBlocks, threads = blockDim.x;
    const long long item = firstItem + t;
    const float inv = inverses[t];
    if (!(inv > 0.0f) || keepCount <= 0) return;  // the whole block: a row with no finite score
    const int limit = limits[item % rowsPerHead], tail = nk - limit;
    const unsigned need0 = (unsigned)min(keepCount, nk), maxKey = 0xffffffffu;
    const bool cached = limit <= cachedKeys;
    unsigned char* out = bits + item * nk;

    // Digit 1 (key bits 31…21), counted while the keys are formed (and cached).
    for (int b = threadIdx.x; b < TOPK_BINS; b += threads) bins[b] = 0;
    __syncthreads();
    const sparge_mask_f4* quads = (const sparge_mask_f4*)exps;
    for (int f = threadIdx.x; 4 * f < limit; f += threads) {
        sparge_mask_f4 e = quads[sparge_octet_quad(items, t, f >> 1, f & 1)];
        unsigned k4[4] = {sparge_topk_key(e.a, inv), sparge_topk_key(e.b, inv), sparge_topk_key(e.c, inv),
                          sparge_topk_key(e.d, inv)};
        for (int i = 0; i < 4 && 4 * f + i < limit; ++i) atomicAdd(&bins[k4[i] >> 21], 1u);
        if (cached) *(sparge_topk_u4*)(keys + 4 * f) = sparge_topk_u4{k4[0], k4[1], k4[2], k4[3]};
    }
    if (threadIdx.x == 0 && tail > 0) atomicAdd(&bins[maxKey >> 21], (unsigned)tail);
    __syncthreads();
    sparge_topk_crossing(bins, need0, scan, found);
    const unsigned digit1 = found[0], need1 = need0 - found[1];

    // Digits 2 (bits 20…10) and 3 (bits 9…0), among the keys that match the digits above.
    unsigned prefix = digit1, need = need1;
    for (int pass = 0; pass < 2; ++pass) {
        const int shift = pass == 0 ? 10 : 0, width = pass == 0 ? 11 : 10;
        for (int b = threadIdx.x; b < TOPK_BINS; b += threads) bins[b] = 0;
        __syncthreads();
        for (int j = threadIdx.x; j < limit; j += threads) {
            unsigned key = sparge_topk_key_at(keys, cached, exps, items, t, j, inv);
            if ((key >> (shift + width)) == prefix) atomicAdd(&bins[(key >> shift) & ((1u << width) - 1)], 1u);
        }
        if (threadIdx.x == 0 && tail > 0 && (maxKey >> (shift + width)) == prefix) {
            atomicAdd(&bins[(maxKey >> shift) & ((1u << width) - 1)], (unsigned)tail);
        }
        __syncthreads();
        sparge_topk_crossing(bins, need, scan, found);
        prefix = (prefix << width) | found[0];
        need -= found[1];
    }
    const unsigned threshold = prefix, equal = found[2];  // T; the keys equal to it, past the limit included

    // Of the `need` keys equal to T wanted: `quota` below the limit, the rest past it (T = 0xffffffff).
    const unsigned equalBelow = equal - (threshold == maxKey ? (unsigned)tail : 0u);
    const unsigned quota = min(need, equalBelow), pastLimit = need - quota;
    const bool ordered = quota < equalBelow;  // then only the first `quota` equal keys in index order
    const int run = ((limit + threads - 1) / threads) | 1;
    const int j0 = min(limit, (int)threadIdx.x * run), j1 = min(limit, j0 + run);
    unsigned equalInRun = 0;
    for (int j = j0; j < j1; ++j) {
        unsigned key = sparge_topk_key_at(keys, cached, exps, items, t, j, inv);
        if (key < threshold || (key == threshold && !ordered)) out[j] = 1;
        else if (key == threshold) ++equalInRun;
    }
    if (ordered) {
        unsigned rank = sparge_block_exclusive_scan(equalInRun, scan);
        for (int j = j0; j < j1 && rank < quota; ++j) {
            if (sparge_topk_key_at(keys, cached, exps, items, t, j, inv) == threshold) {
                out[j] = 1;
                ++rank;
            }
        }
    }
    for (int j = limit + threadIdx.x; j < limit + (int)pastLimit; j += threads) out[j] = 1;
}
