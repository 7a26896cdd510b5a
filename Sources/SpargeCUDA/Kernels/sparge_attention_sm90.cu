// sparge_attention_sm90.cu: the Hopper kernel (sm_90a: wgmma, TMA, mbarriers, setmaxnreg), compiled at run time
// by NVRTC behind sparge_attention_common.cu; see AttentionKernelSource (SpargeCUDA) for what it holds.
#define D HEAD_DIM
#define BK BLOCK_K
#define STAGES KV_STAGES
#define CONSUMERS 2
#define THREADS (128 * (CONSUMERS + 1))
#define HALVES (D / 64)
#if QK_BF16
#define QK_TYPE "bf16"
#else
#define QK_TYPE "f16"
#endif
#if PV_BF16
#define PV_TYPE "bf16"
#else
#define PV_TYPE "f16"
#endif

// A CUtensorMap: 128 opaque bytes that cuTensorMapEncodeTiled fills on the host.
struct alignas(64) TensorMap { u64 opaque[16]; };

// The launch's whole argument: the tensor maps of Q `[Hq·rows][D]`, K and V `[Hkv·kvRows][D]` (boxes of 64
// columns × 64 rows for Q, × BK rows for K and V, 128-byte swizzle), then what the mma.sync kernel takes.
// work holds two entries per CTA, one per consumer warpgroup (tile −1: none); the two lists must agree on
// the shorter one's length (they are one mask row cut at two causal diagonals), and K/V follow the longer.
struct SpargeHopperParams {
    TensorMap qMap, kMap, vMap;
    SpargeAttentionParams p;
};

// Shared memory, from a 1024-byte aligned base: Q of each consumer [HALVES][64 rows][128 B], then STAGES K and
// STAGES V tiles [HALVES][BK rows][128 B] (TMA's 128-byte swizzle: 16-byte chunk c of row r at c ^ (r % 8),
// the layout wgmma reads), then the mbarriers and the λ reduction.
#define Q_BYTES (64 * D * 2)
#define KV_BYTES (BK * D * 2)
#define K_OFFSET (CONSUMERS * Q_BYTES)
#define V_OFFSET (K_OFFSET + STAGES * KV_BYTES)
#define BAR_OFFSET (V_OFFSET + STAGES * KV_BYTES)
#define RED_OFFSET (BAR_OFFSET + 8 * (CONSUMERS + 4 * STAGES))
// What a launch asks for: the above, the λ reduction (two buffers of one float per consumer warp) and 1 KiB to
// align the base.
#define SHARED_BYTES (RED_OFFSET + 2 * 4 * CONSUMERS * 4 + 1024)

__device__ __forceinline__ void mbar_init(u32 bar, u32 count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" :: "r"(bar), "r"(count));
}
__device__ __forceinline__ void mbar_expect_bytes(u32 bar, u32 bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" :: "r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(u32 bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" :: "r"(bar) : "memory");
}
// Waits until the phase of parity `parity` has completed.
__device__ __forceinline__ void mbar_wait(u32 bar, u32 parity) {
    asm volatile("{\n .reg .pred done;\n WAIT:\n"
                 " mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
                 " @!done bra WAIT;\n}\n" :: "r"(bar), "r"(parity) : "memory");
}
// One box of a 2-D tensor map (x: column, y: row) into shared memory, completing on `bar`.
__device__ __forceinline__ void tma_load(u32 dst, const TensorMap* map, int x, int y, u32 bar) {
    asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n"
                 :: "r"(dst), "l"((u64)map), "r"(x), "r"(y), "r"(bar) : "memory");
}
// Consumer warpgroup `w`'s own barrier (ids 1 and 2; 0 is __syncthreads).
__device__ __forceinline__ void warpgroup_sync(int w) {
    asm volatile("bar.sync %0, 128;\n" :: "r"(w + 1) : "memory");
}

// A wgmma shared-memory descriptor for a 128-byte swizzled operand at `addr` (1024-byte aligned pattern):
// lead: bytes between 64-element chunks of the MN dimension (MN-major operands; ignored for K-major),
// stride: bytes between groups of 8 rows (K-major) or of 8 K-rows (MN-major): 1024 here.
__device__ __forceinline__ u64 smem_descriptor(u32 addr, u32 lead) {
    return (u64)((addr & 0x3FFFF) >> 4) | ((u64)(lead >> 4) << 16) | ((u64)(1024 >> 4) << 32) | (1ull << 62);
}
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_wait() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }
// Keeps the compiler from moving accesses of accumulator registers across the asynchronous wgmma.
template <int N> __device__ __forceinline__ void fence_registers(float* r) {
#pragma unroll
    for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i]) :: "memory");
}

// D[64×64] (+)= A·Bᵀ, A and B K-major in shared memory (descriptors); scaleD 0 overwrites D.
__device__ __forceinline__ void wgmma_ss_n64(float* d, u64 a, u64 b, int scaleD) {
    asm volatile("{ .reg .pred p; setp.ne.b32 p, %34, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32." QK_TYPE "." QK_TYPE " {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0; }\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                 : "l"(a), "l"(b), "r"(scaleD));
}
// D[64×64] += A·B, A (16-bit pairs) in registers, B MN-major (transposed) in shared memory.
__device__ __forceinline__ void wgmma_rs_n64(float* d, const u32* a, u64 b) {
    asm volatile("{ .reg .pred p; setp.ne.b32 p, 1, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32." PV_TYPE "." PV_TYPE " {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, 1; }\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));
}

// D[64×128] (+)= A·Bᵀ, A and B K-major in shared memory (descriptors); scaleD 0 overwrites D.
__device__ __forceinline__ void wgmma_ss_n128(float* d, u64 a, u64 b, int scaleD) {
    asm volatile("{ .reg .pred p; setp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32." QK_TYPE "." QK_TYPE " {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0; }\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
                 : "l"(a), "l"(b), "r"(scaleD));
}
// D[64×128] += A·B, A (16-bit pairs) in registers, B MN-major (transposed) in shared memory.
__device__ __forceinline__ void wgmma_rs_n128(float* d, const u32* a, u64 b) {
    asm volatile("{ .reg .pred p; setp.ne.b32 p, 1, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32." PV_TYPE "." PV_TYPE " {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, 1; }\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));
}

#if BK == 64
#define wgmma_scores wgmma_ss_n64
#else
#define wgmma_scores wgmma_ss_n128
#endif
#if D == 64
#define wgmma_values wgmma_rs_n64
#else
#define wgmma_values wgmma_rs_n128
#endif

// The producer: one thread loads each consumer's Q, then K and V of every listed block through the STAGES
// ring of buffers, each as soon as both consumers have released the buffer's last use.
__device__ __forceinline__ void produce(const SpargeHopperParams& hp, u32 base, const i4* work, int steps, const int* list) {
    const SpargeAttentionParams& p = hp.p;
    const u32 qFull = base + BAR_OFFSET, kFull = qFull + 8 * CONSUMERS, kEmpty = kFull + 8 * STAGES;
    const u32 vFull = kEmpty + 8 * STAGES, vEmpty = vFull + 8 * STAGES;
    int kvHead = 0;
    for (int c = 0; c < CONSUMERS; ++c) {
        if (work[c].x < 0 || work[c].z == 0) continue;
        const i4 t = p.tiles[work[c].x];
        kvHead = t.x / p.group;
        mbar_expect_bytes(qFull + 8 * c, Q_BYTES);
        for (int h = 0; h < HALVES; ++h)
            tma_load(base + c * Q_BYTES + h * 64 * 128, &hp.qMap, h * 64, t.x * p.rows + t.y, qFull + 8 * c);
    }
    for (int it = 0; it < steps; ++it) {
        const int s = it % STAGES, use = it / STAGES;
        const int row = kvHead * p.kvRows + list[it] * BK;
        if (use > 0) mbar_wait(kEmpty + 8 * s, (use - 1) & 1);
        mbar_expect_bytes(kFull + 8 * s, KV_BYTES);
        for (int h = 0; h < HALVES; ++h)
            tma_load(base + K_OFFSET + s * KV_BYTES + h * BK * 128, &hp.kMap, h * 64, row, kFull + 8 * s);
        if (use > 0) mbar_wait(vEmpty + 8 * s, (use - 1) & 1);
        mbar_expect_bytes(vFull + 8 * s, KV_BYTES);
        for (int h = 0; h < HALVES; ++h)
            tma_load(base + V_OFFSET + s * KV_BYTES + h * BK * 128, &hp.vMap, h * 64, row, vFull + 8 * s);
    }
}

// A consumer warpgroup: 64 query rows of one tile (or none: it then only releases buffers). Warp `warp` owns
// rows 16·warp + g and 16·warp + g + 8 (g = lane / 4) of the tile, columns 8j + 2·(lane % 4) + {0, 1} of
// every accumulator: the wgmma accumulator layout, which is also its register-A layout for P.
__device__ __forceinline__ void consume(const SpargeAttentionParams& p, u32 base, unsigned char* smem, int c,
                                        const i4 work, int steps, const int* list) {
    const u32 qFull = base + BAR_OFFSET, kFull = qFull + 8 * CONSUMERS, kEmpty = kFull + 8 * STAGES;
    const u32 vFull = kEmpty + 8 * STAGES, vEmpty = vFull + 8 * STAGES;
    float* red = (float*)(smem + RED_OFFSET);
    const int tid = threadIdx.x % 128, warp = tid / 32, lane = tid % 32, g = lane / 4, t4 = lane % 4;
    const int tileIndex = work.x, mine = tileIndex >= 0 ? work.z : 0;
    const i4 t = tileIndex >= 0 ? p.tiles[tileIndex] : i4{0, 0, 0, 0};
    const int head = t.x, localRow = t.y, rowCount = t.z, queryStart = t.w;
    const int warpRow = 16 * warp;
    TileCounters tc = tileIndex >= 0 ? p.counters[tileIndex] : TileCounters{0, 0, 0, 0};

    float o[D / 2], m[2], l[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const int r = warpRow + g + 8 * h;
        const u64 state = (u64)head * p.rows + localRow + r;
        const bool resume = tc.started && r < rowCount;
        m[h] = NEG_INF;
        l[h] = 0.f;
        if (resume) {
            f2 st = p.ml[state];
            m[h] = st.x;
            l[h] = t4 == 0 ? st.y : 0.f;
        }
#pragma unroll
        for (int n = 0; n < D / 8; ++n) {
            f2 a = resume ? *(const f2*)(p.oacc + state * D + n * 8 + 2 * t4) : f2{0.f, 0.f};
            o[4 * n + 2 * h] = a.x;
            o[4 * n + 2 * h + 1] = a.y;
        }
    }
    if (mine > 0) mbar_wait(qFull + 8 * c, 0);
    const u32 qBase = base + c * Q_BYTES;

    for (int it = 0; it < steps; ++it) {
        const int s = it % STAGES;
        const u32 phase = (it / STAGES) & 1;
        const bool active = it < mine;  // the same for the whole warpgroup
        float sc[BK / 2];
        mbar_wait(kFull + 8 * s, phase);
        if (active) {
            // S = Q·Kᵀ: D/16 steps of k16; the 16-element step within a 64-element swizzle row is a 32-byte
            // move of the start address (the swizzle is applied to the address the hardware forms).
            const u32 kBase = base + K_OFFSET + s * KV_BYTES;
            wgmma_fence();
#pragma unroll
            for (int kk = 0; kk < D / 16; ++kk) {
                const u64 a = smem_descriptor(qBase + (kk / 4) * 64 * 128 + (kk % 4) * 32, 0);
                const u64 b = smem_descriptor(kBase + (kk / 4) * BK * 128 + (kk % 4) * 32, 0);
                wgmma_scores(sc, a, b, kk > 0);
            }
            wgmma_commit();
            wgmma_wait();
            fence_registers<BK / 2>(sc);
        }
        __syncwarp();
        if (lane == 0) mbar_arrive(kEmpty + 8 * s);

        bool compute = false;
        if (active) {
            const int keyStart = list[it] * BK;
            // Token-level causal mask (diagonal blocks) and keys past the sequence (a partial last block).
            if ((p.causal && keyStart + BK - 1 > queryStart + warpRow) || keyStart + BK > p.seqLen) {
                const int rowA = queryStart + warpRow + g, rowB = rowA + 8;
#pragma unroll
                for (int n = 0; n < BK / 8; ++n) {
#pragma unroll
                    for (int e = 0; e < 2; ++e) {
                        const int key = keyStart + n * 8 + 2 * t4 + e;
                        const bool past = key >= p.seqLen;
                        if (past || (p.causal && key > rowA)) sc[4 * n + e] = NEG_INF;
                        if (past || (p.causal && key > rowB)) sc[4 * n + 2 + e] = NEG_INF;
                    }
                }
            }
            // Row maxima in log2 units, and the warpgroup's Δ for the λ rule.
            float mx[2], rise = NEG_INF;
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                float a = NEG_INF;
#pragma unroll
                for (int n = 0; n < BK / 8; ++n) a = fmaxf(a, fmaxf(sc[4 * n + 2 * h], sc[4 * n + 2 * h + 1]));
                a = fmaxf(a, __shfl_xor_sync(0xffffffff, a, 1));
                a = fmaxf(a, __shfl_xor_sync(0xffffffff, a, 2));
                mx[h] = a * p.qScale;
                if (warpRow + g + 8 * h < rowCount && mx[h] != NEG_INF) rise = fmaxf(rise, mx[h] - m[h]);
            }
            rise = fmaxf(rise, __shfl_xor_sync(0xffffffff, rise, 4));
            rise = fmaxf(rise, __shfl_xor_sync(0xffffffff, rise, 8));
            rise = fmaxf(rise, __shfl_xor_sync(0xffffffff, rise, 16));
            float* shared = red + (it & 1) * 4 * CONSUMERS + 4 * c;
            if (lane == 0) shared[warp] = rise;
            warpgroup_sync(c);
            const float delta = fmaxf(fmaxf(shared[0], shared[1]), fmaxf(shared[2], shared[3]));
            tc.visited += 1;
            compute = tc.computed == 0 || delta + p.pvThreshold > 0.f;
            if (compute) tc.computed += 1; else tc.skipped += 1;

            if (compute) {
                // Online softmax: m ← max(m, rowmax), α = 2^(m_prev − m), P = 2^(S·scale − m), l ← α·l + Σ P.
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    const float mn = fmaxf(m[h], mx[h]);
                    const float sh = mn == NEG_INF ? 0.f : mn;
                    const float alpha = fast_exp2(m[h] - sh);
                    m[h] = mn;
                    float sum = 0.f;
#pragma unroll
                    for (int n = 0; n < BK / 8; ++n) {
                        sc[4 * n + 2 * h] = fast_exp2(fmaf(sc[4 * n + 2 * h], p.qScale, -sh));
                        sc[4 * n + 2 * h + 1] = fast_exp2(fmaf(sc[4 * n + 2 * h + 1], p.qScale, -sh));
                        sum += sc[4 * n + 2 * h] + sc[4 * n + 2 * h + 1];
                    }
                    l[h] = fmaf(l[h], alpha, sum);
#pragma unroll
                    for (int n = 0; n < D / 8; ++n) {
                        o[4 * n + 2 * h] *= alpha;
                        o[4 * n + 2 * h + 1] *= alpha;
                    }
                }
            }
        }
        mbar_wait(vFull + 8 * s, phase);
        if (compute) {
            // O += P·V: P from the score registers, V (keys × D, D contiguous) read transposed.
            u32 pa[BK / 16][4];
#pragma unroll
            for (int kk = 0; kk < BK / 16; ++kk) {
                pa[kk][0] = pack_pv(sc[8 * kk], sc[8 * kk + 1]);
                pa[kk][1] = pack_pv(sc[8 * kk + 2], sc[8 * kk + 3]);
                pa[kk][2] = pack_pv(sc[8 * kk + 4], sc[8 * kk + 5]);
                pa[kk][3] = pack_pv(sc[8 * kk + 6], sc[8 * kk + 7]);
            }
            const u32 vBase = base + V_OFFSET + s * KV_BYTES;
            wgmma_fence();
#pragma unroll
            for (int kk = 0; kk < BK / 16; ++kk)
                wgmma_values(o, pa[kk], smem_descriptor(vBase + kk * 16 * 128, BK * 128));
            wgmma_commit();
            wgmma_wait();
            fence_registers<D / 2>(o);
        }
        __syncwarp();
        if (lane == 0) mbar_arrive(vEmpty + 8 * s);
    }
    if (tileIndex < 0) return;

    // Row sums were kept per thread (α is the same across a row's four threads): add them up, then store.
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        float sum = l[h];
        sum += __shfl_xor_sync(0xffffffff, sum, 1);
        sum += __shfl_xor_sync(0xffffffff, sum, 2);
        const int r = warpRow + g + 8 * h;
        if (r >= rowCount) continue;
        const u64 row = (u64)head * p.rows + localRow + r;
        if (p.out) {
            // The tile's last launch: O / l (0 where l = 0) and the LSE.
            const float inv = sum > 0.f ? 1.f / sum : 0.f;
#pragma unroll
            for (int n = 0; n < D / 8; ++n)
                *(f2*)(p.out + row * D + n * 8 + 2 * t4) = f2{o[4 * n + 2 * h] * inv, o[4 * n + 2 * h + 1] * inv};
            if (t4 == 0) p.lse[row] = sum > 0.f ? (m[h] + fast_log2(sum)) * 0.69314718055994531f : NEG_INF;
        } else {
#pragma unroll
            for (int n = 0; n < D / 8; ++n)
                *(f2*)(p.oacc + row * D + n * 8 + 2 * t4) = f2{o[4 * n + 2 * h], o[4 * n + 2 * h + 1]};
            if (t4 == 0) p.ml[row] = f2{m[h], sum};
        }
    }
    if (tid == 0) {
        tc.started = 1;
        p.counters[tileIndex] = tc;
    }
}

// One CTA: a producer warpgroup and CONSUMERS consumer warpgroups, each consumer one compute tile of ≤ 64
// rows; the two tiles share the K/V blocks the producer brings (their lists agree on the shorter's length).
extern "C" __global__ void __launch_bounds__(THREADS, 1) sparge_attention_sm90(const __grid_constant__ SpargeHopperParams hp) {
    extern __shared__ unsigned char smemRaw[];
    const u32 raw = shared_address(smemRaw);
    const u32 base = (raw + 1023) & ~1023u;
    unsigned char* smem = smemRaw + (base - raw);
    const i4* work = hp.p.work + CONSUMERS * blockIdx.x;
    int steps = 0, longest = 0;
    for (int c = 0; c < CONSUMERS; ++c) {
        const int n = work[c].x >= 0 ? work[c].z : 0;
        if (n > steps) { steps = n; longest = c; }
    }
    const int* list = hp.p.blocks + work[longest].y;
    if (threadIdx.x == 0) {
        const u32 bars = base + BAR_OFFSET;
        for (int i = 0; i < CONSUMERS; ++i) mbar_init(bars + 8 * i, 1);
        for (int s = 0; s < STAGES; ++s) {
            mbar_init(bars + 8 * (CONSUMERS + s), 1);                   // K full: the producer's arrival + bytes
            mbar_init(bars + 8 * (CONSUMERS + STAGES + s), 4 * CONSUMERS);  // K empty: every consumer warp
            mbar_init(bars + 8 * (CONSUMERS + 2 * STAGES + s), 1);          // V full
            mbar_init(bars + 8 * (CONSUMERS + 3 * STAGES + s), 4 * CONSUMERS);  // V empty
        }
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();
    const int role = threadIdx.x / 128;
    if (role == 0) {
        asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n");
        if (threadIdx.x == 0) produce(hp, base, work, steps, list);
    } else {
        asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n");
        consume(hp.p, base, smem, role - 1, work[role - 1], steps, list);
    }
}
