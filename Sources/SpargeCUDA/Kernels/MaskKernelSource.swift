/// CUDA C++ source of the mask-prediction kernels (DESIGN.md §1, steps 2–6), compiled by NVRTC.
///
/// The mask a GPU predicts must be the CPU's bit for bit, so these kernels repeat the CPU's arithmetic
/// operation for operation (`BlockSummaries.summarizeBlock`, `MaskPredictor.predictRows`,
/// `PortableExp.exp`): the same operations in the same order, every rounding written out (`__dadd_rn`,
/// `__dmul_rn`, … are never contracted into a fused multiply-add; `fma` is used exactly where the CPU's SIMD
/// `addProduct` fuses). That is why each thread owns one whole serial sum of the CPU's and walks it in the
/// CPU's order, and parallelism comes only from running many such sums at once.
///
/// - Summaries in three passes: `sparge_row_norms` (thread per row: four partial sums of squares, as the
///   CPU), `sparge_block_sums` (thread per block and dimension: the column sum for the mean, and
///   `Σ x_r/‖x_r‖`), `sparge_block_flags` (thread per block: `‖Σ x_r/‖x_r‖‖²/n² > θ`).
/// - `sparge_select_rows`: one thread per (head, mask row), its query mean in registers: the compressed
///   scores (Double dots with the CPU's sixteen accumulators), the Float softmax, and the TopCdf/TopK
///   selection from a min-heap of `(~bits(p) << 32) | j` keys kept in a scratch array interleaved across
///   threads.
/// - `sparge_mask_rules`: one thread block per mask row: the force-on rules in the CPU's order.
///
/// The source also compiles as plain C++ with a small prelude that stands in for the CUDA built-ins; the
/// test suite runs it that way on the host (no GPU needed) and compares with the CPU, bit for bit.
enum MaskKernelSource {
    static let program = "sparge_mask.cu"

    /// Needs `HEAD_DIM` defined (the row selection keeps a query mean of `HEAD_DIM` Floats in registers).
    static let source = #"""
typedef unsigned long long u64;

// e^x, exactly as PortableExp.exp: Cody-Waite reduction, degree-13 Taylor by Horner, times 2^k, one rounding.
__device__ __forceinline__ float sparge_exp(float x) {
    if (x != x) return x;
    if (x < -104.0f) return 0.0f;
    if (x > 89.0f) return __int_as_float(0x7f800000);
    double xd = (double)x;
    double k = rint(__dmul_rn(xd, 1.4426950408889634));
    double r = __dsub_rn(__dsub_rn(xd, __dmul_rn(k, 0.6931471803691238)), __dmul_rn(k, 1.9082149292705877e-10));
    double p = 1.6059043836821613e-10;
    p = __dadd_rn(__dmul_rn(p, r), 2.08767569878681e-09);
    p = __dadd_rn(__dmul_rn(p, r), 2.505210838544172e-08);
    p = __dadd_rn(__dmul_rn(p, r), 2.755731922398589e-07);
    p = __dadd_rn(__dmul_rn(p, r), 2.7557319223985893e-06);
    p = __dadd_rn(__dmul_rn(p, r), 2.48015873015873e-05);
    p = __dadd_rn(__dmul_rn(p, r), 0.0001984126984126984);
    p = __dadd_rn(__dmul_rn(p, r), 0.001388888888888889);
    p = __dadd_rn(__dmul_rn(p, r), 0.008333333333333333);
    p = __dadd_rn(__dmul_rn(p, r), 0.041666666666666664);
    p = __dadd_rn(__dmul_rn(p, r), 0.16666666666666666);
    p = __dadd_rn(__dmul_rn(p, r), 0.5);
    p = __dadd_rn(__dmul_rn(p, r), 1.0);
    p = __dadd_rn(__dmul_rn(p, r), 1.0);
    double twoToK = __longlong_as_double((long long)(1023 + (int)k) << 52);
    return __double2float_rn(__dmul_rn(p, twoToK));
}

// q̄·k̄ in Double as MaskPredictor.dotDouble: sixteen fused accumulators over runs of 16, the CPU's
// reduction tree, then a plain tail. `a` is the query held in registers (the loops unroll over HEAD_DIM),
// `b` a key mean already widened to Double.
__device__ __forceinline__ double sparge_dot(const float (&a)[HEAD_DIM], const double* b) {
    double acc[16];
#pragma unroll
    for (int l = 0; l < 16; ++l) acc[l] = 0.0;
#pragma unroll
    for (int j = 0; j + 16 <= HEAD_DIM; j += 16) {
#pragma unroll
        for (int l = 0; l < 16; ++l) acc[l] = fma((double)a[j + l], b[j + l], acc[l]);
    }
    double v[8];
#pragma unroll
    for (int l = 0; l < 8; ++l) v[l] = __dadd_rn(acc[l], acc[l + 8]);
    double t = __dadd_rn(__dadd_rn(__dadd_rn(v[0], v[1]), __dadd_rn(v[2], v[3])),
                         __dadd_rn(__dadd_rn(v[4], v[5]), __dadd_rn(v[6], v[7])));
#pragma unroll
    for (int j = HEAD_DIM / 16 * 16; j < HEAD_DIM; ++j) t = __dadd_rn(t, __dmul_rn((double)a[j], b[j]));
    return t;
}

// Summaries, in three passes so that every thread walks one of the CPU's serial sums in the CPU's order.
// x is one run of rows [heads][rows][HEAD_DIM]; mean [heads][HEAD_DIM] is subtracted in Float first.

// Pass 1, one thread per (head, row): the row's norm from four partial sums of squares, as the CPU.
extern "C" __global__ void sparge_row_norms(const float* x, int rows, int heads, const float* mean, double* norms)
{
    long long item = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (item >= (long long)heads * rows) return;
    const int d = HEAD_DIM;
    const float* xr = x + item * d;
    const float* m = mean + (item / rows) * d;
    double q0 = 0.0, q1 = 0.0, q2 = 0.0, q3 = 0.0;
    int j = 0;
    for (; j + 4 <= d; j += 4) {
        double a0 = (double)__fsub_rn(xr[j], m[j]), a1 = (double)__fsub_rn(xr[j + 1], m[j + 1]);
        double a2 = (double)__fsub_rn(xr[j + 2], m[j + 2]), a3 = (double)__fsub_rn(xr[j + 3], m[j + 3]);
        q0 = __dadd_rn(q0, __dmul_rn(a0, a0)); q1 = __dadd_rn(q1, __dmul_rn(a1, a1));
        q2 = __dadd_rn(q2, __dmul_rn(a2, a2)); q3 = __dadd_rn(q3, __dmul_rn(a3, a3));
    }
    for (; j < d; ++j) { double a = (double)__fsub_rn(xr[j], m[j]); q0 = __dadd_rn(q0, __dmul_rn(a, a)); }
    norms[item] = __dsqrt_rn(__dadd_rn(__dadd_rn(q0, q1), __dadd_rn(q2, q3)));
}

// Pass 2, one thread per (head, block, dimension): the column's Double sum over the block's rows (rounded
// once into the mean) and, for a whole block, the sum of x/‖x‖ over its rows with a non-zero norm.
extern "C" __global__ void sparge_block_sums(
    const float* x, int rows, int heads, int count, int blockSize, const float* mean, const double* norms,
    float* meansOut, double* directions)
{
    long long item = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const int d = HEAD_DIM;
    if (item >= (long long)heads * count * d) return;
    int j = (int)(item % d);
    long long block = item / d;
    int h = (int)(block / count), b = (int)(block % count);
    int r0 = b * blockSize;
    int n = min(rows, r0 + blockSize) - r0;
    float m = mean[(long long)h * d + j];
    double sum = 0.0, dir = 0.0;
    for (int r = 0; r < n; ++r) {
        long long row = (long long)h * rows + r0 + r;
        double a = (double)__fsub_rn(x[row * d + j], m);
        sum = __dadd_rn(sum, a);
        double norm = norms[row];
        if (n == blockSize && norm != 0.0) dir = __dadd_rn(dir, __ddiv_rn(a, norm));
    }
    meansOut[item] = __double2float_rn(__ddiv_rn(sum, (double)n));
    directions[item] = dir;
}

// Pass 3, one thread per (head, block): s = ‖Σ x/‖x‖‖² / n² and the flag s > theta (never for a partial
// block or one with a zero row: the CPU's NaN).
extern "C" __global__ void sparge_block_flags(
    int rows, int heads, int count, int blockSize, const double* norms, const double* directions, double theta,
    unsigned char* flagsOut)
{
    long long block = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (block >= (long long)heads * count) return;
    const int d = HEAD_DIM;
    int h = (int)(block / count), b = (int)(block % count);
    int r0 = b * blockSize;
    int n = min(rows, r0 + blockSize) - r0;
    unsigned char flag = 0;
    bool zeroRow = false;
    for (int r = 0; r < n; ++r) zeroRow = zeroRow || norms[(long long)h * rows + r0 + r] == 0.0;
    if (n == blockSize && !zeroRow) {
        const double* dir = directions + block * d;
        double q = 0.0;
        for (int j = 0; j < d; ++j) q = __dadd_rn(q, __dmul_rn(dir[j], dir[j]));
        double norm = __dsqrt_rn(q);
        double nd = (double)n;
        flag = __ddiv_rn(__dmul_rn(norm, norm), __dmul_rn(nd, nd)) > theta ? 1 : 0;
    }
    flagsOut[block] = flag;
}

// Min-heap over keys[i * stride], i < count (the CPU's MinHeap; any correct heap pops the same keys).
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

// One thread per (head, mask row) item in [firstItem, firstItem + items): scores against every key block,
// Float softmax, TopCdf (mode 1) or TopK (mode 2) into bits (zeroed before); mode 0 (dense) sets 0..<limit.
// queryMeans [Hq][rowsPerHead][D], keyMeans [Hkv][nk][D] widened to Double, keyFlags [Hkv][nk], limits [rowsPerHead].
// scratch holds nk keys per item of the launch, interleaved: key j of launch thread t at scratch[j*items + t].
extern "C" __global__ void sparge_select_rows(
    const float* queryMeans, const double* keyMeans, const unsigned char* keyFlags, const int* limits,
    int rowsPerHead, int keyBlocks, int group, long long firstItem, int items, int mode, float tau,
    int keepCount, float scale, u64* scratch, unsigned char* bits)
{
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= items) return;
    const int d = HEAD_DIM;
    const int nk = keyBlocks;
    long long item = firstItem + t;
    int h = (int)(item / rowsPerHead), row = (int)(item % rowsPerHead), g = h / group;
    int limit = limits[row];
    unsigned char* out = bits + item * nk;
    if (mode == 0) { for (int j = 0; j < limit; ++j) out[j] = 1; return; }
    u64* keys = scratch + t;
    const long long stride = items;
    float q[HEAD_DIM];
#pragma unroll
    for (int i = 0; i < HEAD_DIM; ++i) q[i] = queryMeans[item * d + i];
    const float negInf = __int_as_float(0xff800000);
    float mx = negInf;
    for (int j = 0; j < nk; ++j) {
        float s = negInf;
        if (j < limit && keyFlags[(long long)g * nk + j] != 0) {
            s = __fmul_rn(__double2float_rn(sparge_dot(q, keyMeans + ((long long)g * nk + j) * d)), scale);
        }
        keys[(long long)j * stride] = (u64)__float_as_uint(s);
        if (s > mx) mx = s;
    }
    if (!(mx > negInf)) return;
    float sum = 0.0f;
    for (int j = 0; j < nk; ++j) {
        float s = __uint_as_float((unsigned)keys[(long long)j * stride]);
        float e = s == negInf ? 0.0f : sparge_exp(__fsub_rn(s, mx));
        keys[(long long)j * stride] = (u64)__float_as_uint(e);
        sum = __fadd_rn(sum, e);
    }
    float inv = __fdiv_rn(1.0f, sum);
    for (int j = 0; j < nk; ++j) {
        float p = __fmul_rn(__uint_as_float((unsigned)keys[(long long)j * stride]), inv);
        keys[(long long)j * stride] = ((u64)(~__float_as_uint(p)) << 32) | (u64)j;
    }
    int count = nk;
    for (int i = count / 2 - 1; i >= 0; --i) sparge_sift_down(keys, stride, count, i);
    if (mode == 1) {
        double c = 0.0;
        int kept = 0;
        while (count > 0) {
            u64 key = sparge_pop_min(keys, stride, &count);
            c = __dadd_rn(c, (double)__uint_as_float(~(unsigned)(key >> 32)));
            float cf = __double2float_rn(c);
            if (!(cf <= tau) && kept > 0) break;
            out[key & 0xffffffffULL] = 1;
            kept += 1;
            if (cf > tau) break;
        }
    } else {
        int keep = min(keepCount, nk);
        for (int i = 0; i < keep; ++i) out[sparge_pop_min(keys, stride, &count) & 0xffffffffULL] = 1;
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
"""#
}
