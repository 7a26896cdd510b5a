// sparge_attention.cu: the mma.sync kernel (any GPU from sm_80), compiled at run time by NVRTC behind
// sparge_attention_common.cu; see AttentionKernelSource (SpargeCUDA) for what it holds.
#define D HEAD_DIM
#define BK BLOCK_K
#define BQ (NWARPS * 16 * MT)
#define THREADS (NWARPS * 32)
#define CHUNKS (D / 8)

// Byte offset of 16-byte chunk c of row r in a swizzled [rows][D] tile of 16-bit elements.
__device__ __forceinline__ u32 swz(int r, int c) { return (u32)(r * D * 2 + ((c ^ (r & 7)) << 4)); }

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

#if QK_BF16
#define MMA_QK "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"
#else
#define MMA_QK "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32"
#endif
#if PV_BF16
#define MMA_PV "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"
#else
#define MMA_PV "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32"
#endif

__device__ __forceinline__ void mma_qk(float* c, const u32* a, u32 b0, u32 b1) {
    asm volatile(MMA_QK " {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void mma_pv(float* c, const u32* a, u32 b0, u32 b1) {
    asm volatile(MMA_PV " {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}



// Loads one [BK][D] tile of 16-bit rows (row stride D) into swizzled shared memory.
__device__ __forceinline__ void load_kv_tile(u32 dst, const u16* src) {
#pragma unroll
    for (int n = 0; n < (BK * CHUNKS + THREADS - 1) / THREADS; ++n) {
        int i = threadIdx.x + n * THREADS;
        if ((BK * CHUNKS) % THREADS == 0 || i < BK * CHUNKS) {
            int r = i / CHUNKS, c = i % CHUNKS;
            cp_async16(dst + swz(r, c), src + (u64)r * D + c * 8, 16);
        }
    }
}


// Each warp owns MT m-tiles of 16 rows (rows warp·16·MT + 16·mt + …): with MT = 2 every K and V fragment read
// from shared memory feeds two MMAs, halving shared-memory traffic per FLOP; Q is then re-read from shared
// memory per k-step instead of held in registers.
extern "C" __global__ void __launch_bounds__(THREADS) sparge_attention(const SpargeAttentionParams p) {
    const u16* __restrict__ q = p.q;
    const u16* __restrict__ k = p.k;
    const u16* __restrict__ v = p.v;
    float* __restrict__ oacc = p.oacc;
    f2* __restrict__ ml = p.ml;
    float* __restrict__ out = p.out;
    float* __restrict__ lse = p.lse;
    TileCounters* __restrict__ counters = p.counters;
    const i4* __restrict__ tiles = p.tiles;
    const i4* __restrict__ work = p.work;
    const int* __restrict__ blocks = p.blocks;
    const int rows = p.rows, seqLen = p.seqLen, kvRows = p.kvRows, group = p.group, causal = p.causal;
    const float qScale = p.qScale, pvThreshold = p.pvThreshold;
    extern __shared__ __align__(128) unsigned char smem[];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const i4 w = work[blockIdx.x];
    const int tile = w.x, first = w.y, count = w.z;
    const i4 t = tiles[tile];
    const int head = t.x, localRow = t.y, rowCount = t.z, queryStart = t.w;
    const int kvHead = head / group;
    const u16* qg = q + ((u64)head * rows + localRow) * D;
    const u16* kg = k + (u64)kvHead * kvRows * D;
    const u16* vg = v + (u64)kvHead * kvRows * D;
    const u32 qs = shared_address(smem);
    const u32 ks = qs + BQ * D * 2;
    const u32 vs = ks + 2 * BK * D * 2;
    float* red = (float*)(smem + (BQ + 4 * BK) * D * 2);

    // Prologue: groups (Q + K0), (V0), (K1); see the wait counts in the loop.
    for (int i = threadIdx.x; i < BQ * CHUNKS; i += THREADS) {
        int r = i / CHUNKS, c = i % CHUNKS;
        bool ok = r < rowCount;
        cp_async16(qs + swz(r, c), ok ? (const void*)(qg + (u64)r * D + c * 8) : (const void*)qg, ok ? 16 : 0);
    }
    if (count > 0) load_kv_tile(ks, kg + (u64)blocks[first] * BK * D);
    cp_async_commit();
    if (count > 0) load_kv_tile(vs, vg + (u64)blocks[first] * BK * D);
    cp_async_commit();
    if (count > 1) load_kv_tile(ks + BK * D * 2, kg + (u64)blocks[first + 1] * BK * D);
    cp_async_commit();

    // State: per m-tile, this thread holds rows g and g+8 (g = lane / 4), columns 2·(lane % 4) + {0, 1} of
    // every 8-wide n-tile. Index [mt][0] is row g, [mt][1] row g+8.
    const int g = lane >> 2, t4 = lane & 3;
    const int warpRow = warp * 16 * MT;
    float o[MT][D / 8][4];
    float m[MT][2], l[MT][2];
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
        }
    }
    u32 qf[(MT == 1) ? D / 16 : 1][4];

    for (int it = 0; it < count; ++it) {
        const int buf = it & 1;
        const int keyStart = blocks[first + it] * BK;
        // K_it has landed (two newer groups may be pending: V_it, K_it+1).
        cp_async_wait<2>();
        __syncthreads();
        if (it + 1 < count) load_kv_tile(vs + (buf ^ 1) * BK * D * 2, vg + (u64)blocks[first + it + 1] * BK * D);
        cp_async_commit();
        if (MT == 1 && it == 0) {
#pragma unroll
            for (int kk = 0; kk < D / 16; ++kk) {
                int r = warpRow + (lane & 15), c = kk * 2 + (lane >> 4);
                ldmatrix4(qf[(MT == 1) ? kk : 0][0], qf[(MT == 1) ? kk : 0][1], qf[(MT == 1) ? kk : 0][2],
                          qf[(MT == 1) ? kk : 0][3], qs + swz(r, c));
            }
        }

        // S = Q·Kᵀ for this warp's rows × BK keys; each K fragment serves every m-tile.
        float s[MT][BK / 8][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int n = 0; n < BK / 8; ++n) { s[mt][n][0] = 0.f; s[mt][n][1] = 0.f; s[mt][n][2] = 0.f; s[mt][n][3] = 0.f; }
        const u32 kb = ks + buf * BK * D * 2;
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
            u32 qa[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                if (MT == 1) {
#pragma unroll
                    for (int x = 0; x < 4; ++x) qa[mt][x] = qf[(MT == 1) ? kk : 0][x];
                } else {
                    int r = warpRow + mt * 16 + (lane & 15), c = kk * 2 + (lane >> 4);
                    ldmatrix4(qa[mt][0], qa[mt][1], qa[mt][2], qa[mt][3], qs + swz(r, c));
                }
            }
#pragma unroll
            for (int np = 0; np < BK / 16; ++np) {
                int r = np * 16 + ((lane >> 4) << 3) + (lane & 7), c = kk * 2 + ((lane >> 3) & 1);
                u32 b0, b1, b2, b3;
                ldmatrix4(b0, b1, b2, b3, kb + swz(r, c));
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
        float mx[MT][2];
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
            mx[mt][0] = a * qScale;
            mx[mt][1] = b * qScale;
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int r = warpRow + mt * 16 + g + 8 * h;
                if (r < rowCount && mx[mt][h] != NEG_INF) rise = fmaxf(rise, mx[mt][h] - m[mt][h]);
            }
        }
        rise = fmaxf(rise, __shfl_xor_sync(0xffffffff, rise, 4));
        rise = fmaxf(rise, __shfl_xor_sync(0xffffffff, rise, 8));
        rise = fmaxf(rise, __shfl_xor_sync(0xffffffff, rise, 16));
        if (lane == 0) red[buf * NWARPS + warp] = rise;

        // V_it has landed (two newer groups may be pending: K_it+1, V_it+1); every warp is done with K_it.
        cp_async_wait<2>();
        __syncthreads();
        if (it + 2 < count) load_kv_tile(ks + buf * BK * D * 2, kg + (u64)blocks[first + it + 2] * BK * D);
        cp_async_commit();

        float delta = NEG_INF;
#pragma unroll
        for (int i = 0; i < NWARPS; ++i) delta = fmaxf(delta, red[buf * NWARPS + i]);
        tc.visited += 1;
        if (tc.computed > 0 && !(delta + pvThreshold > 0.f)) {
            tc.skipped += 1;
            continue;
        }
        tc.computed += 1;

        // Online softmax: m ← max(m, rowmax), α = 2^(m_prev − m), P = 2^(S·scale − m), l ← α·l + Σ P.
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const float mn = fmaxf(m[mt][h], mx[mt][h]);
                const float sh = mn == NEG_INF ? 0.f : mn;
                const float alpha = fast_exp2(m[mt][h] - sh);
                m[mt][h] = mn;
                float sum = 0.f;
#pragma unroll
                for (int n = 0; n < BK / 8; ++n) {
                    s[mt][n][2 * h] = fast_exp2(fmaf(s[mt][n][2 * h], qScale, -sh));
                    s[mt][n][2 * h + 1] = fast_exp2(fmaf(s[mt][n][2 * h + 1], qScale, -sh));
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
        const u32 vb = vs + buf * BK * D * 2;
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
                ldmatrix4_trans(b0, b1, b2, b3, vb + swz(r, c));
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
                if (t4 == 0) lse[row] = sum > 0.f ? (m[mt][h] + fast_log2(sum)) * 0.69314718055994531f : NEG_INF;
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
