// sparge_mask.cu: compiled at run time by NVRTC; see MaskKernelSource (SpargeCUDA) for what it holds.
typedef unsigned long long u64;

// e^x of N values (y[i] = e^x[i]), each exactly as PortableExp.exp: Cody-Waite reduction, degree-13 Taylor by
// Horner, times 2^k, one rounding. The N chains are written step by step side by side and without a branch
// (the polynomial runs on x clamped to the range where it is used, which is x itself there; NaN and the ends
// are selected after), so that a thread's independent exps overlap: one chain is ~30 dependent FP64
// operations, which ptxas otherwise issues one exp after another.
template <int N> __device__ __forceinline__ void sparge_exp_n(const float* x, float* y) {
    const double taylor[13] = {2.08767569878681e-09, 2.505210838544172e-08, 2.755731922398589e-07,
                               2.7557319223985893e-06, 2.48015873015873e-05, 0.0001984126984126984,
                               0.001388888888888889, 0.008333333333333333, 0.041666666666666664,
                               0.16666666666666666, 0.5, 1.0, 1.0};
    double k[N], r[N], p[N];
#pragma unroll
    for (int i = 0; i < N; ++i) {
        double xd = (double)fminf(fmaxf(x[i], -104.0f), 89.0f);
        k[i] = rint(__dmul_rn(xd, 1.4426950408889634));
        r[i] = __dsub_rn(__dsub_rn(xd, __dmul_rn(k[i], 0.6931471803691238)), __dmul_rn(k[i], 1.9082149292705877e-10));
        p[i] = 1.6059043836821613e-10;
    }
#pragma unroll
    for (int c = 0; c < 13; ++c) {
#pragma unroll
        for (int i = 0; i < N; ++i) p[i] = __dadd_rn(__dmul_rn(p[i], r[i]), taylor[c]);
    }
#pragma unroll
    for (int i = 0; i < N; ++i) {
        double twoToK = __longlong_as_double((long long)(1023 + (int)k[i]) << 52);
        float e = __double2float_rn(__dmul_rn(p[i], twoToK));
        y[i] = x[i] != x[i] ? x[i] : x[i] < -104.0f ? 0.0f : x[i] > 89.0f ? __int_as_float(0x7f800000) : e;
    }
}

__device__ __forceinline__ float sparge_exp(float x) {
    float y;
    sparge_exp_n<1>(&x, &y);
    return y;
}

struct __align__(16) sparge_mask_f4 { float a, b, c, d; };
struct __align__(16) sparge_mask_d2 { double x, y; };

// Query means as quads: dimension d of item t at quads[((d / 4) * items + t) * 4 + d % 4], so that a thread
// reads four dimensions in one 16-byte load and a warp's 32 items lie in 512 neighbouring bytes.
__device__ __forceinline__ long long sparge_quad_index(long long items, long long t, int d) {
    return ((long long)(d >> 2) * items + t) * 4 + (d & 3);
}

// q̄·k̄ in Double as MaskPredictor.dotDouble: sixteen fused accumulators over runs of 16, the CPU's
// reduction tree, then a plain tail. The query is item t of `quads` (above); b is a key mean widened to
// Double. Four query values come in one load and (for an even HEAD_DIM) two key values in one: a load per
// multiply-add of each had kept the kernel waiting on L1 for three quarters of its time.
__device__ __forceinline__ double sparge_dot(const float* quads, long long items, long long t, const double* b) {
    double acc[16];
#pragma unroll
    for (int l = 0; l < 16; ++l) acc[l] = 0.0;
    for (int j = 0; j + 16 <= HEAD_DIM; j += 16) {
#pragma unroll
        for (int q = 0; q < 4; ++q) {
            const int i = j + 4 * q;
            sparge_mask_f4 x = *(const sparge_mask_f4*)(quads + sparge_quad_index(items, t, i));
            double b0, b1, b2, b3;
            if (HEAD_DIM % 2 == 0) {
                sparge_mask_d2 lo = *(const sparge_mask_d2*)(b + i), hi = *(const sparge_mask_d2*)(b + i + 2);
                b0 = lo.x; b1 = lo.y; b2 = hi.x; b3 = hi.y;
            } else {
                b0 = b[i]; b1 = b[i + 1]; b2 = b[i + 2]; b3 = b[i + 3];
            }
            acc[4 * q] = fma((double)x.a, b0, acc[4 * q]);
            acc[4 * q + 1] = fma((double)x.b, b1, acc[4 * q + 1]);
            acc[4 * q + 2] = fma((double)x.c, b2, acc[4 * q + 2]);
            acc[4 * q + 3] = fma((double)x.d, b3, acc[4 * q + 3]);
        }
    }
    double v[8];
#pragma unroll
    for (int l = 0; l < 8; ++l) v[l] = __dadd_rn(acc[l], acc[l + 8]);
    double r = __dadd_rn(__dadd_rn(__dadd_rn(v[0], v[1]), __dadd_rn(v[2], v[3])),
                         __dadd_rn(__dadd_rn(v[4], v[5]), __dadd_rn(v[6], v[7])));
    for (int j = HEAD_DIM / 16 * 16; j < HEAD_DIM; ++j)
        r = __dadd_rn(r, __dmul_rn((double)quads[sparge_quad_index(items, t, j)], b[j]));
    return r;
}

// Summaries, one thread block per (head, block): the block's rows pass through shared memory in chunks of
// SUMMARY_CHUNK rows (as x − mean in Float, read from global memory once and coalesced); per chunk a thread per
// row forms the row's norm from four partial sums of squares (as the CPU), then a thread per dimension
// continues the column's Double sum (for the mean) and Σ x_r·RN(1/‖x_r‖) in row order; at the end one thread
// forms ‖Σ x_r·RN(1/‖x_r‖)‖²/n² > θ. x (rowsIn: f32, or bf16 with rowsInBF16)
// is one run of rows per head, row r of head h at x[h * headStride + r * HEAD_DIM];
// mean [heads][HEAD_DIM]. Block b of head h goes to [h * outBlocks + b] of the outputs (several runs then
// fill one [heads][blocks] array side by side). Every sum is the CPU's serial sum in the CPU's order; the
// threads only split which sums they walk. (Three kernels with a thread per row, per column and per block
// did the same in 290 µs per 128 MB at 32K tokens, latency-bound on their scattered global reads.)
// Rows a chunk: the largest power of two (up to 256) whose padded rows fit 4160 floats (16.3 KiB), so that
// blocks of 64 or 128 rows are whole chunks and ten CTAs fit an SM. The kernel waits on shared memory and
// hides that with warps: with 32.5 KiB chunks shared memory allowed six CTAs (37.5% occupancy) and the
// kernel moved 1.55 TB/s.
#define SUMMARY_ROOM (4160 / (HEAD_DIM + 1))
#define SUMMARY_CHUNK (SUMMARY_ROOM >= 256 ? 256 : SUMMARY_ROOM >= 128 ? 128 : SUMMARY_ROOM >= 64 ? 64 \
    : SUMMARY_ROOM >= 32 ? 32 : SUMMARY_ROOM >= 16 ? 16 : 8)

// Four staged values (x − mean) of quad e of a chunk (row-major, HEAD_DIM a row) into the padded tile.
__device__ __forceinline__ void sparge_stage4(float* tile, int e, sparge_mask_f4 v, const float* m) {
    int r = (4 * e) / HEAD_DIM, j = (4 * e) % HEAD_DIM;
    float* t = tile + r * (HEAD_DIM + 1) + j;
    t[0] = __fsub_rn(v.a, m[j]); t[1] = __fsub_rn(v.b, m[j + 1]);
    t[2] = __fsub_rn(v.c, m[j + 2]); t[3] = __fsub_rn(v.d, m[j + 3]);
}

// Eight bf16 values (x − mean) of octet e of a chunk, widened as loaded (the same Floats a f32 copy would
// hold), into the padded tile: element 0 is the low half of the first word.
struct __align__(16) sparge_mask_u4 { unsigned a, b, c, d; };
__device__ __forceinline__ float sparge_bf16_lo(unsigned w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float sparge_bf16_hi(unsigned w) { return __uint_as_float(w & 0xffff0000u); }
__device__ __forceinline__ void sparge_stage8(float* tile, int e, sparge_mask_u4 v, const float* m) {
    sparge_mask_f4 lo = { sparge_bf16_lo(v.a), sparge_bf16_hi(v.a), sparge_bf16_lo(v.b), sparge_bf16_hi(v.b) };
    sparge_mask_f4 hi = { sparge_bf16_lo(v.c), sparge_bf16_hi(v.c), sparge_bf16_lo(v.d), sparge_bf16_hi(v.d) };
    sparge_stage4(tile, 2 * e, lo, m);
    sparge_stage4(tile, 2 * e + 1, hi, m);
}

extern "C" __global__ void sparge_summarize_blocks(
    const void* rowsIn, int rowsInBF16, long long headStride, int rows, int count, int blockSize, const float* mean,
    double theta, float* meansOut, unsigned char* flagsOut, int outBlocks)
{
    __shared__ float tile[SUMMARY_CHUNK * (HEAD_DIM + 1)];  // a padded row apart: no bank conflicts either way
    __shared__ double sums[HEAD_DIM], directions[HEAD_DIM], reciprocals[SUMMARY_CHUNK];
    __shared__ int zeroRow;
    const int d = HEAD_DIM, stride = HEAD_DIM + 1;
    int h = blockIdx.x / count, b = blockIdx.x % count;
    int r0 = b * blockSize, n = min(rows, r0 + blockSize) - r0;
    bool whole = n == blockSize;
    const float* m = mean + (long long)h * d;
    const long long firstElement = h * headStride + (long long)r0 * d;
    const float* xb = (const float*)rowsIn + firstElement;
    const unsigned short* xb16 = (const unsigned short*)rowsIn + firstElement;
    for (int j = threadIdx.x; j < d; j += blockDim.x) { sums[j] = 0.0; directions[j] = 0.0; }
    if (threadIdx.x == 0) zeroRow = 0;
    for (int c0 = 0; c0 < n; c0 += SUMMARY_CHUNK) {
        int cn = min(SUMMARY_CHUNK, n - c0);
        __syncthreads();  // the previous chunk is read
        const float* chunk = xb + (long long)c0 * d;
        const unsigned short* chunk16 = xb16 + (long long)c0 * d;
        if (rowsInBF16 && HEAD_DIM % 8 == 0 && ((u64)chunk16 & 15) == 0) {
            // bf16 rows (a model's tensors, read where they entered): 16-byte loads of eight, two in flight.
            const sparge_mask_u4* octet = (const sparge_mask_u4*)chunk16;
            const int octets = cn * (d / 8), step = blockDim.x;
            for (int e = threadIdx.x; e < octets; e += 2 * step) {
                sparge_mask_u4 v0 = octet[e], v1 = v0;
                if (e + step < octets) v1 = octet[e + step];
                sparge_stage8(tile, e, v0, m);
                if (e + step < octets) sparge_stage8(tile, e + step, v1, m);
            }
        } else if (rowsInBF16) {
            for (int e = threadIdx.x; e < cn * d; e += blockDim.x) {
                int r = e / d, j = e % d;
                tile[r * stride + j] = __fsub_rn(sparge_bf16_lo(chunk16[(long long)r * d + j]), m[j]);
            }
        } else if (HEAD_DIM % 4 == 0 && ((u64)chunk & 15) == 0) {
            // 16-byte loads, four in flight a thread before any is stored: the loads' latency, not their
            // bytes, bounded this loop.
            const sparge_mask_f4* quad = (const sparge_mask_f4*)chunk;
            const int quads = cn * (d / 4), step = blockDim.x;
            for (int e = threadIdx.x; e < quads; e += 4 * step) {
                sparge_mask_f4 v0 = quad[e], v1 = v0, v2 = v0, v3 = v0;
                if (e + step < quads) v1 = quad[e + step];
                if (e + 2 * step < quads) v2 = quad[e + 2 * step];
                if (e + 3 * step < quads) v3 = quad[e + 3 * step];
                sparge_stage4(tile, e, v0, m);
                if (e + step < quads) sparge_stage4(tile, e + step, v1, m);
                if (e + 2 * step < quads) sparge_stage4(tile, e + 2 * step, v2, m);
                if (e + 3 * step < quads) sparge_stage4(tile, e + 3 * step, v3, m);
            }
        } else {
            for (int e = threadIdx.x; e < cn * d; e += blockDim.x) {
                int r = e / d, j = e % d;
                tile[r * stride + j] = __fsub_rn(chunk[(long long)r * d + j], m[j]);
            }
        }
        __syncthreads();
        for (int r = threadIdx.x; r < cn; r += blockDim.x) {
            const float* a = tile + r * stride;
            double q0 = 0.0, q1 = 0.0, q2 = 0.0, q3 = 0.0;
            int j = 0;
            for (; j + 4 <= d; j += 4) {
                double a0 = (double)a[j], a1 = (double)a[j + 1], a2 = (double)a[j + 2], a3 = (double)a[j + 3];
                q0 = __dadd_rn(q0, __dmul_rn(a0, a0)); q1 = __dadd_rn(q1, __dmul_rn(a1, a1));
                q2 = __dadd_rn(q2, __dmul_rn(a2, a2)); q3 = __dadd_rn(q3, __dmul_rn(a3, a3));
            }
            for (; j < d; ++j) { double a0 = (double)a[j]; q0 = __dadd_rn(q0, __dmul_rn(a0, a0)); }
            double norm = __dsqrt_rn(__dadd_rn(__dadd_rn(q0, q1), __dadd_rn(q2, q3)));
            // RN(1/norm), as the CPU's 1.0 / norm; a zero row keeps 0 and marks the block.
            reciprocals[r] = norm != 0.0 ? __drcp_rn(norm) : 0.0;
            if (norm == 0.0) zeroRow = 1;
        }
        __syncthreads();
        for (int j = threadIdx.x; j < d; j += blockDim.x) {
            double sum = sums[j], direction = directions[j];
            for (int r = 0; r < cn; ++r) {
                double a = (double)tile[r * stride + j];
                sum = __dadd_rn(sum, a);
                // Every row, as the CPU: a zero row adds 0 · 0, a row of norm ∞ adds a · 0 (NaN where a is ∞).
                if (whole) direction = __dadd_rn(direction, __dmul_rn(a, reciprocals[r]));
            }
            sums[j] = sum;
            directions[j] = direction;
        }
    }
    __syncthreads();
    float* meanOut = meansOut + ((long long)h * outBlocks + b) * d;
    for (int j = threadIdx.x; j < d; j += blockDim.x) meanOut[j] = __double2float_rn(__ddiv_rn(sums[j], (double)n));
    if (threadIdx.x == 0) {
        // Never for a partial block or one with a zero row: the CPU's NaN.
        unsigned char flag = 0;
        if (whole && !zeroRow) {
            double q = 0.0;
            for (int j = 0; j < d; ++j) q = __dadd_rn(q, __dmul_rn(directions[j], directions[j]));
            double norm = __dsqrt_rn(q);
            double nd = (double)n;
            flag = __ddiv_rn(__dmul_rn(norm, norm), __dmul_rn(nd, nd)) > theta ? 1 : 0;
        }
        flagsOut[(long long)h * outBlocks + b] = flag;
    }
}

// Min-heap over keys[i * stride], i < count (the CPU's TopCdf pops its MinHeap; any correct heap pops the same
// keys).
__device__ __forceinline__ void sparge_sift_down(u64* keys, long long stride, int count, int start) {
    int i = start;
    u64 value = keys[(long long)i * stride];
    while (true) {
        int child = 2 * i + 1;
        if (child >= count) break;
        if (child + 1 < count && keys[(long long)(child + 1) * stride] < keys[(long long)child * stride]) child += 1;
        if (keys[(long long)child * stride] >= value) break;
        keys[(long long)i * stride] = keys[(long long)child * stride];
        i = child;
    }
    keys[(long long)i * stride] = value;
}

__device__ __forceinline__ u64 sparge_pop_min(u64* keys, long long stride, int* count) {
    u64 top = keys[0];
    *count -= 1;
    keys[0] = keys[(long long)(*count) * stride];
    if (*count > 0) sparge_sift_down(keys, stride, *count, 0);
    return top;
}

// Query means [items][HEAD_DIM] -> quads (sparge_quad_index; ⌈HEAD_DIM/4⌉·4·items floats, the padding of the
// last quad never read), one thread per value.
extern "C" __global__ void sparge_transpose(const float* in, long long items, float* out)
{
    long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= items * HEAD_DIM) return;
    out[sparge_quad_index(items, e / HEAD_DIM, (int)(e % HEAD_DIM))] = in[e];
}

// Compressed scores of the (head, mask row) items [firstItem, firstItem + items): one thread per (item, key
// block), a thread block covering 32 items × 8 key blocks (so a warp shares one key and reads 32 neighbouring
// query words). scores[j * items + t] = Float(q̄·k̄_j) · scale, or -inf outside the causal limit and for a
// key block that is not self-similar; with octets = 1 at scores[((j >> 3) * items + t) * 8 + (j & 7)] instead
// (sparge_topk.cu; a thread block's 8 key blocks fill each of its items' 32-byte octets). queryT: the query
// means as quads (sparge_quad_index) of allItems items, keyMeans [Hkv][nk][HEAD_DIM] in Double.
extern "C" __global__ void sparge_scores(
    const float* queryT, long long allItems, const double* keyMeans, const unsigned char* keyFlags,
    const int* limits, int rowsPerHead, int keyBlocks, int group, long long firstItem, int items, float scale,
    int octets, float* scores)
{
    int itemGroups = (items + 31) / 32;
    int t = (blockIdx.x % itemGroups) * 32 + (threadIdx.x % 32);
    int j = (blockIdx.x / itemGroups) * 8 + threadIdx.x / 32;
    if (t >= items || j >= keyBlocks) return;
    long long item = firstItem + t;
    int h = (int)(item / rowsPerHead), row = (int)(item % rowsPerHead), g = h / group;
    float s = __int_as_float(0xff800000);
    if (j < limits[row] && keyFlags[(long long)g * keyBlocks + j] != 0) {
        double dot = sparge_dot(queryT, allItems, item, keyMeans + ((long long)g * keyBlocks + j) * HEAD_DIM);
        s = __fmul_rn(__double2float_rn(dot), scale);
    }
    scores[octets ? ((long long)(j >> 3) * items + t) * 8 + (j & 7) : (long long)j * items + t] = s;
}

// The key that ranks block j after every block of higher probability and, on a tie, after lower indices.
__device__ __forceinline__ u64 sparge_rank_key(float p, int j) {
    return ((u64)(~__float_as_uint(p)) << 32) | (u64)j;
}

// One thread per item of the launch: the Float softmax of its scores (scores[j * items + t], overwritten with
// the probabilities), then TopCdf (mode 1) or TopK (mode 2) into bits (zeroed before); mode 0 (dense) sets
// 0..<limit. Blocks are taken in the CPU's order: descending probability, ascending index on ties — the
// positive ones from a min-heap of rank keys (keys[j * items + t]), then the zero ones in index order,
// which is where their keys rank them.
// The selection of one row: its scores at s[j * stride] (overwritten), its heap keys at heap[i * stride].
__device__ void sparge_select_row(
    const int* limits, int rowsPerHead, int nk, long long item, int mode, float tau, int keepCount, float* s,
    u64* heap, long long stride, unsigned char* bits)
{
    unsigned char* out = bits + item * nk;
    if (mode == 0) { int limit = limits[item % rowsPerHead]; for (int j = 0; j < limit; ++j) out[j] = 1; return; }
    const float negInf = __int_as_float(0xff800000);
    float mx = negInf;
    for (int j = 0; j < nk; ++j) { float v = s[(long long)j * stride]; if (v > mx) mx = v; }
    if (!(mx > negInf)) return;
    float sum = 0.0f;
    for (int j = 0; j < nk; ++j) {
        float v = s[(long long)j * stride];
        float e = v == negInf ? 0.0f : sparge_exp(__fsub_rn(v, mx));
        s[(long long)j * stride] = e;
        sum = __fadd_rn(sum, e);
    }
    float inv = __fdiv_rn(1.0f, sum);
    int count = 0;
    for (int j = 0; j < nk; ++j) {
        float p = __fmul_rn(s[(long long)j * stride], inv);
        s[(long long)j * stride] = p;
        if (p > 0.0f) heap[(long long)(count++) * stride] = sparge_rank_key(p, j);
    }
    for (int i = count / 2 - 1; i >= 0; --i) sparge_sift_down(heap, stride, count, i);
    int zeroCursor = 0;  // the next block of probability 0 to hand out once the heap is empty
    int take = mode == 1 ? nk : min(keepCount, nk);
    double c = 0.0;
    for (int taken = 0; taken < take; ++taken) {
        u64 key;
        if (count > 0) {
            key = sparge_pop_min(heap, stride, &count);
        } else {
            while (s[(long long)zeroCursor * stride] > 0.0f) ++zeroCursor;
            key = sparge_rank_key(0.0f, zeroCursor++);
        }
        if (mode == 1) {
            c = __dadd_rn(c, (double)__uint_as_float(~(unsigned)(key >> 32)));
            float cf = __double2float_rn(c);
            if (!(cf <= tau) && taken > 0) break;
            out[key & 0xffffffffULL] = 1;
            if (cf > tau) break;
        } else {
            out[key & 0xffffffffULL] = 1;
        }
    }
}

extern "C" __global__ void sparge_select_rows(
    const int* limits, int rowsPerHead, int keyBlocks, long long firstItem, int items, int mode, float tau,
    int keepCount, float* scores, u64* keys, unsigned char* bits)
{
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= items) return;
    sparge_select_row(limits, rowsPerHead, keyBlocks, firstItem + t, mode, tau, keepCount, scores + t, keys + t,
                      items, bits);
}

// The same selection with a thread block per row, for rows whose probabilities (4 bytes a key block) and
// sort keys (8 bytes, to the next power of two) fit shared memory: the threads share the max, the exps and
// the probabilities, sort every block's rank key at once (bitonic: any correct sort orders the same distinct
// keys the same way, as any heap pops them), and one thread walks TopCdf's Double sum in that order. The
// Float softmax sum stays one thread's serial sum in index order. (A thread per row left most of the GPU
// idle: 2048 rows took 244 µs.)
#define SELECT_THREADS 256
extern "C" __global__ void sparge_select_rows_sorted(
    const int* limits, int rowsPerHead, int keyBlocks, long long firstItem, int items, int mode, float tau,
    int keepCount, const float* scores, unsigned char* bits)
{
    extern __shared__ __align__(16) unsigned char sparge_select_smem[];
    __shared__ float shared[2], partialMax[SELECT_THREADS];
    const int nk = keyBlocks, t = blockIdx.x;
    int sorted = 1;
    while (sorted < nk) sorted *= 2;
    u64* keys = (u64*)sparge_select_smem;
    float* p = (float*)(keys + sorted);
    long long item = firstItem + t;
    unsigned char* out = bits + item * nk;
    if (mode == 0) {
        for (int j = threadIdx.x; j < limits[item % rowsPerHead]; j += blockDim.x) out[j] = 1;
        return;
    }
    const float negInf = __int_as_float(0xff800000);
    float mx = negInf;
    for (int j = threadIdx.x; j < nk; j += blockDim.x) {
        float v = scores[(long long)j * items + t];
        p[j] = v;
        if (v > mx) mx = v;
    }
    // The row's max (exact in any order): each thread's, then thread 0 over them.
    partialMax[threadIdx.x] = mx;
    __syncthreads();
    if (threadIdx.x == 0) {
        float m = negInf;
        for (int i = 0; i < blockDim.x; ++i) if (partialMax[i] > m) m = partialMax[i];
        shared[0] = m;
    }
    __syncthreads();
    mx = shared[0];
    if (!(mx > negInf)) return;
    for (int j = threadIdx.x; j < nk; j += blockDim.x) p[j] = p[j] == negInf ? 0.0f : sparge_exp(__fsub_rn(p[j], mx));
    __syncthreads();
    if (threadIdx.x == 0) {
        float sum = 0.0f;
        for (int j = 0; j < nk; ++j) sum = __fadd_rn(sum, p[j]);
        shared[1] = __fdiv_rn(1.0f, sum);
    }
    __syncthreads();
    float inv = shared[1];
    for (int j = threadIdx.x; j < sorted; j += blockDim.x) {
        keys[j] = j < nk ? sparge_rank_key(__fmul_rn(p[j], inv), j) : ~0ULL;
    }
    for (int size = 2; size <= sorted; size *= 2) {
        for (int stride = size / 2; stride > 0; stride /= 2) {
            __syncthreads();
            for (int i = threadIdx.x; i < sorted / 2; i += blockDim.x) {
                int lo = 2 * i - (i & (stride - 1)), hi = lo + stride;
                u64 a = keys[lo], b = keys[hi];
                if ((a > b) == ((lo & size) == 0)) { keys[lo] = b; keys[hi] = a; }
            }
        }
    }
    __syncthreads();
    if (mode == 2) {
        for (int i = threadIdx.x; i < min(keepCount, nk); i += blockDim.x) out[keys[i] & 0xffffffffULL] = 1;
        return;
    }
    if (threadIdx.x != 0) return;
    double c = 0.0;
    for (int taken = 0; taken < nk; ++taken) {
        u64 key = keys[taken];
        c = __dadd_rn(c, (double)__uint_as_float(~(unsigned)(key >> 32)));
        float cf = __double2float_rn(c);
        if (!(cf <= tau) && taken > 0) break;
        out[key & 0xffffffffULL] = 1;
        if (cf > tau) break;
    }
}

// One thread block per mask row of bits [Hq][rowsPerHead][nk], its threads striding over the key blocks:
// the force-on rules in the CPU's order.
extern "C" __global__ void sparge_mask_rules(
    unsigned char* bits, const unsigned char* keyFlags, const unsigned char* queryFlags, const int* limits,
    const int* diagonals, int heads, int rowsPerHead, int keyBlocks, int group, int causal, int sink,
    int keepDiagonal)
{
    long long item = blockIdx.x;
    if (item >= (long long)heads * rowsPerHead) return;
    int row = (int)(item % rowsPerHead), h = (int)(item / rowsPerHead);
    int limit = limits[row], diagonal = diagonals[row];
    bool rowForced = queryFlags[item] == 0;
    const unsigned char* flags = keyFlags + (long long)(h / group) * keyBlocks;
    unsigned char* out = bits + item * keyBlocks;
    for (int j = threadIdx.x; j < keyBlocks; j += blockDim.x) {
        unsigned char v = out[j];
        if (flags[j] == 0) v = 1;
        if (rowForced) v = 1;
        if (causal && j >= limit) v = 0;
        if (sink && j == 0) v = 1;
        if (causal && keepDiagonal && j >= diagonal && j < limit) v = 1;
        out[j] = v;
    }
}
