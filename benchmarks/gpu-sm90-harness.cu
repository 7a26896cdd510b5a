// gpu-sm90-harness.cu: the Hopper attention kernel (Sources/SpargeCUDA/Kernels/sparge_attention_sm90.cu) on its
// own, before and beside the package's integration: checks it against a Double reference on random inputs
// (dense, causal, random block lists, partial tail tiles, two launches resuming the state) and times it.
// Built by benchmarks/gpu-sm90.sh with nvcc for sm_90a, once per (D, BK); runs on one Hopper GPU.
#ifndef LAMBDA_ALWAYS
#define LAMBDA_ALWAYS 0
#endif
#define LAMBDA_OFF 50.f  // SpargeConfig.lambdaOff
#include <cuda_runtime.h>
#include <cuda.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cmath>
#include <vector>
#include <algorithm>
#include <random>
#include <dlfcn.h>
#include "sparge_attention_common.cu"
#include "sparge_attention_sm90.cu"

#define CHECK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e)); exit(2); } } while (0)

typedef CUresult (*EncodeTiled)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*, const cuuint64_t*,
                                const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave, CUtensorMapSwizzle,
                                CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
static EncodeTiled encodeTiled;

// A 2-D map of `rows` rows of D elements of `bytes` bytes, in boxes of one 128-byte row width × boxRows.
static void makeMap(TensorMap* map, void* base, long rows, int boxRows, int bytes = 2) {
    cuuint64_t dims[2] = {(cuuint64_t)D, (cuuint64_t)rows};
    cuuint64_t strides[1] = {(cuuint64_t)D * bytes};
    cuuint32_t box[2] = {(cuuint32_t)(128 / bytes), (cuuint32_t)boxRows};
    cuuint32_t elementStrides[2] = {1, 1};
    CUresult r = encodeTiled((CUtensorMap*)map, bytes == 1 ? CU_TENSOR_MAP_DATA_TYPE_UINT8 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, base, dims, strides, box, elementStrides,
                             CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                             CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS) { fprintf(stderr, "cuTensorMapEncodeTiled: %d\n", (int)r); exit(2); }
}

static u16 toBF16(float f) { u32 u; memcpy(&u, &f, 4); u += 0x7fff + ((u >> 16) & 1); return (u16)(u >> 16); }
static float fromBF16(u16 h) { u32 u = (u32)h << 16; float f; memcpy(&f, &u, 4); return f; }

// SageAttention's int8 for Q·Kᵀ: Q per row (scale max|q|/127), K minus its head's mean over all keys (which
// shifts every score of a row by the same q·μ: the softmax does not see it), then per BK-key block.
struct Quantized { std::vector<signed char> q, k; std::vector<float> qScales, kScales, rowShifts; std::vector<u16> deltas; };

// fp16 bits nearest to x (normal range; the deltas of block means are far from fp16's limits).
static u16 toF16(float x) {
    u32 u; memcpy(&u, &x, 4);
    u32 sign = (u >> 16) & 0x8000, a = u & 0x7fffffff;
    if (a < 0x38800000) return (u16)(sign | (u16)lrintf(fabsf(x) * 16777216.f));  // subnormal
    u32 r = a + 0xfff + ((a >> 13) & 1);
    return (u16)(sign | ((r >> 13) - (112 << 10)));
}

// e4m3 (bias 7, no infinities, 0x7f NaN): the code nearest to x (ties to the even code), |x| ≤ 448.
static unsigned char toE4M3(float x) {
    static float values[127];
    static bool ready = false;
    if (!ready) {
        for (int c = 0; c < 127; ++c) {
            int e = c >> 3, m = c & 7;
            values[c] = e == 0 ? m / 8.f * ldexpf(1.f, -6) : (1 + m / 8.f) * ldexpf(1.f, e - 7);
        }
        ready = true;
    }
    float a = std::min(fabsf(x), 448.f);
    int c = (int)(std::lower_bound(values, values + 127, a) - values);
    if (c == 127) c = 126;
    if (c > 0 && (a - values[c - 1] < values[c] - a || (a - values[c - 1] == values[c] - a && (c - 1) % 2 == 0))) c -= 1;
    return (unsigned char)((x < 0 ? 0x80 : 0) | c);
}

// V for fp8 P·V: per (head, column) scale max|v|/448, e4m3, transposed to [H][D][kvRows] with the keys of each
// 16 in the order the kernel's P registers take them: position 4a + i holds key 8·(i / 2) + 2a + i % 2.
static std::vector<unsigned char> quantizeValues(const std::vector<u16>& v, int heads, int kvRows, std::vector<float>& scales) {
    std::vector<unsigned char> t((size_t)heads * D * kvRows);
    scales.assign((size_t)heads * D, 1.f);
    for (int h = 0; h < heads; ++h) for (int d = 0; d < D; ++d) {
        float mx = 0;
        for (int r = 0; r < kvRows; ++r) mx = std::max(mx, fabsf(fromBF16(v[((size_t)h * kvRows + r) * D + d])));
        float sc = mx > 0 ? mx / 448.f : 1.f;
        scales[(size_t)h * D + d] = sc;
        for (int pos = 0; pos < kvRows; ++pos) {
            int within = pos % 16, a = within / 4, i = within % 4;
            int key = pos - within + 8 * (i / 2) + 2 * a + i % 2;
            t[((size_t)h * D + d) * kvRows + pos] = toE4M3(fromBF16(v[((size_t)h * kvRows + key) * D + d]) / sc);
        }
    }
    return t;
}

struct Problem {
    int heads, n, kvRows, causal;
    std::vector<u16> q, k, v;          // bf16, [H][n or kvRows][D]
    std::vector<i4> tiles;             // 64-row tiles
    std::vector<int> blocks;           // per query block of 128 rows: its list (ascending)
    std::vector<int> rowStart, rowLen; // per query block
};

static Quantized quantize(const Problem& p) {
    Quantized z;
    int nk = p.kvRows / BK;
    z.q.resize(p.q.size()); z.k.resize(p.k.size());
    z.qScales.resize((size_t)p.heads * p.n); z.rowShifts.resize((size_t)p.heads * p.n); z.kScales.resize((size_t)p.heads * nk);
    z.deltas.assign((size_t)p.heads * nk * D, 0);
    for (size_t r = 0; r < (size_t)p.heads * p.n; ++r) {
        float mx = 0; for (int d = 0; d < D; ++d) mx = std::max(mx, fabsf(fromBF16(p.q[r * D + d])));
        float sc = mx > 0 ? mx / 127.f : 1.f; z.qScales[r] = sc;
        for (int d = 0; d < D; ++d) z.q[r * D + d] = (signed char)lrintf(fromBF16(p.q[r * D + d]) / sc);
    }
    for (int h = 0; h < p.heads; ++h) {
        std::vector<double> mean(D, 0.0);
        for (int r = 0; r < p.n; ++r) for (int d = 0; d < D; ++d) mean[d] += fromBF16(p.k[((size_t)h * p.kvRows + r) * D + d]);
        for (int d = 0; d < D; ++d) mean[d] /= p.n;
        // The softmax does not see q·μ; the LSE adds it back (natural units, times the softmax scale).
        for (int r = 0; r < p.n; ++r) {
            double dot = 0;
            for (int d = 0; d < D; ++d) dot += fromBF16(p.q[((size_t)h * p.n + r) * D + d]) * mean[d];
            z.rowShifts[(size_t)h * p.n + r] = (float)(dot / sqrt((double)D));
        }
        for (int b = 0; b < nk; ++b) {
            // The mean K is smoothed by: the head's, or (K_BLOCK_MEAN) the block's own, whose difference from
            // the head's goes to the kernel in fp16.
            std::vector<double> mu(mean);
            const int last = std::min(p.n, (b + 1) * BK);
#if K_BLOCK_MEAN
            for (int d = 0; d < D; ++d) {
                double sum = 0;
                for (int r = b * BK; r < last; ++r) sum += fromBF16(p.k[((size_t)h * p.kvRows + r) * D + d]);
                mu[d] = last > b * BK ? sum / (last - b * BK) : mean[d];
                z.deltas[((size_t)h * nk + b) * D + d] = toF16((float)(mu[d] - mean[d]));
            }
#endif
            float mx = 0;
            for (int r = b * BK; r < last; ++r)
                for (int d = 0; d < D; ++d) mx = std::max(mx, fabsf(fromBF16(p.k[((size_t)h * p.kvRows + r) * D + d]) - (float)mu[d]));
            float sc = mx > 0 ? mx / 127.f : 1.f; z.kScales[(size_t)h * nk + b] = sc;
            for (int r = b * BK; r < (b + 1) * BK; ++r)
                for (int d = 0; d < D; ++d) {
                    size_t i = ((size_t)h * p.kvRows + r) * D + d;
                    z.k[i] = r < p.n ? (signed char)lrintf((fromBF16(p.k[i]) - (float)mu[d]) / sc) : 0;
                }
        }
    }
    return z;
}

// Per 128-row query block, a list of key blocks: dense, causal or a random density (always the diagonal).
// drift: K's mean moves along the sequence (each channel a slow wave of that amplitude), as in llm-like inputs.
static Problem makeProblem(int heads, int n, int causal, double density, unsigned seed, float drift = 0.f) {
    Problem p; p.heads = heads; p.n = n; p.causal = causal;
    int nk = (n + BK - 1) / BK; p.kvRows = nk * BK;
    std::mt19937 gen(seed); std::normal_distribution<float> nd(0.f, 1.f); std::uniform_real_distribution<double> ud(0, 1);
    p.q.resize((size_t)heads * n * D); p.k.assign((size_t)heads * p.kvRows * D, 0); p.v.assign((size_t)heads * p.kvRows * D, 0);
    for (auto& x : p.q) x = toBF16(nd(gen));
    for (int h = 0; h < heads; ++h) for (int r = 0; r < n; ++r) for (int d = 0; d < D; ++d) {
        p.k[((size_t)h * p.kvRows + r) * D + d] = toBF16(nd(gen) + 0.5f * (d % 7 == 0) + drift * sinf(r / 300.f + 0.37f * d));
        p.v[((size_t)h * p.kvRows + r) * D + d] = toBF16(nd(gen));
    }
    int nq = (n + 127) / 128;
    for (int h = 0; h < heads; ++h) for (int b = 0; b < nq; ++b) {
        p.rowStart.push_back(p.blocks.size());
        int lastRow = std::min(n, (b + 1) * 128) - 1;
        for (int j = 0; j < nk; ++j) {
            if (causal && j * BK > lastRow) break;
            bool diagonal = j * BK <= lastRow && (j + 1) * BK > b * 128;
            if (density >= 1 || diagonal || ud(gen) < density) p.blocks.push_back(j);
        }
        p.rowLen.push_back(p.blocks.size() - p.rowStart.back());
        for (int s = 0; s < 2; ++s) {
            int lr = b * 128 + 64 * s;
            if (lr < n) p.tiles.push_back(i4{h, lr, std::min(64, n - lr), lr});
        }
    }
    return p;
}

// The entries of tile t's list (a prefix of its query block's: cut at its own causal diagonal).
static int tileCount(const Problem& p, int h, int qb, const i4& t) {
    int at = p.rowStart[h * ((p.n + 127) / 128) + qb], len = p.rowLen[h * ((p.n + 127) / 128) + qb];
    int c = 0;
    for (; c < len; ++c) if (p.causal && p.blocks[at + c] * BK > t.y + t.z - 1) break;
    return c;
}

struct Run { std::vector<float> out, lse; float ms; };

// Runs the problem in `launches` launches (the blocks of each list split evenly), the last writing out/lse.
static Run run(const Problem& p, int launches, int repeats, float pvThreshold) {
    size_t qn = p.q.size(), kvn = p.k.size();
    u16 *dq, *dk, *dv; float *oacc, *out, *lse; f2* ml; TileCounters* counters; i4* tiles; int* blocks;
    CHECK(cudaMalloc(&dq, qn * 2)); CHECK(cudaMalloc(&dk, kvn * 2)); CHECK(cudaMalloc(&dv, kvn * 2));
#if PV_FP8
    std::vector<float> vScaleHost;
    std::vector<unsigned char> vt = quantizeValues(p.v, p.heads, p.kvRows, vScaleHost);
    float* vScales;
    CHECK(cudaMemcpy(dv, vt.data(), vt.size(), cudaMemcpyHostToDevice));
    CHECK(cudaMalloc(&vScales, vScaleHost.size() * 4));
    CHECK(cudaMemcpy(vScales, vScaleHost.data(), vScaleHost.size() * 4, cudaMemcpyHostToDevice));
#else
    CHECK(cudaMemcpy(dv, p.v.data(), kvn * 2, cudaMemcpyHostToDevice));
#endif
#if QK_INT8
    Quantized z = quantize(p);
    float *qScales, *kScales, *rowShifts;
    CHECK(cudaMemcpy(dq, z.q.data(), qn, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(dk, z.k.data(), kvn, cudaMemcpyHostToDevice));
    CHECK(cudaMalloc(&qScales, z.qScales.size() * 4)); CHECK(cudaMalloc(&kScales, z.kScales.size() * 4));
    CHECK(cudaMemcpy(qScales, z.qScales.data(), z.qScales.size() * 4, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(kScales, z.kScales.data(), z.kScales.size() * 4, cudaMemcpyHostToDevice));
    CHECK(cudaMalloc(&rowShifts, z.rowShifts.size() * 4));
    CHECK(cudaMemcpy(rowShifts, z.rowShifts.data(), z.rowShifts.size() * 4, cudaMemcpyHostToDevice));
    u16* deltas;
    CHECK(cudaMalloc(&deltas, z.deltas.size() * 2));
    CHECK(cudaMemcpy(deltas, z.deltas.data(), z.deltas.size() * 2, cudaMemcpyHostToDevice));
    const int qkBytes = 1;
#else
    CHECK(cudaMemcpy(dq, p.q.data(), qn * 2, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(dk, p.k.data(), kvn * 2, cudaMemcpyHostToDevice));
    const int qkBytes = 2;
#endif
    CHECK(cudaMalloc(&oacc, qn * 4)); CHECK(cudaMalloc(&out, qn * 4)); CHECK(cudaMalloc(&lse, qn / D * 4));
    CHECK(cudaMalloc(&ml, qn / D * 8)); CHECK(cudaMalloc(&counters, p.tiles.size() * 16));
    CHECK(cudaMemset(out, 0xff, qn * 4));  // NaN: every element must be written
    CHECK(cudaMalloc(&tiles, p.tiles.size() * 16));
    CHECK(cudaMemcpy(tiles, p.tiles.data(), p.tiles.size() * 16, cudaMemcpyHostToDevice));
    CHECK(cudaMalloc(&blocks, p.blocks.size() * 4 + 4));
    CHECK(cudaMemcpy(blocks, p.blocks.data(), p.blocks.size() * 4, cudaMemcpyHostToDevice));
    int nq = (p.n + 127) / 128;
    // Work per launch: pairs of tiles of one query block (in tile order), heaviest first.
    std::vector<std::vector<i4>> works(launches);
    std::vector<std::pair<int, int>> pairs;  // first tile index, tiles in pair
    for (size_t i = 0; i < p.tiles.size();) {
        bool two = i + 1 < p.tiles.size() && p.tiles[i + 1].x == p.tiles[i].x && p.tiles[i + 1].y == p.tiles[i].y + 64;
        pairs.push_back({(int)i, two ? 2 : 1});
        i += two ? 2 : 1;
    }
    for (int L = 0; L < launches; ++L) {
        std::vector<std::pair<int, std::pair<i4, i4>>> items;
        for (auto [first, nt] : pairs) {
            i4 w[2] = {{-1, 0, 0, 0}, {-1, 0, 0, 0}};
            int longest = 0;
            for (int s = 0; s < nt; ++s) {
                const i4& t = p.tiles[first + s];
                int qb = t.y / 128, at = p.rowStart[t.x * nq + qb], c = tileCount(p, t.x, qb, t);
                // launch L holds the entries [L·len/launches, (L+1)·len/launches) of the query block's list
                int len = p.rowLen[t.x * nq + qb], lo = (int)((long)L * len / launches), hi = (int)((long)(L + 1) * len / launches);
                int mine = std::max(0, std::min(c, hi) - lo);
                w[s] = i4{first + s, at + lo, mine, 0};
                longest = std::max(longest, mine);
            }
            if (longest > 0 || L == launches - 1) items.push_back({longest, {w[0], w[1]}});
        }
        std::stable_sort(items.begin(), items.end(), [](auto& a, auto& b) { return a.first > b.first; });
        for (auto& it : items) { works[L].push_back(it.second.first); works[L].push_back(it.second.second); }
    }
    SpargeHopperParams hp;
    memset(&hp, 0, sizeof hp);
    makeMap(&hp.qMap, dq, (long)p.heads * p.n, 64, qkBytes);
    makeMap(&hp.kMap, dk, (long)p.heads * p.kvRows, BK, qkBytes);
#if PV_FP8
    {   // Vᵀ: rows of kvRows keys (one byte each) for every (head, column); boxes of 128 keys × D columns.
        cuuint64_t dims[2] = {(cuuint64_t)p.kvRows, (cuuint64_t)p.heads * D};
        cuuint64_t strides[1] = {(cuuint64_t)p.kvRows};
        cuuint32_t box[2] = {128, (cuuint32_t)D};
        cuuint32_t elementStrides[2] = {1, 1};
        CUresult r = encodeTiled((CUtensorMap*)&hp.vMap, CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, dv, dims, strides, box, elementStrides,
                                 CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                                 CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
        if (r != CUDA_SUCCESS) { fprintf(stderr, "cuTensorMapEncodeTiled (Vt): %d\n", (int)r); exit(2); }
        hp.vScales = vScales;
    }
#else
    makeMap(&hp.vMap, dv, (long)p.heads * p.kvRows, BK);
#endif
#if QK_INT8
    hp.scales.qScales = qScales; hp.scales.kScales = kScales; hp.scales.rowShifts = rowShifts;
#if K_BLOCK_MEAN
    hp.blockDeltas = deltas;
#endif
#endif
    hp.p.q = dq; hp.p.k = dk; hp.p.v = dv; hp.p.oacc = oacc; hp.p.ml = ml; hp.p.counters = counters; hp.p.tiles = tiles;
    hp.p.blocks = blocks; hp.p.rows = p.n; hp.p.seqLen = p.n; hp.p.kvRows = p.kvRows; hp.p.group = 1;
    hp.p.qScale = 1.f / sqrtf((float)D) * 1.4426950408889634f; hp.p.pvThreshold = pvThreshold; hp.p.causal = p.causal;
    // The λ rule runs below SpargeConfig.lambdaOff (50); -DLAMBDA_ALWAYS=1 runs it at 50 too (its barrier, no skip).
    hp.p.lambda = LAMBDA_ALWAYS || pvThreshold < LAMBDA_OFF;
    int smem = SHARED_BYTES;
    CHECK(cudaFuncSetAttribute(sparge_attention_sm90, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    std::vector<i4*> dwork(launches);
    for (int L = 0; L < launches; ++L) {
        CHECK(cudaMalloc(&dwork[L], works[L].size() * 16 + 16));
        CHECK(cudaMemcpy(dwork[L], works[L].data(), works[L].size() * 16, cudaMemcpyHostToDevice));
    }
    cudaEvent_t a, b; CHECK(cudaEventCreate(&a)); CHECK(cudaEventCreate(&b));
    std::vector<float> times;
    for (int rep = 0; rep < repeats; ++rep) {
        CHECK(cudaMemset(counters, 0, p.tiles.size() * 16));
        CHECK(cudaEventRecord(a));
        for (int L = 0; L < launches; ++L) {
            hp.p.work = dwork[L];
            hp.p.out = L == launches - 1 ? out : nullptr;
            hp.p.lse = L == launches - 1 ? lse : nullptr;
            sparge_attention_sm90<<<works[L].size() / 2, THREADS, smem>>>(hp);
            CHECK(cudaGetLastError());
        }
        CHECK(cudaEventRecord(b));
        CHECK(cudaEventSynchronize(b));
        float ms; CHECK(cudaEventElapsedTime(&ms, a, b)); times.push_back(ms);
    }
    CHECK(cudaDeviceSynchronize());
    std::sort(times.begin(), times.end());
    Run r; r.ms = times[times.size() / 2];
    r.out.resize(qn); r.lse.resize(qn / D);
    CHECK(cudaMemcpy(r.out.data(), out, qn * 4, cudaMemcpyDeviceToHost));
    CHECK(cudaMemcpy(r.lse.data(), lse, qn / D * 4, cudaMemcpyDeviceToHost));
    cudaFree(dq); cudaFree(dk); cudaFree(dv); cudaFree(oacc); cudaFree(out); cudaFree(lse); cudaFree(ml);
    cudaFree(counters); cudaFree(tiles); cudaFree(blocks);
#if QK_INT8
    cudaFree(qScales); cudaFree(kScales); cudaFree(rowShifts); cudaFree(deltas);
#endif
#if PV_FP8
    cudaFree(vScales);
#endif
    for (auto w : dwork) cudaFree(w);
    return r;
}

// Relative L1 of `r.out` against Double attention on the rounded inputs, over `sample` query rows of each head.
static double check(const Problem& p, const Run& r, int sample, unsigned seed, double* lseError) {
    std::mt19937 gen(seed);
    double num = 0, den = 0, lseWorst = 0;
    int nq = (p.n + 127) / 128, bad = 0;
    for (float x : r.out) if (!std::isfinite(x)) { ++bad; }
    if (bad) { printf("  %d output elements not finite (unwritten?)\n", bad); return 1e9; }
    std::vector<double> s(p.kvRows);
    for (int h = 0; h < p.heads; ++h) for (int k = 0; k < sample; ++k) {
        int row = (k == 0) ? p.n - 1 : (int)(gen() % p.n);
        int qb = row / 128, at = p.rowStart[h * nq + qb], len = p.rowLen[h * nq + qb];
        double mx = -1e300;
        std::vector<int> keys;
        for (int e = 0; e < len; ++e) for (int j = p.blocks[at + e] * BK; j < std::min(p.n, (p.blocks[at + e] + 1) * BK); ++j) {
            if (p.causal && j > row) continue;
            double dot = 0;
            for (int d = 0; d < D; ++d) dot += (double)fromBF16(p.q[((size_t)h * p.n + row) * D + d]) * fromBF16(p.k[((size_t)h * p.kvRows + j) * D + d]);
            s[j] = dot / sqrt((double)D); mx = std::max(mx, s[j]); keys.push_back(j);
        }
        double sum = 0; for (int j : keys) sum += exp(s[j] - mx);
        for (int d = 0; d < D; ++d) {
            double o = 0; for (int j : keys) o += exp(s[j] - mx) * fromBF16(p.v[((size_t)h * p.kvRows + j) * D + d]);
            o /= sum;
            num += fabs(o - r.out[((size_t)h * p.n + row) * D + d]); den += fabs(o);
        }
        lseWorst = std::max(lseWorst, fabs(mx + log(sum) - r.lse[(size_t)h * p.n + row]));
    }
    *lseError = lseWorst;
    return num / den;
}

int main(int argc, char** argv) {
    void* driver = dlopen("libcuda.so.1", RTLD_NOW);
    encodeTiled = driver ? (EncodeTiled)dlsym(driver, "cuTensorMapEncodeTiled") : nullptr;
    if (!encodeTiled) { fprintf(stderr, "no cuTensorMapEncodeTiled in libcuda.so.1\n"); return 2; }
    cudaDeviceProp prop; CHECK(cudaGetDeviceProperties(&prop, 0));
    printf("D=%d BK=%d stages=%d Q·Kᵀ %s%s, P·V %s on %s (%d SMs)\n", D, BK, STAGES, QK_INT8 ? "int8" : "bf16",
           K_BLOCK_MEAN ? " (K smoothed by block means)" : "", PV_FP8 ? "fp8" : "bf16", prop.name, prop.multiProcessorCount);
    bool ok = true;
    // `speed`: the dense speed case alone (3 launches), for a profiler.
    if (argc > 1 && !strcmp(argv[1], "speed")) {
        Problem p = makeProblem(8, 32768, 0, 1.0, 7);
        Run r = run(p, 1, 3, 50.f);
        printf("  dense N=32768 heads=8: %.3f ms, %.1f TFLOP/s\n", r.ms, 4.0 * 32768.0 * 32768.0 * 8 * D / r.ms * 1e-9);
        return 0;
    }
    struct Case { const char* name; int heads, n, causal; double density; int launches; float drift; };
    Case cases[] = {{"dense", 2, 1024, 0, 1.0, 1, 0.f}, {"causal tail", 2, 1000, 1, 1.0, 1, 0.f},
                    {"random 0.3", 3, 2000, 0, 0.3, 1, 0.f}, {"causal two launches", 2, 1536, 1, 1.0, 2, 0.f},
                    {"random tail three launches", 2, 777, 0, 0.5, 3, 0.f}, {"keys drifting, dense", 2, 4096, 0, 1.0, 1, 3.f},
                    {"keys drifting, causal, 2 launches", 2, 3000, 1, 1.0, 2, 3.f}};
    for (auto& c : cases) {
        Problem p = makeProblem(c.heads, c.n, c.causal, c.density, 1234 + c.n, c.drift);
        Run r = run(p, c.launches, 1, 50.f);
        double lseErr, err = check(p, r, 24, 99, &lseErr);
        // bf16 inputs are the reference's too: what remains is P rounded to bf16 (~2e-3 relative) and fp32 sums;
        // int8 adds Q·Kᵀ's quantization (SageAttention's recipe: ~1e-2 relative on near-uniform attention).
        // fp8 P·V: P and V with 3 mantissa bits (~3% an element, averaging over the keys).
        // Drifting keys cost int8 smoothed by the head's mean more (benchmarks/int8-smoothing.py): its bound there is
        // wider, and the error printed is the comparison with K_BLOCK_MEAN.
        const double int8Bound = c.drift > 0 && !K_BLOCK_MEAN ? 5e-2 : 2e-2;
        bool pass = PV_FP8 ? err < 5e-2 && lseErr < 5e-2 : QK_INT8 ? err < int8Bound && lseErr < 5e-2 : err < 4e-3 && lseErr < 1e-3;
        ok &= pass;
        printf("  %-28s N=%5d heads=%d rel L1 %.2e, LSE max error %.2e  %s\n", c.name, c.n, c.heads, err, lseErr, pass ? "ok" : "FAILED");
    }
    if (argc > 1 && !strcmp(argv[1], "check")) return ok ? 0 : 1;
    // Speed: N = 32768, 8 heads; dense, causal, and random lists at density ~0.1.
    struct Speed { const char* name; int causal; double density; };
    Speed speeds[] = {{"dense", 0, 1.0}, {"causal", 1, 1.0}, {"random 0.1", 0, 0.1}};
    for (auto& s : speeds) {
        Problem p = makeProblem(8, 32768, s.causal, s.density, 7);
        Run r = run(p, 1, 10, 50.f);
        double visits = 0; for (int x : p.rowLen) visits += x;
        double flops = 4.0 * visits * 128 * BK * D;  // real work: blocks computed
        double lseErr, err = check(p, r, 4, 5, &lseErr);
        printf("  speed %-12s N=32768 heads=8: %.3f ms, %.1f TFLOP/s of listed blocks (density %.3f), rel L1 %.2e\n", s.name, r.ms,
               flops / r.ms * 1e-9, visits / (double)p.rowLen.size() / ((32768 + BK - 1) / BK), err);
    }
    return ok ? 0 : 1;
}
