// sparge_attention.cu: the mma.sync kernel (any GPU from sm_80), compiled at run time by NVRTC behind
// sparge_attention_common.cu; see AttentionKernelSource (SpargeCUDA) for what it holds.
#define D HEAD_DIM
#define BK BLOCK_K
#define BQ (NWARPS * 16 * MT)
#define THREADS (NWARPS * 32)
// QK_INT8 (CUDAPrecision.int8): Q and K arrive as int8, Q scaled per row, K smoothed by its head's mean and
// scaled per block (SpargeMmaParams' scales); S = Q·Kᵀ in int32 with mma.m16n8k32; P·V as in 16 bits.
#ifndef QK_INT8
#define QK_INT8 0
#endif
// Bytes of a row of Q and K (one an element in int8, two in 16 bits) and of V.
#if QK_INT8
#define QK_ROW_BYTES D
#else
#define QK_ROW_BYTES (2 * D)
#endif
#define V_ROW_BYTES (2 * D)
// Q·Kᵀ's k-steps, 32 bytes of the rows each: 16 elements of m16n8k16 in 16 bits, 32 of m16n8k32 in int8. Both
// instructions take the same bytes of the same rows in each register of their A and B fragments (PTX ISA,
// "Matrix Fragments for mma.m16n8k16 / m16n8k32"), so one ldmatrix of 16-bit pairs loads either.
#define QK_STEPS (QK_ROW_BYTES / 32)

// The launch's whole argument: the parameters both kernels take, then in int8 where the scales lie
// (AttentionParametersLayoutTests compares the offsets).
struct SpargeMmaParams {
    SpargeAttentionParams p;
#if QK_INT8
    SpargeInt8Scales scales;
#endif
};

// Byte offset of 16-byte chunk c of row r in a swizzled tile of ROW_BYTES-byte rows: the chunk is stored at
// c ^ (r & 7), or in 64-byte rows (int8 at D = 64, two rows a 128-byte line) at c ^ ((r / 2) & 3); either way
// the 8 rows that ldmatrix reads at one chunk lie in 8 different 16-byte bank groups.
template <int ROW_BYTES> __device__ __forceinline__ u32 swizzle(int r, int c) {
    return (u32)(r * ROW_BYTES + ((ROW_BYTES >= 128 ? c ^ (r & 7) : c ^ ((r >> 1) & 3)) << 4));
}

// int8's scores reach the softmax as floats with no conversion, as in the Hopper kernel: the accumulators
// start at SCORE_BIAS = 2^23 + 2^22, and the tensor cores add the int32 products to their bits (0x4B400000),
// so that the sum of D products (|·| ≤ 127²·128 < 2^21) leaves the bits of the float SCORE_BIAS + S exactly.
// A row's maximum subtracts the bias (exactly); the exponent's one FMA a score takes S's scale, its addend
// the scaled bias (exponent_shift).
#if QK_INT8
#define SCORE_BIAS 12582912.f
#else
#define SCORE_BIAS 0.f
#endif

// The PTX of the loads and the tensor cores. (SPARGE_HOST_EMULATION: the tests' host emulation defines these
// itself, as plain C++ over the emulated warp.)
#ifndef SPARGE_HOST_EMULATION
__device__ __forceinline__ void cp_async16(u32 dst, const void* src, int bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" :: "r"(dst), "l"(src), "r"(bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" :: "n"(N)); }

__device__ __forceinline__ void ldmatrix4(u32& r0, u32& r1, u32& r2, u32& r3, u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr));
}
__device__ __forceinline__ void ldmatrix4_trans(u32& r0, u32& r1, u32& r2, u32& r3, u32 addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr));
}

#if QK_INT8
// c (+)= a·b in int32 on the bits of c's floats.
__device__ __forceinline__ void mma_qk(float* c, const u32* a, u32 b0, u32 b1) {
    asm volatile("{ .reg .s32 c<4>;\n"
                 " mov.b32 c0, %0; mov.b32 c1, %1; mov.b32 c2, %2; mov.b32 c3, %3;\n"
                 " mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {c0,c1,c2,c3}, {%4,%5,%6,%7}, {%8,%9}, {c0,c1,c2,c3};\n"
                 " mov.b32 %0, c0; mov.b32 %1, c1; mov.b32 %2, c2; mov.b32 %3, c3; }\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
#else
#if QK_BF16
#define MMA_QK "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"
#else
#define MMA_QK "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32"
#endif
__device__ __forceinline__ void mma_qk(float* c, const u32* a, u32 b0, u32 b1) {
    asm volatile(MMA_QK " {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
#endif
#if PV_BF16
#define MMA_PV "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"
#else
#define MMA_PV "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32"
#endif
__device__ __forceinline__ void mma_pv(float* c, const u32* a, u32 b0, u32 b1) {
    asm volatile(MMA_PV " {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
#endif

// A row's maximum score `a` in log2 units, one unit of a score being `unit`.
__device__ __forceinline__ float scaled_maximum(float a, float unit) {
#if QK_INT8
    return (a - SCORE_BIAS) * unit;
#else
    return a * unit;
#endif
}

// The addend of the exponent's FMA, P = 2^(s·unit + shift): −m, in int8 less the bias's units.
__device__ __forceinline__ float exponent_shift(float m, float unit) {
#if QK_INT8
    return fmaf(-SCORE_BIAS, unit, -m);
#else
    return -m;
#endif
}

// Loads one [BK][ROW_BYTES] tile (rows ROW_BYTES apart) into swizzled shared memory.
template <int ROW_BYTES> __device__ __forceinline__ void load_tile(u32 dst, const unsigned char* src) {
    constexpr int chunks = ROW_BYTES / 16;
#pragma unroll
    for (int n = 0; n < (BK * chunks + THREADS - 1) / THREADS; ++n) {
        int i = threadIdx.x + n * THREADS;
        if ((BK * chunks) % THREADS == 0 || i < BK * chunks) {
            int r = i / chunks, c = i % chunks;
            cp_async16(dst + swizzle<ROW_BYTES>(r, c), src + (u64)r * ROW_BYTES + c * 16, 16);
        }
    }
}


// Each warp owns MT m-tiles of 16 rows (rows warp·16·MT + 16·mt + …): with MT = 2 every K and V fragment read
// from shared memory feeds two MMAs, halving shared-memory traffic per FLOP; Q is then re-read from shared
// memory per k-step instead of held in registers.
extern "C" __global__ void __launch_bounds__(THREADS) sparge_attention(const SpargeMmaParams mp) {
    const SpargeAttentionParams p = mp.p;
    const unsigned char* __restrict__ q = (const unsigned char*)p.q;
    const unsigned char* __restrict__ k = (const unsigned char*)p.k;
    const unsigned char* __restrict__ v = (const unsigned char*)p.v;
    float* __restrict__ oacc = p.oacc;
    f2* __restrict__ ml = p.ml;
    float* __restrict__ out = p.out;
    float* __restrict__ lse = p.lse;
    TileCounters* __restrict__ counters = p.counters;
    const i4* __restrict__ tiles = p.tiles;
    const i4* __restrict__ work = p.work;
    const int* __restrict__ blocks = p.blocks;
    const int rows = p.rows, seqLen = p.seqLen, kvRows = p.kvRows, group = p.group, causal = p.causal;
    const float pvThreshold = p.pvThreshold;
    extern __shared__ __align__(128) unsigned char smem[];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const i4 w = work[blockIdx.x];
    const int tile = w.x, first = w.y, count = w.z;
    const i4 t = tiles[tile];
    const int head = t.x, localRow = t.y, rowCount = t.z, queryStart = t.w;
    const int kvHead = head / group;
    const unsigned char* qg = q + ((u64)head * rows + localRow) * QK_ROW_BYTES;
    const unsigned char* kg = k + (u64)kvHead * kvRows * QK_ROW_BYTES;
    const unsigned char* vg = v + (u64)kvHead * kvRows * V_ROW_BYTES;
    const u32 qs = shared_address(smem);
    const u32 ks = qs + BQ * QK_ROW_BYTES;
    const u32 vs = ks + 2 * BK * QK_ROW_BYTES;
    float* red = (float*)(smem + (BQ + 2 * BK) * QK_ROW_BYTES + 2 * BK * V_ROW_BYTES);

    // Prologue: groups (Q + K0), (V0), (K1); see the wait counts in the loop.
    for (int i = threadIdx.x; i < BQ * (QK_ROW_BYTES / 16); i += THREADS) {
        int r = i / (QK_ROW_BYTES / 16), c = i % (QK_ROW_BYTES / 16);
        bool ok = r < rowCount;
        cp_async16(qs + swizzle<QK_ROW_BYTES>(r, c), ok ? (const void*)(qg + (u64)r * QK_ROW_BYTES + c * 16) : (const void*)qg,
                   ok ? 16 : 0);
    }
    if (count > 0) load_tile<QK_ROW_BYTES>(ks, kg + (u64)blocks[first] * BK * QK_ROW_BYTES);
    cp_async_commit();
    if (count > 0) load_tile<V_ROW_BYTES>(vs, vg + (u64)blocks[first] * BK * V_ROW_BYTES);
    cp_async_commit();
    if (count > 1) load_tile<QK_ROW_BYTES>(ks + BK * QK_ROW_BYTES, kg + (u64)blocks[first + 1] * BK * QK_ROW_BYTES);
    cp_async_commit();

    // State: per m-tile, this thread holds rows g and g+8 (g = lane / 4), columns 2·(lane % 4) + {0, 1} of
    // every 8-wide n-tile. Index [mt][0] is row g, [mt][1] row g+8.
    const int g = lane >> 2, t4 = lane & 3;
    const int warpRow = warp * 16 * MT;
    float o[MT][D / 8][4];
    float m[MT][2], l[MT][2];
    // What one unit of a score is in log2 units, per row: the softmax scale, in int8 times Q's row scale (and
    // per block K's; rows past the tile take 1: their results are not stored).
    float rowUnit[MT][2];
    TileCounters tc = counters[tile];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int r = warpRow + mt * 16 + g + 8 * h;
            const u64 state = (u64)head * rows + localRow + r;
            m[mt][h] = NEG_INF;
            l[mt][h] = 0.f;
            if (tc.started && r < rowCount) {
                f2 st = ml[state];
                m[mt][h] = st.x;
                l[mt][h] = t4 == 0 ? st.y : 0.f;
            }
#pragma unroll
            for (int n = 0; n < D / 8; ++n) {
                f2 a = tc.started && r < rowCount ? *(const f2*)(oacc + state * D + n * 8 + 2 * t4) : f2{0.f, 0.f};
                o[mt][n][2 * h] = a.x;
                o[mt][n][2 * h + 1] = a.y;
            }
#if QK_INT8
            rowUnit[mt][h] = r < rowCount ? p.qScale * mp.scales.qScales[state] : 1.f;
#else
            rowUnit[mt][h] = p.qScale;
#endif
        }
    }
    u32 qf[(MT == 1) ? QK_STEPS : 1][4];

    for (int it = 0; it < count; ++it) {
        const int buf = it & 1;
        const int keyStart = blocks[first + it] * BK;
#if QK_INT8
        const float keyUnit = mp.scales.kScales[(u64)kvHead * (kvRows / BK) + blocks[first + it]];
#else
        const float keyUnit = 1.f;
#endif
        // K_it has landed (two newer groups may be pending: V_it, K_it+1).
        cp_async_wait<2>();
        __syncthreads();
        if (it + 1 < count) load_tile<V_ROW_BYTES>(vs + (buf ^ 1) * BK * V_ROW_BYTES, vg + (u64)blocks[first + it + 1] * BK * V_ROW_BYTES);
        cp_async_commit();
        if (MT == 1 && it == 0) {
#pragma unroll
            for (int kk = 0; kk < QK_STEPS; ++kk) {
                int r = warpRow + (lane & 15), c = kk * 2 + (lane >> 4);
                ldmatrix4(qf[(MT == 1) ? kk : 0][0], qf[(MT == 1) ? kk : 0][1], qf[(MT == 1) ? kk : 0][2],
                          qf[(MT == 1) ? kk : 0][3], qs + swizzle<QK_ROW_BYTES>(r, c));
            }
        }

        // S = Q·Kᵀ for this warp's rows × BK keys; each K fragment serves every m-tile.
        float s[MT][BK / 8][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int n = 0; n < BK / 8; ++n) { s[mt][n][0] = SCORE_BIAS; s[mt][n][1] = SCORE_BIAS; s[mt][n][2] = SCORE_BIAS; s[mt][n][3] = SCORE_BIAS; }
        const u32 kb = ks + buf * BK * QK_ROW_BYTES;
#pragma unroll
        for (int kk = 0; kk < QK_STEPS; ++kk) {
            u32 qa[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                if (MT == 1) {
#pragma unroll
                    for (int x = 0; x < 4; ++x) qa[mt][x] = qf[(MT == 1) ? kk : 0][x];
                } else {
                    int r = warpRow + mt * 16 + (lane & 15), c = kk * 2 + (lane >> 4);
                    ldmatrix4(qa[mt][0], qa[mt][1], qa[mt][2], qa[mt][3], qs + swizzle<QK_ROW_BYTES>(r, c));
                }
            }
#pragma unroll
            for (int np = 0; np < BK / 16; ++np) {
                int r = np * 16 + ((lane >> 4) << 3) + (lane & 7), c = kk * 2 + ((lane >> 3) & 1);
                u32 b0, b1, b2, b3;
                ldmatrix4(b0, b1, b2, b3, kb + swizzle<QK_ROW_BYTES>(r, c));
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    mma_qk(s[mt][2 * np], qa[mt], b0, b1);
                    mma_qk(s[mt][2 * np + 1], qa[mt], b2, b3);
                }
            }
        }

        // Token-level causal mask (diagonal blocks) and keys past the sequence (a partial last block).
        if ((causal && keyStart + BK - 1 > queryStart + warpRow) || keyStart + BK > seqLen) {
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                const int rowA = queryStart + warpRow + mt * 16 + g, rowB = rowA + 8;
#pragma unroll
                for (int n = 0; n < BK / 8; ++n) {
#pragma unroll
                    for (int e = 0; e < 2; ++e) {
                        int key = keyStart + n * 8 + 2 * t4 + e;
                        bool past = key >= seqLen;
                        if (past || (causal && key > rowA)) s[mt][n][e] = NEG_INF;
                        if (past || (causal && key > rowB)) s[mt][n][2 + e] = NEG_INF;
                    }
                }
            }
        }

        // Row maxima in log2 units, and this warp's share of Δ for the λ rule.
        float mx[MT][2], unit[MT][2];
        float rise = NEG_INF;
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
            float a = NEG_INF, b = NEG_INF;
#pragma unroll
            for (int n = 0; n < BK / 8; ++n) {
                a = fmaxf(a, fmaxf(s[mt][n][0], s[mt][n][1]));
                b = fmaxf(b, fmaxf(s[mt][n][2], s[mt][n][3]));
            }
            a = fmaxf(a, __shfl_xor_sync(0xffffffff, a, 1));
            a = fmaxf(a, __shfl_xor_sync(0xffffffff, a, 2));
            b = fmaxf(b, __shfl_xor_sync(0xffffffff, b, 1));
            b = fmaxf(b, __shfl_xor_sync(0xffffffff, b, 2));
            unit[mt][0] = rowUnit[mt][0] * keyUnit;
            unit[mt][1] = rowUnit[mt][1] * keyUnit;
            mx[mt][0] = scaled_maximum(a, unit[mt][0]);
            mx[mt][1] = scaled_maximum(b, unit[mt][1]);
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int r = warpRow + mt * 16 + g + 8 * h;
                if (r < rowCount && mx[mt][h] != NEG_INF) rise = fmaxf(rise, mx[mt][h] - m[mt][h]);
            }
        }
        if (p.lambda) {  // the block's Δ only where the λ rule runs (the same for every thread)
            rise = fmaxf(rise, __shfl_xor_sync(0xffffffff, rise, 4));
            rise = fmaxf(rise, __shfl_xor_sync(0xffffffff, rise, 8));
            rise = fmaxf(rise, __shfl_xor_sync(0xffffffff, rise, 16));
            if (lane == 0) red[buf * NWARPS + warp] = rise;
        }

        // V_it has landed (two newer groups may be pending: K_it+1, V_it+1); every warp is done with K_it.
        cp_async_wait<2>();
        __syncthreads();
        if (it + 2 < count) load_tile<QK_ROW_BYTES>(ks + buf * BK * QK_ROW_BYTES, kg + (u64)blocks[first + it + 2] * BK * QK_ROW_BYTES);
        cp_async_commit();

        tc.visited += 1;
        if (p.lambda && tc.computed > 0) {
            float delta = NEG_INF;
#pragma unroll
            for (int i = 0; i < NWARPS; ++i) delta = fmaxf(delta, red[buf * NWARPS + i]);
            if (!(delta + pvThreshold > 0.f)) {
                tc.skipped += 1;
                continue;
            }
        }
        tc.computed += 1;

        // Online softmax: m ← max(m, rowmax), α = 2^(m_prev − m), P = 2^(S·unit − m), l ← α·l + Σ P.
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const float mn = fmaxf(m[mt][h], mx[mt][h]);
                const float sh = mn == NEG_INF ? 0.f : mn;
                const float alpha = fast_exp2(m[mt][h] - sh);
                const float u = unit[mt][h], shift = exponent_shift(sh, u);
                m[mt][h] = mn;
                float sum = 0.f;
#pragma unroll
                for (int n = 0; n < BK / 8; ++n) {
                    s[mt][n][2 * h] = fast_exp2(fmaf(s[mt][n][2 * h], u, shift));
                    s[mt][n][2 * h + 1] = fast_exp2(fmaf(s[mt][n][2 * h + 1], u, shift));
                    sum += s[mt][n][2 * h] + s[mt][n][2 * h + 1];
                }
                l[mt][h] = fmaf(l[mt][h], alpha, sum);
#pragma unroll
                for (int n = 0; n < D / 8; ++n) {
                    o[mt][n][2 * h] *= alpha;
                    o[mt][n][2 * h + 1] *= alpha;
                }
            }
        }

        // O += P·V: P from the score registers (the accumulator layout of m16n8 is the A layout of m16k16);
        // each V fragment serves every m-tile.
        const u32 vb = vs + buf * BK * V_ROW_BYTES;
#pragma unroll
        for (int kk = 0; kk < BK / 16; ++kk) {
            u32 a[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                a[mt][0] = pack_pv(s[mt][2 * kk][0], s[mt][2 * kk][1]);
                a[mt][1] = pack_pv(s[mt][2 * kk][2], s[mt][2 * kk][3]);
                a[mt][2] = pack_pv(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
                a[mt][3] = pack_pv(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
            }
#pragma unroll
            for (int dp = 0; dp < D / 16; ++dp) {
                int r = kk * 16 + (((lane >> 3) & 1) << 3) + (lane & 7), c = dp * 2 + (lane >> 4);
                u32 b0, b1, b2, b3;
                ldmatrix4_trans(b0, b1, b2, b3, vb + swizzle<V_ROW_BYTES>(r, c));
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    mma_pv(o[mt][2 * dp], a[mt], b0, b1);
                    mma_pv(o[mt][2 * dp + 1], a[mt], b2, b3);
                }
            }
        }
    }
    cp_async_wait<0>();

    // Row sums were kept per thread (α is the same across a row's four threads): add them up, then store.
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            float sum = l[mt][h];
            sum += __shfl_xor_sync(0xffffffff, sum, 1);
            sum += __shfl_xor_sync(0xffffffff, sum, 2);
            const int r = warpRow + mt * 16 + g + 8 * h;
            if (r < rowCount && out) {
                // The tile's last launch: O / l (0 where l = 0) and the LSE, as sparge_finish.
                const u64 row = (u64)head * rows + localRow + r;
                const float inv = sum > 0.f ? 1.f / sum : 0.f;
#pragma unroll
                for (int n = 0; n < D / 8; ++n)
                    *(f2*)(out + row * D + n * 8 + 2 * t4) = f2{o[mt][n][2 * h] * inv, o[mt][n][2 * h + 1] * inv};
                if (t4 == 0) {
                    float natural = (m[mt][h] + fast_log2(sum)) * 0.69314718055994531f;
#if QK_INT8
                    natural += mp.scales.rowShifts[row];  // the q·μ that smoothing K took from every score
#endif
                    lse[row] = sum > 0.f ? natural : NEG_INF;
                }
            } else if (r < rowCount) {
                const u64 state = (u64)head * rows + localRow + r;
#pragma unroll
                for (int n = 0; n < D / 8; ++n)
                    *(f2*)(oacc + state * D + n * 8 + 2 * t4) = f2{o[mt][n][2 * h], o[mt][n][2 * h + 1]};
                if (t4 == 0) ml[state] = f2{m[mt][h], sum};
            }
        }
    }
    if (threadIdx.x == 0) {
        tc.started = 1;
        counters[tile] = tc;
    }
}

// out = oacc / l (0 where l = 0), lse = (m + log2 l)·ln 2 + shift (−inf where l = 0; shifts: int8's q·μ per
// row, or null); one thread per element.
extern "C" __global__ void sparge_finish(const float* __restrict__ oacc, const f2* __restrict__ ml,
                                         float* __restrict__ out, float* __restrict__ lse, long long totalRows,
                                         const float* __restrict__ shifts) {
    // Four elements a thread (D is a multiple of 4, so they share a row), in 16-byte accesses.
    long long i = ((long long)blockIdx.x * blockDim.x + threadIdx.x) * 4;
    if (i >= totalRows * D) return;
    long long row = i / D;
    f2 s = ml[row];
    float inv = s.y > 0.f ? 1.f / s.y : 0.f;
    f4 o = *(const f4*)(oacc + i);
    o.x *= inv; o.y *= inv; o.z *= inv; o.w *= inv;
    *(f4*)(out + i) = o;
    if (i % D == 0) lse[row] = s.y > 0.f ? (s.x + fast_log2(s.y)) * 0.69314718055994531f + (shifts ? shifts[row] : 0.f) : NEG_INF;
}

// Places staged key/value blocks at their rows: staging holds, per entry, BK rows of K then BK rows of V;
// entries are (kv head, key block).
extern "C" __global__ void sparge_scatter(const u4* __restrict__ staging, u4* __restrict__ k,
                                          u4* __restrict__ v, const i2* __restrict__ entries, int kvRows) {
    const i2 e = entries[blockIdx.x];
    const int per = BK * D / 8;
    const u4* src = staging + (u64)blockIdx.x * 2 * per;
    const u64 dst = ((u64)e.x * kvRows + (u64)e.y * BK) * D / 8;
    for (int i = threadIdx.x; i < per; i += blockDim.x) {
        k[dst + i] = src[i];
        v[dst + i] = src[per + i];
    }
}
