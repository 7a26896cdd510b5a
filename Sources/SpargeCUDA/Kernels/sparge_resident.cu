// sparge_resident.cu: compiled at run time by NVRTC; see ResidentKernelSource (SpargeCUDA) for what it holds.
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

__device__ __forceinline__ float half_to_float(u16 h) {
    u32 sign = (u32)(h & 0x8000) << 16, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
    if (exponent == 0x1f) return __uint_as_float(sign | 0x7f800000 | (mantissa << 13));
    if (exponent == 0) {
        // ±0 or a subnormal: mantissa · 2⁻²⁴, exact in Float.
        float m = (float)mantissa * 5.9604644775390625e-8f;
        return sign ? -m : m;
    }
    return __uint_as_float(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

__device__ __forceinline__ float load_element(const void* p, long long i, int type) {
    if (type == 0) return ((const float*)p)[i];
    u16 b = ((const u16*)p)[i];
    return type == 1 ? __uint_as_float((u32)b << 16) : half_to_float(b);
}

__device__ __forceinline__ u16 to_bf16(float x) {
    u32 u = __float_as_uint(x);
    if ((u & 0x7fffffff) > 0x7f800000) return (u16)((u >> 16) | 0x40);  // NaN stays NaN
    u += 0x7fff + ((u >> 16) & 1);
    return (u16)(u >> 16);
}

// Round to nearest even into fp16; sets *overflow when a finite value leaves fp16's range.
__device__ __forceinline__ u16 to_f16(float x, int* overflow) {
    u32 u = __float_as_uint(x);
    u16 sign = (u16)((u >> 16) & 0x8000);
    u32 a = u & 0x7fffffff;
    if (a > 0x7f800000) return sign | 0x7e00;                       // NaN
    if (a >= 0x477ff000) {                                           // rounds to ≥ 65520: ∞
        if (a < 0x7f800000) *overflow = 1;
        return sign | 0x7c00;
    }
    if (a < 0x38800000) {                                            // below 2⁻¹⁴: subnormal or zero
        // a · 2²⁴ rounded to an integer, to nearest even (exact in Float arithmetic below 2²⁴).
        return sign | (u16)__float2int_rn(__uint_as_float(a) * 16777216.0f);
    }
    u32 rounded = a + 0xfff + ((a >> 13) & 1);
    return sign | (u16)(((rounded >> 13) - (112 << 10)) & 0x7fff);
}

__device__ __forceinline__ void store_element(void* p, long long i, int type, float x, int* overflow) {
    if (type == 0) ((float*)p)[i] = x;
    else if (type == 1) ((u16*)p)[i] = to_bf16(x);
    else ((u16*)p)[i] = to_f16(x, overflow);
}

// Four consecutive elements from p[i] on (n ≤ 4 of them; the missing ones 0): one 16-byte (f32) or 8-byte
// (16-bit) load where all four are there and aligned, else one by one. Wide accesses move the same bytes with
// a quarter of the instructions; the conversions move hundreds of megabytes and were instruction-bound.
// (Named fields, never an indexed array: a per-thread array indexed by a loop counter lives in local memory.)
struct __align__(16) sparge_f4 { float a, b, c, d; };
struct __align__(8) sparge_u2 { u32 lo, hi; };
__device__ __forceinline__ float widen16(u16 h, int type) {
    return type == 1 ? __uint_as_float((u32)h << 16) : half_to_float(h);
}
__device__ __forceinline__ sparge_f4 load4(const void* p, long long i, int type, int n) {
    sparge_f4 x = { 0.0f, 0.0f, 0.0f, 0.0f };
    if (n == 4 && type == 0 && (((u64)p + (u64)i * 4) & 15) == 0) return *(const sparge_f4*)((const float*)p + i);
    if (n == 4 && type != 0 && (((u64)p + (u64)i * 2) & 7) == 0) {
        sparge_u2 v = *(const sparge_u2*)((const u16*)p + i);
        x.a = widen16((u16)(v.lo & 0xffff), type); x.b = widen16((u16)(v.lo >> 16), type);
        x.c = widen16((u16)(v.hi & 0xffff), type); x.d = widen16((u16)(v.hi >> 16), type);
        return x;
    }
    if (n > 0) x.a = load_element(p, i, type);
    if (n > 1) x.b = load_element(p, i + 1, type);
    if (n > 2) x.c = load_element(p, i + 2, type);
    if (n > 3) x.d = load_element(p, i + 3, type);
    return x;
}

// x rounded to a 16-bit type (1 bf16, 2 f16; *overflow as to_f16); with range non-null, *range is set when
// the stored value is finite and beyond fp16's range.
__device__ __forceinline__ u16 to16(float x, int type, int* overflow, int* range) {
    u16 h = type == 1 ? to_bf16(x) : to_f16(x, overflow);
    u32 a = __float_as_uint(widen16(h, type)) & 0x7fffffff;
    if (range && a >= 0x477ff000 && a < 0x7f800000) *range = 1;
    return h;
}

// x's first n values stored at p[i...] as type (rounded to nearest even), wide where it can; *overflow as
// to16, and *range set when a stored value is finite and beyond fp16's range (every type).
__device__ __forceinline__ void store4(void* p, long long i, int type, int n, sparge_f4 x, int* overflow, int* range) {
    if (type == 0) {
        if (range) {
            float v[4] = { x.a, x.b, x.c, x.d };
#pragma unroll
            for (int k = 0; k < 4; ++k) {
                u32 a = __float_as_uint(v[k]) & 0x7fffffff;
                if (k < n && a >= 0x477ff000 && a < 0x7f800000) *range = 1;
            }
        }
        if (n == 4 && (((u64)p + (u64)i * 4) & 15) == 0) { *(sparge_f4*)((float*)p + i) = x; return; }
        float* f = (float*)p + i;
        if (n > 0) f[0] = x.a;
        if (n > 1) f[1] = x.b;
        if (n > 2) f[2] = x.c;
        if (n > 3) f[3] = x.d;
        return;
    }
    u16 h0 = to16(x.a, type, overflow, range);
    u16 h1 = n > 1 ? to16(x.b, type, overflow, range) : 0;
    u16 h2 = n > 2 ? to16(x.c, type, overflow, range) : 0;
    u16 h3 = n > 3 ? to16(x.d, type, overflow, range) : 0;
    u16* q = (u16*)p + i;
    if (n == 4 && (((u64)p + (u64)i * 2) & 7) == 0) {
        sparge_u2 v = { (u32)h0 | ((u32)h1 << 16), (u32)h2 | ((u32)h3 << 16) };
        *(sparge_u2*)q = v;
        return;
    }
    if (n > 0) q[0] = h0;
    if (n > 1) q[1] = h1;
    if (n > 2) q[2] = h2;
    if (n > 3) q[3] = h3;
}

// A packed tensor entering (count elements of srcType) converted to dstType, four elements a thread; with
// range non-null, *range tells whether a stored value is beyond fp16's range (sparge_exceeds_half's test).
extern "C" __global__ void sparge_enter_packed(const void* src, int srcType, long long count, void* dst,
                                               int dstType, int* overflow, int* range) {
    long long i = ((long long)blockIdx.x * blockDim.x + threadIdx.x) * 4;
    if (i >= count) return;
    int n = count - i < 4 ? (int)(count - i) : 4;
    store4(dst, i, dstType, n, load4(src, i, srcType, n), overflow, range);
}

// Where element i of a packed [heads][rows][dim] tensor lies in a strided one (strides in elements); a
// packed one needs no index arithmetic (64-bit divisions are slow on a GPU).
__device__ __forceinline__ long long strided_index(long long i, int rows, int dim, long long strideH,
                                                   long long strideR, long long strideD) {
    if (strideD == 1 && strideR == dim && strideH == (long long)rows * dim) return i;
    long long d = i % dim, r = (i / dim) % rows, h = i / ((long long)dim * rows);
    return h * strideH + r * strideR + d * strideD;
}

// A tensor entering: element [h][r][d] of src (strides in elements, any type) to packed dst [heads][rows][dim].
extern "C" __global__ void sparge_enter(const void* src, int srcType, long long strideH, long long strideR,
                                        long long strideD, int heads, int rows, int dim, void* dst, int dstType,
                                        int* overflow) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)heads * rows * dim) return;
    long long at = strided_index(i, rows, dim, strideH, strideR, strideD);
    store_element(dst, i, dstType, load_element(src, at, srcType), overflow);
}

// A packed f32 tensor [heads][rows][dim] leaving for a caller's tensor: element i of src to dst (strides in
// elements, any type), rounded to nearest even.
extern "C" __global__ void sparge_leave(const float* src, int heads, int rows, int dim, void* dst, int dstType,
                                        long long strideH, long long strideR, long long strideD, int* overflow) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)heads * rows * dim) return;
    store_element(dst, strided_index(i, rows, dim, strideH, strideR, strideD), dstType, src[i], overflow);
}

// Sets *flag when a finite value of src (count elements of srcType) lies beyond fp16's range.
extern "C" __global__ void sparge_exceeds_half(const void* src, int srcType, long long count, int* flag) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= count) return;
    u32 a = __float_as_uint(load_element(src, i, srcType)) & 0x7fffffff;
    if (a >= 0x477ff000 && a < 0x7f800000) *flag = 1;  // rounds to ≥ 65520 in fp16, and finite
}

// K sums in KeyMean's order. Pass 1, one thread per (head, chunk, dimension): the chunk's rows summed in
// Double from zero, in order. k is [heads][rows][dim] in kType (widened exactly, as the host reads it).
extern "C" __global__ void sparge_key_partials(const void* k, int kType, int heads, int rows, int dim, int chunkRows,
                                               double* partials) {
    int chunks = (rows + chunkRows - 1) / chunkRows;
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)heads * chunks * dim) return;
    int j = (int)(i % dim), c = (int)((i / dim) % chunks), h = (int)(i / ((long long)dim * chunks));
    int end = min(rows, (c + 1) * chunkRows);
    double sum = 0.0;
    for (int r = c * chunkRows; r < end; ++r) sum = __dadd_rn(sum, (double)load_element(k, ((long long)h * rows + r) * dim + j, kType));
    partials[i] = sum;
}

// Pass 2, one thread per (head, dimension): the chunk sums added in order.
extern "C" __global__ void sparge_key_total(const double* partials, int heads, int chunks, int dim, double* sums) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)heads * dim) return;
    int j = (int)(i % dim), h = (int)(i / dim);
    double sum = 0.0;
    for (int c = 0; c < chunks; ++c) sum = __dadd_rn(sum, partials[((long long)h * chunks + c) * dim + j]);
    sums[i] = sum;
}

// Float key means widened to Double, as the CPU widens them for the scores.
extern "C" __global__ void sparge_widen(const float* in, long long count, double* out) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < count) out[i] = (double)in[i];
}

// Compaction of dense mask bytes [items][nk] into ascending key lists. Pass 1, one thread per (item, chunk
// of 64 key blocks): the chunk's computed blocks.
extern "C" __global__ void sparge_chunk_counts(const unsigned char* bits, long long items, int nk, int* counts) {
    int chunks = (nk + 63) / 64;
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= items * chunks) return;
    long long item = i / chunks;
    int c = (int)(i % chunks), end = min(nk, (c + 1) * 64), n = 0;
    const unsigned char* row = bits + item * nk;
    for (int j = c * 64; j < end; ++j) n += row[j] != 0;
    counts[i] = n;
}

// Pass 2, one thread per item: the chunks' counts turned into offsets within the row, and the row's total.
extern "C" __global__ void sparge_row_offsets(int* counts, long long items, int nk, int* totals) {
    int chunks = (nk + 63) / 64;
    long long item = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (item >= items) return;
    int sum = 0;
    for (int c = 0; c < chunks; ++c) {
        int n = counts[item * chunks + c];
        counts[item * chunks + c] = sum;
        sum += n;
    }
    totals[item] = sum;
}

// Pass 3, one thread per segment of SEGMENT_ROWS items: the segment's computed blocks; then one thread turns
// the segments' totals into their starts (in place: a serial scan of rows / 64 values), with one more entry,
// the total of all, so that pass 4 reads its segment's start and at most 63 totals (re-reading every earlier
// segment was rows² / 64 reads: 2·10⁹ at half a million rows). segments holds count + 1 entries.
#define SEGMENT_ROWS 64  // ResidentKernelSource.segmentRows
extern "C" __global__ void sparge_segment_sums(const int* totals, long long items, long long* segments) {
    long long s = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (s * SEGMENT_ROWS >= items) return;
    long long sum = 0, end = min(items, (s + 1) * SEGMENT_ROWS);
    for (long long i = s * SEGMENT_ROWS; i < end; ++i) sum += totals[i];
    segments[s] = sum;
}
extern "C" __global__ void sparge_segment_starts(long long* segments, long long count) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    long long at = 0;
    for (long long s = 0; s < count; ++s) {
        long long n = segments[s];
        segments[s] = at;
        at += n;
    }
    segments[count] = at;
}

// Pass 4, one thread per item (and one past the last): where its list starts among all rows' lists — its
// segment's start, then the items before it in its segment. starts[items] is the total.
extern "C" __global__ void sparge_row_starts(const int* totals, const long long* segmentStarts, long long items,
                                             long long* starts) {
    long long item = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (item > items) return;
    long long segment = item / SEGMENT_ROWS, at = segmentStarts[segment];
    for (long long i = segment * SEGMENT_ROWS; i < item; ++i) at += totals[i];
    starts[item] = at;
}

// Pass 5, one thread per (item, chunk): the chunk's key blocks written at the row's start plus its offset.
extern "C" __global__ void sparge_compact(const unsigned char* bits, long long items, int nk, const int* offsets,
                                          const long long* rowStarts, int* keys) {
    int chunks = (nk + 63) / 64;
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= items * chunks) return;
    long long item = i / chunks;
    int c = (int)(i % chunks), end = min(nk, (c + 1) * 64);
    const unsigned char* row = bits + item * nk;
    long long at = rowStarts[item] + offsets[i];
    for (int j = c * 64; j < end; ++j) if (row[j]) keys[at++] = j;
}

// One rank's work list for its single attention launch, built on the device from the compacted mask (rows
// h·queryBlocks + r: every query block of every head): what AttentionPlan and AttentionKernel.arrange build
// on the host, without the host's loops between the mask and the launch. Tiles are numbered head by head and
// block by block (h·tilesPerHead + r·tilesPerBlock + t); a CTA takes perCTA consecutive tiles of one query
// block (tilesPerBlock a multiple of perCTA), which share the block's row, cut at each tile's causal
// diagonal. WorkShape is DeviceWorkList.Shape's layout.
struct WorkShape { int heads, queryBlocks, blockQ, tileQ, blockK, seqLen, causal, perCTA, keyBlocks; };

__device__ __forceinline__ int work_tiles_in_block(WorkShape s, int r) {
    return (min(s.blockQ, s.seqLen - r * s.blockQ) + s.tileQ - 1) / s.tileQ;
}

// Pass 1, one thread a CTA: its entries (tile, first key index, count, 0; tile −1 past a partial last
// block), its tiles' rows of the tile table (head, local row, rows, first token: one rank's rows are the
// tokens), its longest list, and that length counted in counts[keyBlocks − longest].
extern "C" __global__ void sparge_work_items(WorkShape s, const long long* rowStarts, const int* keys, int* entries,
                                             int* table, int* longest, int* counts) {
    int tilesPerBlock = s.blockQ / s.tileQ, ctasPerBlock = tilesPerBlock / s.perCTA;
    int lastTiles = work_tiles_in_block(s, s.queryBlocks - 1);
    int tilesPerHead = (s.queryBlocks - 1) * tilesPerBlock + lastTiles;
    int ctasPerHead = (s.queryBlocks - 1) * ctasPerBlock + (lastTiles + s.perCTA - 1) / s.perCTA;
    long long cta = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (cta >= (long long)s.heads * ctasPerHead) return;
    int h = (int)(cta / ctasPerHead), within = (int)(cta % ctasPerHead);
    int r = within / ctasPerBlock, blockStart = r * s.blockQ, rows = min(s.blockQ, s.seqLen - blockStart);
    long long rowStart = rowStarts[(long long)h * s.queryBlocks + r], rowEnd = rowStarts[(long long)h * s.queryBlocks + r + 1];
    int most = 0;
    for (int i = 0; i < s.perCTA; ++i) {
        int t = (within % ctasPerBlock) * s.perCTA + i;
        int* entry = entries + (cta * s.perCTA + i) * 4;
        if (t * s.tileQ >= rows) { entry[0] = -1; entry[1] = 0; entry[2] = 0; entry[3] = 0; continue; }
        int tileStart = blockStart + t * s.tileQ, tileRows = min(s.tileQ, rows - t * s.tileQ);
        long long end = rowEnd;
        if (s.causal) {
            // The row's first key block past the tile's last row: a binary search of the ascending list.
            int cut = (tileStart + tileRows - 1) / s.blockK + 1;
            long long lo = rowStart;
            while (lo < end) {
                long long mid = lo + (end - lo) / 2;
                if (keys[mid] < cut) lo = mid + 1; else end = mid;
            }
        }
        int tile = h * tilesPerHead + r * tilesPerBlock + t, count = (int)(end - rowStart);
        entry[0] = tile; entry[1] = (int)rowStart; entry[2] = count; entry[3] = 0;
        int* row = table + (long long)tile * 4;
        row[0] = h; row[1] = tileStart; row[2] = tileRows; row[3] = tileStart;
        most = count > most ? count : most;
    }
    longest[cta] = most;
    atomicAdd(&counts[s.keyBlocks - most], 1);
}

// Pass 2, one thread block: counts [bins] turned into where each bin's CTAs start, longest lists first (bin
// 0 is the longest possible). Each thread sums a run of bins; the runs' sums are scanned in dynamic shared
// memory (blockDim.x ints, a Hillis–Steele scan), and each thread writes its run's starts. (The array is named
// as the mask kernels' dynamic shared memory: the host emulation's prelude defines that one name.)
extern "C" __global__ void sparge_work_starts(int* counts, int bins) {
    extern __shared__ __align__(16) unsigned char sparge_select_smem[];
    int* sums = (int*)sparge_select_smem;
    int t = threadIdx.x, per = (bins + blockDim.x - 1) / blockDim.x;
    int lo = min(bins, t * per), hi = min(bins, lo + per), own = 0;
    for (int i = lo; i < hi; ++i) own += counts[i];
    sums[t] = own;
    __syncthreads();
    for (int step = 1; step < (int)blockDim.x; step *= 2) {
        int before = t >= step ? sums[t - step] : 0;
        __syncthreads();
        sums[t] += before;
        __syncthreads();
    }
    int at = sums[t] - own;
    for (int i = lo; i < hi; ++i) {
        int n = counts[i];
        counts[i] = at;
        at += n;
    }
}

// Pass 3, one thread a CTA: its entries copied to the next place of its bin. Places within a bin go by the
// order the atomics come in (about the CTAs' order: head by head); a tile's result does not depend on
// where its CTA runs in the launch.
extern "C" __global__ void sparge_work_place(const int* entries, const int* longest, long long ctas, int perCTA,
                                             int keyBlocks, int* starts, int* work) {
    long long cta = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (cta >= ctas) return;
    long long at = atomicAdd(&starts[keyBlocks - longest[cta]], 1);
    for (int i = 0; i < perCTA * 4; ++i) work[at * perCTA * 4 + i] = entries[cta * perCTA * 4 + i];
}

// Pass 4, where the launch ends in a partly filled wave (DeviceWorkList.TailSplit): the last `split` CTAs of
// the placed list (the shortest lists) become `parts` CTAs each, which take consecutive runs of its steps
// (`stepEntries` list entries a step) and leave their state in slots for sparge_merge_parts; the CTAs before
// them keep their whole lists. One thread block of at least `split` threads: every entry is read before any
// is written, as the parts' entries overwrite their own CTAs' places (work has room for kept + split·parts).
extern "C" __global__ void sparge_work_split(int* work, int kept, int split, int parts, int perCTA, int stepEntries) {
    int j = threadIdx.x;
    int own[8];  // perCTA ≤ 2 entries of 4
    int longest = 0;
    if (j < split) {
        for (int i = 0; i < perCTA * 4; ++i) own[i] = work[((long long)kept + j) * perCTA * 4 + i];
        for (int c = 0; c < perCTA; ++c) if (own[4 * c] >= 0 && own[4 * c + 2] > longest) longest = own[4 * c + 2];
    }
    __syncthreads();
    if (j >= split) return;
    int steps = (longest + stepEntries - 1) / stepEntries;
    for (int part = 0; part < parts; ++part) {
        int from = min(longest, (int)((long long)part * steps / parts) * stepEntries);
        int to = min(longest, (int)((long long)(part + 1) * steps / parts) * stepEntries);
        int* entry = work + ((long long)kept + (long long)j * parts + part) * perCTA * 4;
        for (int c = 0; c < perCTA; ++c, entry += 4) {
            int tile = own[4 * c], count = own[4 * c + 2];
            if (tile < 0) { entry[0] = -1; entry[1] = 0; entry[2] = 0; entry[3] = 0; continue; }
            entry[0] = tile;
            entry[1] = own[4 * c + 1] + from;
            int n = min(to, count) - from;
            entry[2] = n > 0 ? n : 0;
            entry[3] = 1 + (j * parts + part) * perCTA + c;
        }
    }
}

// After a launch with a tail split: each split tile's parts combined into its output and LSE, as the kernel
// writes a whole tile's (O / l; (m + log2 l − log2Scale)·ln 2 + the row's shift, in natural units; a row
// no part visited gets zeros and −∞). A part's state is m (log2 units), l and its unnormalised O, tileRows
// rows a slot, as the Hopper kernel leaves it. One thread block a split tile; its threads walk the tile's
// elements row by row, neighbouring threads on neighbouring columns (each thread forms its row's weights from
// the parts' (m, l), which the row's threads all read). At most 16 parts (TailSplit.mostParts: 8).
extern "C" __global__ void sparge_merge_parts(const int* work, int kept, int parts, int perCTA, const int* tiles,
                                              int rows, int dim, int tileRows, const float* partialO,
                                              const float* partialML, float* out, float* lse, const float* rowShifts,
                                              float log2Scale) {
    int j = blockIdx.x / perCTA, c = blockIdx.x % perCTA;
    const int* first = work + (((long long)kept + (long long)j * parts) * perCTA + c) * 4;
    int tile = first[0];
    if (tile < 0) return;
    const long long slot0 = first[3] - 1;
    const int* t = tiles + (long long)tile * 4;
    const float negInf = __int_as_float(0xff800000);
    for (int e = threadIdx.x; e < t[2] * dim; e += blockDim.x) {
        int r = e / dim, col = e % dim;
        long long row = (long long)t[0] * rows + t[1] + r;
        float m = negInf;
        for (int i = 0; i < parts; ++i) {
            const float* ml = partialML + ((slot0 + (long long)i * perCTA) * tileRows + r) * 2;
            if (ml[1] > 0.f) m = fmaxf(m, ml[0]);
        }
        float l = 0.f, o = 0.f;
        for (int i = 0; i < parts; ++i) {
            long long at = (slot0 + (long long)i * perCTA) * tileRows + r;
            const float* ml = partialML + at * 2;
            if (!(ml[1] > 0.f)) continue;  // a part without keys (m = −∞, l = 0) adds nothing
            float weight = exp2f(ml[0] - m);
            l += weight * ml[1];
            o += weight * partialO[at * dim + col];
        }
        out[row * dim + col] = l > 0.f ? o / l : 0.f;
        if (col == 0)
            lse[row] = l > 0.f ? (m + log2f(l) - log2Scale) * 0.69314718055994531f + (rowShifts ? rowShifts[row] : 0.f) : negInf;
    }
}

// Copies of whole blocks between device buffers (a ring payload packed from the blocks it carries):
// per copy (source address, destination address, bytes), bytes a multiple of 4; one thread block a copy.
struct BlockCopy { u64 source, destination, bytes; };
extern "C" __global__ void sparge_copy_blocks(const BlockCopy* copies) {
    BlockCopy c = copies[blockIdx.x];
    const u32* s = (const u32*)c.source;
    u32* d = (u32*)c.destination;
    for (u64 i = threadIdx.x; i < c.bytes / 4; i += blockDim.x) d[i] = s[i];
}

// Blocks placed at their rows of the attention kernel's K and V ([kvHeads][kvRows][dim], in kType and
// vType), converted from the storage format: per block (keys address, values address, kv head, first
// row, rows). One thread block a block; *overflow is set when a value does not fit fp16.
struct BlockPlacement { u64 keys, values; int kvHead, firstRow, rows, unused; };
// (k null: the kernel reads K where it is, and only V is placed; v null: V is read where it is, or converted
// whole, and only K is placed.)
extern "C" __global__ void sparge_place_blocks(const BlockPlacement* blocks, int srcType, int dim, int kvRows,
                                               void* k, int kType, void* v, int vType, int* overflow) {
    BlockPlacement b = blocks[blockIdx.x];
    long long base = ((long long)b.kvHead * kvRows + b.firstRow) * dim, total = (long long)b.rows * dim;
    for (long long i = (long long)threadIdx.x * 4; i < total; i += (long long)blockDim.x * 4) {
        int n = total - i < 4 ? (int)(total - i) : 4;
        if (k) store4(k, base + i, kType, n, load4((const void*)b.keys, i, srcType, n), overflow, 0);
        if (v) store4(v, base + i, vType, n, load4((const void*)b.values, i, srcType, n), overflow, 0);
    }
}

// SageAttention's quantization for the Hopper kernel's int8 Q·Kᵀ and e4m3 P·V (QK_INT8, PV_FP8), from fp32
// tensors [heads][rows][dim]. Every operation is one the host repeats in the same order, so a host twin
// gives the same bits (the tests' `SageQuantization`).

// |x| ≤ 448 to e4m3 (bias 7, no infinities), to nearest even; larger magnitudes saturate to ±448.
__device__ __forceinline__ unsigned char to_e4m3(float x) {
    u32 u = __float_as_uint(x);
    unsigned char sign = (unsigned char)((u >> 24) & 0x80);
    u32 a = u & 0x7fffffff;
    if (a >= 0x43e00000) return sign | 0x7e;                          // ≥ 448: the largest finite
    if (a < 0x3c800000) {                                             // below 2⁻⁶: subnormal (2⁻⁹ steps) or 0
        return sign | (unsigned char)__float2int_rn(__uint_as_float(a) * 512.0f);
    }
    u32 rounded = a + 0x7ffff + ((a >> 20) & 1);                     // to 3 mantissa bits, ties to even
    u32 code = (rounded >> 20) - (120 << 3);                          // rebias 127 → 7
    return sign | (unsigned char)(code > 0x7e ? 0x7e : code);
}

// Q [heads][rows][dim] (in qType: f32, or a model's bf16 read where it lies) to int8 by rows, in two passes.
// First, per row: scale = max|q| / 127 (1 for a zero row) and the row's shift q·μ·softmaxScale (μ its K/V
// head's mean, [heads / group][dim]; a serial fp32 sum): what smoothing K by μ takes from every score of the
// row, which the LSE adds back. A thread block takes QUANT_ROWS rows: they pass through shared memory in
// coalesced loads (128 dimensions at a time, a row padded by one float so that a thread per row reads without
// bank conflicts), and a thread per row walks its row in order. (A thread per row straight from global
// memory read rows 512 bytes apart: about 0.1 ms at 32K tokens and 8 heads.)
#define QUANT_ROWS 32  // ResidentKernelSource.quantizationRows
#define QUANT_COLUMNS 128
// The int8 scale of values whose largest magnitude is `largest`: largest / 127, or 1 where that is 0 (a zero
// row or block, or one so small that the quotient underflows: its values then round to 0).
__device__ __forceinline__ float int8_scale(float largest) {
    const float quotient = __fdiv_rn(largest, 127.f);
    return quotient > 0.f ? quotient : 1.f;
}
extern "C" __global__ void sparge_query_row_scales(const void* q, int qType, long long rows, int heads, int dim,
                                                   int group, const float* mean, float softmaxScale, float* scales,
                                                   float* shifts) {
    __shared__ float staged[QUANT_ROWS * (QUANT_COLUMNS + 1)];
    __shared__ float maxima[QUANT_ROWS], dots[QUANT_ROWS];
    const long long first = (long long)blockIdx.x * QUANT_ROWS;
    const int n = (int)((long long)heads * rows - first < QUANT_ROWS ? (long long)heads * rows - first : QUANT_ROWS);
    for (int r = threadIdx.x; r < n; r += blockDim.x) { maxima[r] = 0.f; dots[r] = 0.f; }
    for (int c0 = 0; c0 < dim; c0 += QUANT_COLUMNS) {
        const int cn = min(QUANT_COLUMNS, dim - c0);
        __syncthreads();  // the previous columns are read
        for (int e = threadIdx.x; e < n * cn; e += blockDim.x) {
            int r = e / cn, j = e % cn;
            staged[r * (QUANT_COLUMNS + 1) + j] = load_element(q, (first + r) * dim + c0 + j, qType);
        }
        __syncthreads();
        for (int r = threadIdx.x; r < n; r += blockDim.x) {
            const float* mu = mean + (long long)((int)((first + r) / rows) / group) * dim + c0;
            const float* x = staged + r * (QUANT_COLUMNS + 1);
            float m = maxima[r], dot = dots[r];
            for (int j = 0; j < cn; ++j) {
                m = fmaxf(m, fabsf(x[j]));
                dot = __fadd_rn(dot, __fmul_rn(x[j], mu[j]));
            }
            maxima[r] = m;
            dots[r] = dot;
        }
    }
    for (int r = threadIdx.x; r < n; r += blockDim.x) {
        scales[first + r] = int8_scale(maxima[r]);
        shifts[first + r] = __fmul_rn(dots[r], softmaxScale);
    }
}

// Then four elements a thread (dim a multiple of 4), n = round(q / scale) within ±127 (only a scale rounded among
// the subnormals takes a quotient past it), stored as one word: a thread per row wrote a byte at a time to 32
// rows at once, 20 times slower.
__device__ __forceinline__ u32 quantized_byte(float x, float scale) {
    const int n = __float2int_rn(__fdiv_rn(x, scale));
    return (u32)(unsigned char)(signed char)(n > 127 ? 127 : n < -127 ? -127 : n);
}
extern "C" __global__ void sparge_query_quantize(const void* q, int qType, long long quads, int dim,
                                                 const float* scales, signed char* out) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= quads) return;
    const float scale = scales[i * 4 / dim];
    sparge_f4 x = load4(q, i * 4, qType, 4);
    u32 word = quantized_byte(x.a, scale) | quantized_byte(x.b, scale) << 8 | quantized_byte(x.c, scale) << 16
        | quantized_byte(x.d, scale) << 24;
    ((u32*)out)[i] = word;
}

// K blocks to int8 as they are placed at their rows of the kernel's K ([kvHeads][kvRows][dim] int8), from
// the storage format (BlockPlacement as sparge_place_blocks'): minus the head's mean (mean [kvHeads][dim]),
// one scale per block, max|k − μ| / 127 (1 for a zero block, or one whose scale underflows), n = round((k − μ) /
// scale) within ±127, rows past the block's own 0; scales [kvHeads][kvRows / blockK]. Three passes, each
// thread on its own: a row's max, a block's scale from its rows' maxima (rowMax [placements][blockK]), then
// four elements a thread (one word).
extern "C" __global__ void sparge_key_row_max(const BlockPlacement* blocks, int count, int srcType, int dim, int blockK,
                                              const float* mean, float* rowMax) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)count * blockK) return;
    const BlockPlacement b = blocks[i / blockK];
    const int r = (int)(i % blockK);
    const float* mu = mean + (long long)b.kvHead * dim;
    float m = 0.f;
    for (int d = 0; r < b.rows && d < dim; ++d)
        m = fmaxf(m, fabsf(__fsub_rn(load_element((const void*)b.keys, (long long)r * dim + d, srcType), mu[d])));
    rowMax[i] = m;
}

extern "C" __global__ void sparge_key_block_scale(const BlockPlacement* blocks, int count, int blockK, int kvRows,
                                                  const float* rowMax, float* blockScale, float* scales) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= count) return;
    const BlockPlacement b = blocks[i];
    float m = 0.f;
    for (int r = 0; r < blockK; ++r) m = fmaxf(m, rowMax[(long long)i * blockK + r]);
    const float scale = int8_scale(m);
    blockScale[i] = scale;
    scales[(long long)b.kvHead * (kvRows / blockK) + b.firstRow / blockK] = scale;
}

extern "C" __global__ void sparge_key_quantize(const BlockPlacement* blocks, int count, int srcType, int dim, int blockK,
                                               int kvRows, const float* mean, const float* blockScale, signed char* k) {
    const long long perBlock = (long long)blockK * dim / 4;
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)count * perBlock) return;
    const int p = (int)(i / perBlock);
    const BlockPlacement b = blocks[p];
    const long long e = (i % perBlock) * 4;  // element of the block: row e / dim, columns e % dim + 0…3
    const int r = (int)(e / dim), d = (int)(e % dim);
    const float scale = blockScale[p];
    const float* mu = mean + (long long)b.kvHead * dim;
    u32 word = 0;
    for (int c = 0; c < 4; ++c) {
        const float x = r < b.rows ? __fsub_rn(load_element((const void*)b.keys, e + c, srcType), mu[d + c]) : 0.f;
        word |= quantized_byte(x, scale) << (8 * c);
    }
    *(u32*)(k + ((long long)b.kvHead * kvRows + b.firstRow + r) * dim + d) = word;
}

// One thread a (head, column): scale = max|v| / 448 over the rows (1 for a zero column); Vᵀ [heads][dim][kvRows]
// in e4m3 with each 16 keys in the order the Hopper kernel's P registers take them: position 16g + 4a + i
// holds key 16g + 8·(i / 2) + 2a + i % 2 (keys past `rows` are 0).
extern "C" __global__ void sparge_quantize_values_e4m3(const float* v, int heads, int rows, int kvRows, int dim,
                                                      unsigned char* outT, float* scales) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long long)heads * dim) return;
    const int h = (int)(i / dim), d = (int)(i % dim);
    float m = 0.f;
    for (int r = 0; r < rows; ++r) m = fmaxf(m, fabsf(v[((long long)h * rows + r) * dim + d]));
    const float scale = m > 0.f ? __fdiv_rn(m, 448.f) : 1.f;
    for (int pos = 0; pos < kvRows; ++pos) {
        const int within = pos % 16, a = within / 4, e = within % 4;
        const int key = pos - within + 8 * (e / 2) + 2 * a + e % 2;
        const float x = key < rows ? __fdiv_rn(v[((long long)h * rows + key) * dim + d], scale) : 0.f;
        outT[((long long)h * dim + d) * kvRows + pos] = to_e4m3(x);
    }
    scales[i] = scale;
}
