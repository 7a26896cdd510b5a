// sparge_attention_sm90.cu: the Hopper kernel (sm_90a: wgmma, TMA, mbarriers, setmaxnreg), compiled at run time
// by NVRTC behind sparge_attention_common.cu; see AttentionKernelSource (SpargeCUDA) for what it holds.
#define D HEAD_DIM
#define BK BLOCK_K
// Keys a step takes: 128, one block of 128 keys or two of 64 (two list entries; n = 128 wgmmas either way).
#define STEP_KEYS 128
#define BPS (STEP_KEYS / BK)
#define STAGES KV_STAGES
#define CONSUMERS 2
#define THREADS (128 * (CONSUMERS + 1))
#define HALVES (D / 64)
#if QK_BF16
#define QK_TYPE "bf16"
#else
#define QK_TYPE "f16"
#endif
// QK_INT8: Q and K arrive as int8 (Q scaled per row, K smoothed by its head's mean and scaled per block:
// qScales, kScales), S = Q·Kᵀ in int32 on the tensor cores (wgmma k32), read as floats (see start_scores).
#ifndef QK_INT8
#define QK_INT8 0
#endif
#if QK_INT8
#define QK_ELEMENT_BYTES 1
static_assert(HEAD_DIM == 128, "int8 Q·Kᵀ takes rows of 128 bytes (one 128-byte swizzle row)");
#else
#define QK_ELEMENT_BYTES 2
#endif
// K_BLOCK_MEAN (with QK_INT8): K smoothed by each block's own mean μ_b, not the head's μ: the int8 K is
// k − μ_b, and the scores get q·(μ_b − μ) back from an fp16 wgmma of Q's int8 values (exact in fp16) with the
// blocks' fp16 deltas (blockDeltas), one n = 8 column a step block; q·μ stays the row's shift, as with the
// head's mean. (Where keys drift, int8 of the block's own mean errs half as much: benchmarks/int8-smoothing.py.)
#ifndef K_BLOCK_MEAN
#define K_BLOCK_MEAN 0
#endif
#if K_BLOCK_MEAN && !QK_INT8
#error "K_BLOCK_MEAN smooths int8's K"
#endif
// PV_FP8: P and V in e4m3 for P·V (wgmma k32, fp32 accumulation). V arrives transposed, Vᵀ [Hkv][D][kvRows]
// (fp8 wgmma reads B only K-major), its keys permuted within each 16 (see pack_p_e4m3), scaled per column
// (vScales); P is 2^P_LOG2_SCALE = 256 times the softmax's (the exponent adds 8), so that its small values stay
// normal numbers; the row sums carry the same factor, so O / l does not see it and the LSE subtracts it.
#ifndef PV_FP8
#define PV_FP8 0
#endif
#if PV_FP8
static_assert(HEAD_DIM == 128 && BLOCK_K == 128, "fp8 P·V takes 128-key blocks of D = 128 (one 128-byte row of keys)");
#define P_LOG2_SCALE 8.f
#else
#define P_LOG2_SCALE 0.f
#endif
// Elements of Q or K in one 128-byte swizzle row, and such rows per Q or K row.
#define QK_ROW_ELEMENTS (128 / QK_ELEMENT_BYTES)
#define QK_HALVES (D * QK_ELEMENT_BYTES / 128)
#if PV_BF16
#define PV_TYPE "bf16"
#else
#define PV_TYPE "f16"
#endif

// TAIL_PARTS: every CTA of the launch is a part of a split tile (TailSplit, one rank's last wave): its work
// entries' fourth field is 1 + the slot where each tile's part leaves its state — its unnormalised output in
// o [slot][64 rows][D] and (m, l) in ml [slot][64 rows], which sparge_merge_parts combines. A part starts
// afresh and adds its counts to its tile's.
#ifndef TAIL_PARTS
#define TAIL_PARTS 0
#endif
struct TailSlots { float* o; f2* ml; };

// A CUtensorMap: 128 opaque bytes that cuTensorMapEncodeTiled fills on the host.
struct alignas(64) TensorMap { u64 opaque[16]; };

// The launch's whole argument: the tensor maps of Q `[Hq·rows][D]`, K and V `[Hkv·kvRows][D]` (boxes of 64
// columns × 64 rows for Q, × BK rows for K and V, 128-byte swizzle), then what the mma.sync kernel takes.
// work holds two entries per CTA, one per consumer warpgroup (tile −1: none); the two lists must agree on
// the shorter one's length (they are one mask row cut at two causal diagonals), and K/V follow the longer.
struct SpargeHopperParams {
    TensorMap qMap, kMap, vMap;
    SpargeAttentionParams p;
#if QK_INT8
    SpargeInt8Scales scales;
#endif
#if TAIL_PARTS
    TailSlots slots;
#endif
#if K_BLOCK_MEAN
    const u16* blockDeltas;  // [Hkv][kvRows / BK][D] fp16: μ_b − μ
#endif
#if PV_FP8
    const float* vScales;  // [Hkv][D]
#endif
};

// Shared memory, from a 1024-byte aligned base: Q of each consumer [HALVES][64 rows][128 B], then STAGES K and
// STAGES V steps [HALVES][128 rows][128 B] (a step's blocks one after the other; TMA's 128-byte swizzle:
// 16-byte chunk c of row r at c ^ (r % 8), the layout wgmma reads), then the mbarriers.
#define Q_BYTES (64 * D * QK_ELEMENT_BYTES)
#define K_STEP_BYTES (STEP_KEYS * D * QK_ELEMENT_BYTES)
#if PV_FP8
#define V_STEP_BYTES (STEP_KEYS * D)
#else
#define V_STEP_BYTES (STEP_KEYS * D * 2)
#endif
#define K_OFFSET (CONSUMERS * Q_BYTES)
#define V_OFFSET (K_OFFSET + STAGES * K_STEP_BYTES)
#if K_BLOCK_MEAN
// Then per stage the step's block deltas (an 8-row n tile of 128 fp16: two 128-byte swizzle halves), and
// each consumer's Q in fp16 [2 halves][64 rows][128 B].
#define M_STEP_BYTES 2048
#define M_OFFSET (V_OFFSET + STAGES * V_STEP_BYTES)
#define QH_BYTES (64 * D * 2)
#define QH_OFFSET (M_OFFSET + STAGES * M_STEP_BYTES)
#define BAR_OFFSET (QH_OFFSET + CONSUMERS * QH_BYTES)
#else
#define BAR_OFFSET (V_OFFSET + STAGES * V_STEP_BYTES)
#endif
// What a launch asks for: the above and 1 KiB to align the base.
#define SHARED_BYTES (BAR_OFFSET + 8 * (CONSUMERS + 4 * STAGES) + 1024)

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
// Named barriers: 0 __syncthreads; 1, 2 warpgroup_any (each consumer's 128 threads); 3, 4 queries_to_f16
// (K_BLOCK_MEAN); 5, 6 the consumers' turns (TURNS, below).
// Whether `v` holds for any thread of consumer warpgroup `w`: a barrier of its 128 threads (id w + 1) that ORs
// a predicate.
__device__ __forceinline__ bool warpgroup_any(int w, bool v) {
    int r;
    asm volatile("{ .reg .pred p, q; setp.ne.b32 p, %1, 0; bar.red.or.pred q, %2, 128, p; selp.b32 %0, 1, 0, q; }\n"
                 : "=r"(r) : "r"((int)v), "r"(w + 1) : "memory");
    return r != 0;
}

// TURNS: the two consumer warpgroups issue their wgmmas in turn (where their lists take as many steps), so that
// one's softmax runs while the other's Q·Kᵀ and P·V hold the tensor cores, rather than both softmaxes at once
// beside an idle tensor pipe. Consumer c waits at barrier 5 + c for its turn (its 128 threads and the other's
// 128 arrivals), issues, and arrives at the other's; consumer 1 arrives once at the start, so that consumer 0
// goes first, and not after its last issue, so that no arrival is left over at the end.
#ifndef TURNS
#define TURNS 1
#endif
static_assert(CONSUMERS == 2, "the turns (barriers 5 + c, 6 − c) and the work list's entries take two consumers");
__device__ __forceinline__ void await_turn(int c) { asm volatile("bar.sync %0, 256;\n" :: "r"(5 + c) : "memory"); }
__device__ __forceinline__ void pass_turn(int c) { asm volatile("bar.arrive %0, 256;\n" :: "r"(6 - c) : "memory"); }

// A wgmma shared-memory descriptor for a 128-byte swizzled operand (1024-byte aligned pattern), in two steps so
// that the wgmmas of a step cost one add each: the low word for an operand's base `addr`, once, then the
// descriptor `offset` bytes (a multiple of 16) further. lead: bytes between 64-element chunks of the MN
// dimension (MN-major operands; ignored for K-major); stride (the high word): bytes between groups of 8 rows
// (K-major) or of 8 K-rows (MN-major), 1024 here. The start address field (bits 0–13, address / 16) does not
// carry into the lead field: shared memory is below 256 KB.
__device__ __forceinline__ u32 descriptor_low(u32 addr, u32 lead) { return ((addr & 0x3FFFF) >> 4) | ((lead >> 4) << 16); }
__device__ __forceinline__ u64 descriptor_at(u32 low, u32 offset) {
    return (u64)(low + (offset >> 4)) | ((u64)((1024 >> 4) | (1u << 30)) << 32);
}
// The descriptor of the operand at `addr`, in one step.
__device__ __forceinline__ u64 smem_descriptor(u32 addr, u32 lead) { return descriptor_at(descriptor_low(addr, lead), 0); }
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
// Waits until at most N of this warpgroup's committed groups are pending.
template <int N> __device__ __forceinline__ void wgmma_wait_for() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" :: "n"(N) : "memory");
}
// Keeps the compiler from moving accesses of accumulator registers across the asynchronous wgmma.
template <int N> __device__ __forceinline__ void fence_registers(float* r) {
#pragma unroll
    for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i]) :: "memory");
}
template <int N> __device__ __forceinline__ void fence_registers(int* r) {
#pragma unroll
    for (int i = 0; i < N; ++i) asm volatile("" : "+r"(r[i]) :: "memory");
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

// D[64×128] = A·Bᵀ: the first k-step, which reads nothing of D (so that no earlier write of those registers
// is a dependence of the wgmma pipeline).
__device__ __forceinline__ void wgmma_ss_first_n128(float* d, u64 a, u64 b) {
    asm volatile("{ .reg .pred p; setp.ne.b32 p, 0, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32." QK_TYPE "." QK_TYPE " {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0; }\n"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3]), "=f"(d[4]), "=f"(d[5]), "=f"(d[6]), "=f"(d[7]), "=f"(d[8]), "=f"(d[9]), "=f"(d[10]), "=f"(d[11]), "=f"(d[12]), "=f"(d[13]), "=f"(d[14]), "=f"(d[15]), "=f"(d[16]), "=f"(d[17]), "=f"(d[18]), "=f"(d[19]), "=f"(d[20]), "=f"(d[21]), "=f"(d[22]), "=f"(d[23]), "=f"(d[24]), "=f"(d[25]), "=f"(d[26]), "=f"(d[27]), "=f"(d[28]), "=f"(d[29]), "=f"(d[30]), "=f"(d[31]), "=f"(d[32]), "=f"(d[33]), "=f"(d[34]), "=f"(d[35]), "=f"(d[36]), "=f"(d[37]), "=f"(d[38]), "=f"(d[39]), "=f"(d[40]), "=f"(d[41]), "=f"(d[42]), "=f"(d[43]), "=f"(d[44]), "=f"(d[45]), "=f"(d[46]), "=f"(d[47]), "=f"(d[48]), "=f"(d[49]), "=f"(d[50]), "=f"(d[51]), "=f"(d[52]), "=f"(d[53]), "=f"(d[54]), "=f"(d[55]), "=f"(d[56]), "=f"(d[57]), "=f"(d[58]), "=f"(d[59]), "=f"(d[60]), "=f"(d[61]), "=f"(d[62]), "=f"(d[63])
                 : "l"(a), "l"(b));
}

#if QK_INT8
// D[64×128] (+)= A·Bᵀ in int32, A and B int8 K-major in shared memory (k32); scaleD 0 overwrites D.
__device__ __forceinline__ void wgmma_ss_s8_n128(int* d, u64 a, u64 b) {
    asm volatile("{ .reg .pred p; setp.ne.b32 p, 1, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k32.s32.s8.s8 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p; }\n"
                 : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]), "+r"(d[7]), "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]), "+r"(d[12]), "+r"(d[13]), "+r"(d[14]), "+r"(d[15]), "+r"(d[16]), "+r"(d[17]), "+r"(d[18]), "+r"(d[19]), "+r"(d[20]), "+r"(d[21]), "+r"(d[22]), "+r"(d[23]), "+r"(d[24]), "+r"(d[25]), "+r"(d[26]), "+r"(d[27]), "+r"(d[28]), "+r"(d[29]), "+r"(d[30]), "+r"(d[31]), "+r"(d[32]), "+r"(d[33]), "+r"(d[34]), "+r"(d[35]), "+r"(d[36]), "+r"(d[37]), "+r"(d[38]), "+r"(d[39]), "+r"(d[40]), "+r"(d[41]), "+r"(d[42]), "+r"(d[43]), "+r"(d[44]), "+r"(d[45]), "+r"(d[46]), "+r"(d[47]), "+r"(d[48]), "+r"(d[49]), "+r"(d[50]), "+r"(d[51]), "+r"(d[52]), "+r"(d[53]), "+r"(d[54]), "+r"(d[55]), "+r"(d[56]), "+r"(d[57]), "+r"(d[58]), "+r"(d[59]), "+r"(d[60]), "+r"(d[61]), "+r"(d[62]), "+r"(d[63])
                 : "l"(a), "l"(b));
}
#endif

#if K_BLOCK_MEAN
// D[64×8] (+)= A·Bᵀ in fp32, A and B fp16 K-major in shared memory (k16); the first k-step overwrites D.
__device__ __forceinline__ void wgmma_ss_f16_n8(float* d, u64 a, u64 b, int accumulate) {
    asm volatile("{ .reg .pred p; setp.ne.b32 p, %6, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n8k16.f32.f16.f16 {%0, %1, %2, %3}, %4, %5, p, 1, 1, 0, 0; }\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]) : "l"(a), "l"(b), "r"(accumulate));
}
#endif

#if PV_FP8
// D[64×128] += A·B in fp32, A (e4m3, four to a register) in registers, B (e4m3) K-major in shared memory (k32).
__device__ __forceinline__ void wgmma_rs_e4m3_n128(float* d, const u32* a, u64 b) {
    asm volatile("{ .reg .pred p; setp.ne.b32 p, 1, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1; }\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));
}
#endif

#define wgmma_scores wgmma_ss_n128
#define wgmma_scores_first wgmma_ss_first_n128
#if D == 64
#define wgmma_values wgmma_rs_n64
#else
#define wgmma_values wgmma_rs_n128
#endif

// The producer: one thread loads each consumer's Q, then K and V of every step (BPS listed blocks; a step
// short of blocks loads its first block again, so that what P·V multiplies by a zero P is finite) through
// the STAGES ring of buffers, each as soon as both consumers have released the buffer's last use.
__device__ __forceinline__ void produce(const SpargeHopperParams& hp, u32 base, const i4* work, int blocks, const int* list) {
    const SpargeAttentionParams& p = hp.p;
    const u32 qFull = base + BAR_OFFSET, kFull = qFull + 8 * CONSUMERS, kEmpty = kFull + 8 * STAGES;
    const u32 vFull = kEmpty + 8 * STAGES, vEmpty = vFull + 8 * STAGES;
    int kvHead = 0;
    for (int c = 0; c < CONSUMERS; ++c) {
        if (work[c].x < 0 || work[c].z == 0) continue;
        const i4 t = p.tiles[work[c].x];
        kvHead = t.x / p.group;
        mbar_expect_bytes(qFull + 8 * c, Q_BYTES);
        for (int h = 0; h < QK_HALVES; ++h)
            tma_load(base + c * Q_BYTES + h * 64 * 128, &hp.qMap, h * QK_ROW_ELEMENTS, t.x * p.rows + t.y, qFull + 8 * c);
    }
    const int steps = (blocks + BPS - 1) / BPS;
    for (int it = 0; it < steps; ++it) {
        const int s = it % STAGES, use = it / STAGES;
        int rows[BPS];
        for (int b = 0; b < BPS; ++b)
            rows[b] = kvHead * p.kvRows + list[BPS * it + b < blocks ? BPS * it + b : BPS * it] * BK;
        if (use > 0) mbar_wait(kEmpty + 8 * s, (use - 1) & 1);
#if K_BLOCK_MEAN
        // The step's block deltas into rows 0…BPS−1 of the stage's n tile, swizzled as wgmma reads it (16-byte
        // chunk c of row r at c ^ r); stored by this thread, so fenced for the tensor cores before the arrive.
        for (int b = 0; b < BPS; ++b) {
            const i4* src = (const i4*)(hp.blockDeltas + (u64)rows[b] / BK * D);
            for (int chunk = 0; chunk < D / 8; ++chunk) {
                const i4 x = src[chunk];
                const u32 dst = base + M_OFFSET + s * M_STEP_BYTES + (chunk / 8) * 1024 + b * 128 + (((chunk % 8) ^ b) * 16);
                asm volatile("st.shared.v4.b32 [%0], {%1, %2, %3, %4};\n" :: "r"(dst), "r"(x.x), "r"(x.y), "r"(x.z), "r"(x.w) : "memory");
            }
        }
        asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
        mbar_expect_bytes(kFull + 8 * s, K_STEP_BYTES);
        for (int h = 0; h < QK_HALVES; ++h)
            for (int b = 0; b < BPS; ++b)
                tma_load(base + K_OFFSET + s * K_STEP_BYTES + h * STEP_KEYS * 128 + b * BK * 128, &hp.kMap,
                         h * QK_ROW_ELEMENTS, rows[b], kFull + 8 * s);
        if (use > 0) mbar_wait(vEmpty + 8 * s, (use - 1) & 1);
        mbar_expect_bytes(vFull + 8 * s, V_STEP_BYTES);
#if PV_FP8
        // Vᵀ: the block's 128 keys (columns) of the kv head's D rows.
        tma_load(base + V_OFFSET + s * V_STEP_BYTES, &hp.vMap, list[BPS * it] * BK, kvHead * D, vFull + 8 * s);
#else
        for (int h = 0; h < HALVES; ++h)
            for (int b = 0; b < BPS; ++b)
                tma_load(base + V_OFFSET + s * V_STEP_BYTES + h * STEP_KEYS * 128 + b * BK * 128, &hp.vMap, h * 64, rows[b], vFull + 8 * s);
#endif
    }
}

// What a consumer warpgroup keeps of its tile: warp `warp` owns rows 16·warp + g and 16·warp + g + 8
// (g = lane / 4), columns 8j + 2·(lane % 4) + {0, 1} of every accumulator (the wgmma accumulator layout,
// which is also its register-A layout, for P).
struct Tile {
    int index, head, localRow, rowCount, queryStart;
    int warp, lane, g, t4;
    float m[2], l[2];  // running maximum (log2 units) and this thread's part of the row sums
    TileCounters counters;
};

// Where a step's K/V sit in the ring of STAGES buffers, and the parity of that use of them: counted from step 0,
// not divided out of the step's index.
struct StagePosition {
    int stage = 0;
    u32 phase = 0;
    __device__ __forceinline__ StagePosition next() const {
        return stage + 1 == STAGES ? StagePosition{0, phase ^ 1u} : StagePosition{stage + 1, phase};
    }
};

// S = Q·Kᵀ for the warpgroup's 64 rows × the step's 128 keys, issued (not waited for): D/16 steps of k16; a
// 16-element step within a 64-element swizzle row is a 32-byte move of the start address (the hardware
// applies the swizzle to the address it forms).
#if QK_INT8
typedef int ScoreAccumulator;
#else
typedef float ScoreAccumulator;
#endif
// Every k-step (16 elements of 16 bits, or 32 of int8) is 32 bytes of the 128-byte rows.
// qLow, kLow: descriptor_low of the warpgroup's Q and of the step's K.
__device__ __forceinline__ void issue_scores(ScoreAccumulator* s, u32 qLow, u32 kLow) {
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < D * QK_ELEMENT_BYTES / 32; ++kk) {
        const u64 a = descriptor_at(qLow, (kk / 4) * 64 * 128 + (kk % 4) * 32);
        const u64 b = descriptor_at(kLow, (kk / 4) * STEP_KEYS * 128 + (kk % 4) * 32);
#if QK_INT8
        wgmma_ss_s8_n128(s, a, b);
#else
        if (kk == 0) wgmma_scores_first(s, a, b); else wgmma_scores(s, a, b, 1);
#endif
    }
    wgmma_commit();
}

#if QK_INT8
// int8's scores reach the softmax as floats with no conversion: the accumulators start at the bits of 2^23 +
// 2^22 (SCORE_BIAS), so that the int32 sum of 128 products (|·| ≤ 127²·128 < 2^22) leaves the bits of the float
// SCORE_BIAS + S exactly; the softmax's one FMA a score then takes S's scale (Q's row scale times K's block
// scale) and subtracts the bias, where a conversion would cost as much as the exponential.
#define SCORE_BIAS 12582912.f
__device__ __forceinline__ void start_scores(ScoreAccumulator* acc) {
#pragma unroll
    for (int i = 0; i < STEP_KEYS / 2; ++i) acc[i] = 0x4B400000;
}
#else
#define SCORE_BIAS 0.f
__device__ __forceinline__ void start_scores(ScoreAccumulator*) {}
#endif
__device__ __forceinline__ void scores_as_float(const ScoreAccumulator* acc, float* s) {
#pragma unroll
    for (int i = 0; i < STEP_KEYS / 2; ++i) {
#if QK_INT8
        s[i] = __int_as_float(acc[i]);
#else
        s[i] = acc[i];
#endif
    }
}

#if K_BLOCK_MEAN
// This warpgroup's 64 int8 Q rows (one 128-byte swizzled row each) as fp16 [2 halves][64 rows][128 B], the
// same swizzle: two threads a row, 64 columns each; fenced for the tensor cores and the warpgroup's barrier.
__device__ __forceinline__ void queries_to_f16(u32 qBase, u32 qhBase, int tid, int c) {
    const int r = tid / 2, half = tid % 2;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        u32 w[4];
        asm volatile("ld.shared.v4.b32 {%0, %1, %2, %3}, [%4];\n"
                     : "=r"(w[0]), "=r"(w[1]), "=r"(w[2]), "=r"(w[3]) : "r"(qBase + r * 128 + (((4 * half + j) ^ (r % 8)) * 16)));
        u32 h[8];
#pragma unroll
        for (int e = 0; e < 8; ++e) {
            const u32 word = w[e / 2];
            const float lo = (float)(signed char)(word >> (16 * (e % 2))), hi = (float)(signed char)(word >> (16 * (e % 2) + 8));
            asm("cvt.rn.f16x2.f32 %0, %1, %2;\n" : "=r"(h[e]) : "f"(hi), "f"(lo));
        }
#pragma unroll
        for (int k = 0; k < 2; ++k) {  // fp16 chunk 2j + k of the half: columns 16j + 8k … +7
            const u32 dst = qhBase + half * 64 * 128 + r * 128 + ((((2 * j + k)) ^ (r % 8)) * 16);
            asm volatile("st.shared.v4.b32 [%0], {%1, %2, %3, %4};\n"
                         :: "r"(dst), "r"(h[4 * k]), "r"(h[4 * k + 1]), "r"(h[4 * k + 2]), "r"(h[4 * k + 3]) : "memory");
        }
    }
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    asm volatile("bar.sync %0, 128;\n" :: "r"(c + 3) : "memory");
}

// q·(μ_b − μ) for the 64 rows × the step's 8-column tile of block deltas, issued (committed with the scores).
__device__ __forceinline__ void issue_block_means(float* m, u32 qhBase, u32 mBase) {
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk)
        wgmma_ss_f16_n8(m, smem_descriptor(qhBase + (kk / 4) * 64 * 128 + (kk % 4) * 32, 0),
                        smem_descriptor(mBase + (kk / 4) * 1024 + (kk % 4) * 32, 0), kk > 0);
}

// Each row's q·(μ_b − μ) of the step's blocks in log2 units: column b of the n tile is held by the row's first
// thread of four (registers 0, 1 for row g, 2, 3 for row g + 8).
__device__ __forceinline__ void block_mean_terms(const float* m, const float* rowUnit, int lane, float (*extra)[BPS]) {
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int b = 0; b < BPS; ++b)
            extra[h][b] = rowUnit[h] * __shfl_sync(0xffffffff, m[2 * h + b], lane & ~3);
}
#endif

// Keys of P a wgmma k-step takes: 16 in 16 bits, 32 in e4m3.
#if PV_FP8
#define PV_K 32
#else
#define PV_K 16
#endif

// O += P·V, issued: P from registers; V (keys × D, D contiguous) read transposed, or, in fp8, Vᵀ (D rows of
// the step's 128 keys) read K-major, a k-step 32 bytes along its rows. vBase: the step's V stage.
__device__ __forceinline__ void issue_values(float* o, const u32 (*pa)[4], u32 vBase) {
#if PV_FP8
    const u32 vLow = descriptor_low(vBase, 0);
#else
    const u32 vLow = descriptor_low(vBase, STEP_KEYS * 128);
#endif
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < STEP_KEYS / PV_K; ++kk) {
#if PV_FP8
        wgmma_rs_e4m3_n128(o, pa[kk], descriptor_at(vLow, kk * 32));
#else
        wgmma_values(o, pa[kk], descriptor_at(vLow, kk * 16 * 128));
#endif
    }
    wgmma_commit();
}

// One step's scores → P in place, its BPS blocks in list order as the CPU visits them: the token-level causal
// mask and keys past the sequence (and the columns of a block that is not this tile's: `keyStart` past every
// key), then per block the λ rule where it runs (Δ over the warpgroup's rows, one barrier that ORs "this
// thread's rows rise enough") and the running maximum; then P = 2^(S·scale − m) against the step's final m
// (shifted by +∞, so exactly 0, in the columns of skipped blocks), l ← α·l + Σ P and α = 2^(m_prev − m) (the
// factor O takes before the step's P·V).
// Every thread of the warpgroup calls it. No branch writes the scores: registers that feed a wgmma must not
// be written on a divergent path (a predicated wgmma counts as one), or the compiler serializes every wgmma
// of the kernel; so skipped blocks multiply a zero P (their P·V saves no time here, its result is the rule's).
__device__ __forceinline__ void softmax_step(const SpargeAttentionParams& p, Tile& t, float* s, const int* keyStart,
                                             const bool* real, const float (*unit)[BPS], const float (*extra)[BPS], int c,
                                             float* alpha) {
    const int warpRow = 16 * t.warp;
    const int rowA = t.queryStart + warpRow + t.g, rowB = rowA + 8;
    const int lastA = p.causal ? min(rowA, p.seqLen - 1) : p.seqLen - 1;
    const int lastB = p.causal ? min(rowB, p.seqLen - 1) : p.seqLen - 1;
    // Column j of block b is key keyStart[b] + j: masked where j > last − keyStart[b] (one compare a score),
    // in steps where some block reaches past the tile's first row's last key (the same for the warpgroup).
    const int firstLast = p.causal ? min(t.queryStart, p.seqLen - 1) : p.seqLen - 1;
    bool whole = true;
#pragma unroll
    for (int b = 0; b < BPS; ++b) whole = whole && real[b] && keyStart[b] + BK - 1 <= firstLast;
#pragma unroll
    for (int b = 0; b < BPS; ++b) {
        if (whole) break;
        const int limitA = lastA - keyStart[b] - 2 * t.t4, limitB = lastB - keyStart[b] - 2 * t.t4;
#pragma unroll
        for (int n = 0; n < STEP_KEYS / 8; ++n) {
            if ((n * 8) / BK != b) continue;
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                const int j = (n * 8) % BK + e;
                s[4 * n + e] = j > limitA ? NEG_INF : s[4 * n + e];
                s[4 * n + 2 + e] = j > limitB ? NEG_INF : s[4 * n + 2 + e];
            }
        }
    }
    // Per block, in order: row maxima (log2 units), the λ decision against the running maximum, which the
    // block then raises if computed.
    float m[2] = {t.m[0], t.m[1]};
    bool computed[BPS];
#pragma unroll
    for (int b = 0; b < BPS; ++b) {
        bool rises = false;
        float mx[2];
#pragma unroll
        for (int h = 0; h < 2; ++h) {
#if QK_INT8
            // int8's scores are floats of one binade ([2^23, 2^24), see SCORE_BIAS) or −∞ where masked (the
            // only negative value the mask writes), so their bits order as integers do, and Hopper's
            // three-input integer maximum takes two an instruction: the same maximum as fmaxf's.
            int ai = __float_as_int(NEG_INF);
#pragma unroll
            for (int n = 0; n < STEP_KEYS / 8; ++n)
                if ((n * 8) / BK == b) ai = __vimax3_s32(ai, __float_as_int(s[4 * n + 2 * h]), __float_as_int(s[4 * n + 2 * h + 1]));
            ai = max(ai, __shfl_xor_sync(0xffffffff, ai, 1));
            ai = max(ai, __shfl_xor_sync(0xffffffff, ai, 2));
            const float a = __int_as_float(ai);
#else
            float a = NEG_INF;
#pragma unroll
            for (int n = 0; n < STEP_KEYS / 8; ++n)
                if ((n * 8) / BK == b) a = fmaxf(a, fmaxf(s[4 * n + 2 * h], s[4 * n + 2 * h + 1]));
            a = fmaxf(a, __shfl_xor_sync(0xffffffff, a, 1));
            a = fmaxf(a, __shfl_xor_sync(0xffffffff, a, 2));
#endif
#if K_BLOCK_MEAN
            mx[h] = fmaf(a - SCORE_BIAS, unit[h][b], extra[h][b]);
#else
            mx[h] = (a - SCORE_BIAS) * unit[h][b];
#endif
            rises |= warpRow + t.g + 8 * h < t.rowCount && mx[h] != NEG_INF && mx[h] - m[h] + p.pvThreshold > 0.f;
        }
        // Δ + λ > 0 for the group ⟺ some row's rise + λ > 0. With the rule off (the launch's `lambda`, the
        // same for every thread) no barrier: every listed block is computed.
        const bool any = p.lambda ? warpgroup_any(c, rises) : true;
        computed[b] = real[b] && (t.counters.computed == 0 || any);
        t.counters.visited += real[b];
        t.counters.computed += computed[b];
        t.counters.skipped += real[b] && !computed[b];
#pragma unroll
        for (int h = 0; h < 2; ++h) m[h] = computed[b] ? fmaxf(m[h], mx[h]) : m[h];
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const float sh = m[h] == NEG_INF ? 0.f : m[h];
        // A skipped block's columns are shifted by +∞: its P is exactly 0, with no select a score.
        float shift[BPS];
#pragma unroll
#if K_BLOCK_MEAN
        for (int b = 0; b < BPS; ++b) shift[b] = computed[b] ? fmaf(-SCORE_BIAS, unit[h][b], extra[h][b] + (P_LOG2_SCALE - sh)) : NEG_INF;
#else
        for (int b = 0; b < BPS; ++b) shift[b] = computed[b] ? fmaf(-SCORE_BIAS, unit[h][b], P_LOG2_SCALE - sh) : NEG_INF;
#endif
        float sum = 0.f;
#pragma unroll
        for (int n = 0; n < STEP_KEYS / 8; ++n) {
            const float add = shift[(n * 8) / BK], u = unit[h][(n * 8) / BK];
            s[4 * n + 2 * h] = fast_exp2(fmaf(s[4 * n + 2 * h], u, add));
            s[4 * n + 2 * h + 1] = fast_exp2(fmaf(s[4 * n + 2 * h + 1], u, add));
            sum += s[4 * n + 2 * h] + s[4 * n + 2 * h + 1];
        }
        alpha[h] = fast_exp2(t.m[h] - sh);
        t.l[h] = fmaf(t.l[h], alpha[h], sum);
        t.m[h] = m[h];
    }
}

#if PV_FP8
// Four e4m3 in a register, `a` in the low byte.
__device__ __forceinline__ u32 pack_e4m3(float a, float b, float c, float d) {
    unsigned short lo, hi;
    asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;\n" : "=h"(lo) : "f"(b), "f"(a));
    asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;\n" : "=h"(hi) : "f"(d), "f"(c));
    return (u32)lo | ((u32)hi << 16);
}
#endif

// O ← α·O, and P to P·V's type in wgmma's register-A layout. In 16 bits a k-step is 16 keys, the score
// registers' own order. In e4m3 a k-step is 32 keys and a register four of them: this thread's scores of
// keys 2·t4 + {0, 1} and 8 + 2·t4 + {0, 1} of each 16 fill the register of positions 4·t4 + {0…3}, so that
// position 4a + i holds key 8·(i / 2) + 2a + i % 2 of its 16; Vᵀ's keys are stored in that order.
__device__ __forceinline__ void rescale_and_pack(float* o, const float* alpha, const float* s, u32 (*pa)[4]) {
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
        o[4 * n] *= alpha[0];
        o[4 * n + 1] *= alpha[0];
        o[4 * n + 2] *= alpha[1];
        o[4 * n + 3] *= alpha[1];
    }
#if PV_FP8
#pragma unroll
    for (int kk = 0; kk < STEP_KEYS / 32; ++kk) {
        const float* x = s + 16 * kk;  // four 8-key groups: x[4j + e] row g, x[4j + 2 + e] row g + 8
        pa[kk][0] = pack_e4m3(x[0], x[1], x[4], x[5]);
        pa[kk][1] = pack_e4m3(x[2], x[3], x[6], x[7]);
        pa[kk][2] = pack_e4m3(x[8], x[9], x[12], x[13]);
        pa[kk][3] = pack_e4m3(x[10], x[11], x[14], x[15]);
    }
#else
#pragma unroll
    for (int kk = 0; kk < STEP_KEYS / 16; ++kk) {
        pa[kk][0] = pack_pv(s[8 * kk], s[8 * kk + 1]);
        pa[kk][1] = pack_pv(s[8 * kk + 2], s[8 * kk + 3]);
        pa[kk][2] = pack_pv(s[8 * kk + 4], s[8 * kk + 5]);
        pa[kk][3] = pack_pv(s[8 * kk + 6], s[8 * kk + 7]);
    }
#endif
}

// What O's column 8n + 2·t4 + e holds, in units of the output: 1, or in fp8 P·V V's column scale.
__device__ __forceinline__ float column_unit(const float* vScales, int kvHead, int n, int t4, int e) {
#if PV_FP8
    return vScales[kvHead * D + 8 * n + 2 * t4 + e];
#else
    return 1.f;
#endif
}

// The tile's output at the end of the launch: O / l and the LSE where out is set (its last launch), else the
// state for the next; in TAIL_PARTS, the part's state in its slot (m = −∞ and l = 0 where it had no block),
// and its counts added to the tile's. Row sums were kept per thread (α is the same across a row's four
// threads): added here.
__device__ __forceinline__ void store_tile(const SpargeAttentionParams& p, const Tile& t, const float* o, int tid,
                                           const float* vScales, const float* rowShifts, TailSlots slots, int slot) {
    const int kvHead = t.head / p.group;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        float sum = t.l[h];
        sum += __shfl_xor_sync(0xffffffff, sum, 1);
        sum += __shfl_xor_sync(0xffffffff, sum, 2);
        const int r = 16 * t.warp + t.g + 8 * h;
        if (r >= t.rowCount) continue;
#if TAIL_PARTS
        const u64 part = (u64)slot * 64 + r;
#pragma unroll
        for (int n = 0; n < D / 8; ++n)
            *(f2*)(slots.o + part * D + n * 8 + 2 * t.t4) = f2{o[4 * n + 2 * h] * column_unit(vScales, kvHead, n, t.t4, 0),
                                                                o[4 * n + 2 * h + 1] * column_unit(vScales, kvHead, n, t.t4, 1)};
        if (t.t4 == 0) slots.ml[part] = f2{t.m[h], sum};
#else
        const u64 row = (u64)t.head * p.rows + t.localRow + r;
        if (p.out) {
            const float inv = sum > 0.f ? 1.f / sum : 0.f;
#pragma unroll
            for (int n = 0; n < D / 8; ++n)
                *(f2*)(p.out + row * D + n * 8 + 2 * t.t4) = f2{o[4 * n + 2 * h] * inv * column_unit(vScales, kvHead, n, t.t4, 0),
                                                               o[4 * n + 2 * h + 1] * inv * column_unit(vScales, kvHead, n, t.t4, 1)};
#if QK_INT8
            const float shifted = rowShifts[row];
#else
            const float shifted = 0.f;
#endif
            if (t.t4 == 0)
                p.lse[row] = sum > 0.f ? (t.m[h] + fast_log2(sum) - P_LOG2_SCALE) * 0.69314718055994531f + shifted : NEG_INF;
        } else {
#pragma unroll
            for (int n = 0; n < D / 8; ++n)
                *(f2*)(p.oacc + row * D + n * 8 + 2 * t.t4) = f2{o[4 * n + 2 * h] * column_unit(vScales, kvHead, n, t.t4, 0),
                                                                o[4 * n + 2 * h + 1] * column_unit(vScales, kvHead, n, t.t4, 1)};
            if (t.t4 == 0) p.ml[row] = f2{t.m[h], sum};
        }
#endif
    }
    if (tid == 0) {
#if TAIL_PARTS
        TileCounters* counts = p.counters + t.index;
        atomicAdd(&counts->visited, t.counters.visited);
        atomicAdd(&counts->computed, t.counters.computed);
        atomicAdd(&counts->skipped, t.counters.skipped);
        atomicExch(&counts->started, 1);
#else
        TileCounters done = t.counters;
        done.started = 1;
        p.counters[t.index] = done;
#endif
    }
}

// Step `it`'s key blocks for this tile: where each starts, and whether it is one of the tile's (a block past
// the tile's own list gets a start past every key, so that all its scores are masked).
__device__ __forceinline__ void step_blocks(const int* list, int it, int mine, int* keyStart, bool* real) {
#pragma unroll
    for (int b = 0; b < BPS; ++b) {
        real[b] = BPS * it + b < mine;
        keyStart[b] = real[b] ? list[BPS * it + b] * BK : 0x3fffffff;
    }
}

// A consumer warpgroup: one tile of ≤ 64 rows (or none: it then only releases buffers), its first `mine`
// list entries of the CTA's `blocks`, BPS a step. Software-pipelined: step j+1's Q·Kᵀ is issued before step
// j's P·V, and step j+1's softmax runs while that P·V is on the tensor cores. `inTurn`: the two consumers take
// turns at issuing (TURNS; both must have as many steps).
template <bool inTurn>
__device__ __forceinline__ void consume(const SpargeAttentionParams& p, u32 base, int c, const i4 work, int blocks,
                                        const int* list, const float* qScales, const float* kScales, const float* rowShifts,
                                        const float* vScales, TailSlots slots) {
    const u32 qFull = base + BAR_OFFSET, kFull = qFull + 8 * CONSUMERS, kEmpty = kFull + 8 * STAGES;
    const u32 vFull = kEmpty + 8 * STAGES, vEmpty = vFull + 8 * STAGES;
    const int tid = threadIdx.x % 128;
    Tile t;
    t.index = work.x;
    const int mine = t.index >= 0 ? work.z : 0;
    const int mySteps = (mine + BPS - 1) / BPS, steps = (blocks + BPS - 1) / BPS;
    const i4 info = t.index >= 0 ? p.tiles[t.index] : i4{0, 0, 0, 0};
    t.head = info.x; t.localRow = info.y; t.rowCount = info.z; t.queryStart = info.w;
    t.warp = tid / 32; t.lane = tid % 32; t.g = t.lane / 4; t.t4 = t.lane % 4;
    // A part starts afresh (its tile's other parts run beside it) and counts only its own blocks.
    t.counters = t.index >= 0 && !TAIL_PARTS ? p.counters[t.index] : TileCounters{0, 0, 0, 0};

    float o[D / 2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const int r = 16 * t.warp + t.g + 8 * h;
        const u64 state = (u64)t.head * p.rows + t.localRow + r;
        const bool resume = t.counters.started && r < t.rowCount;
        t.m[h] = NEG_INF;
        t.l[h] = 0.f;
        if (resume) {
            f2 st = p.ml[state];
            t.m[h] = st.x;
            t.l[h] = t.t4 == 0 ? st.y : 0.f;
        }
#pragma unroll
        for (int n = 0; n < D / 8; ++n) {
            f2 a = resume ? *(const f2*)(p.oacc + state * D + n * 8 + 2 * t.t4) : f2{0.f, 0.f};
            o[4 * n + 2 * h] = a.x / column_unit(vScales, t.head / p.group, n, t.t4, 0);
            o[4 * n + 2 * h + 1] = a.y / column_unit(vScales, t.head / p.group, n, t.t4, 1);
        }
    }
    const u32 qBase = base + c * Q_BYTES;
#if K_BLOCK_MEAN
    const u32 qhBase = base + QH_OFFSET + c * QH_BYTES;
#endif
    const u32 kBase = base + K_OFFSET, vBase = base + V_OFFSET;
    int keyStart[BPS];
    bool real[BPS];
    // What one unit of a score is in log2 units, per row and step block: the softmax scale, in int8 times Q's
    // row scale and the block's K scale (rows past the tile take 1: their results are not stored).
    float rowUnit[2] = {p.qScale, p.qScale}, unit[2][BPS], extra[2][BPS] = {};
#if QK_INT8
    const int keyBlocks = p.kvRows / BK, kvHead = t.head / p.group;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const int r = 16 * t.warp + t.g + 8 * h;
        rowUnit[h] = r < t.rowCount ? p.qScale * qScales[(u64)t.head * p.rows + t.localRow + r] : 1.f;
    }
#endif
    auto units = [&](int it) {
#pragma unroll
        for (int b = 0; b < BPS; ++b) {
#if QK_INT8
            const float k = kScales[(u64)kvHead * keyBlocks + list[BPS * it + b < mine ? BPS * it + b : BPS * it]];
#else
            const float k = 1.f;
#endif
            unit[0][b] = rowUnit[0] * k;
            unit[1][b] = rowUnit[1] * k;
        }
    };

    // Step `it`'s Q·Kᵀ (and block-mean terms) issued, into stage `stage`'s buffers: committed, not waited for.
    // Its blocks' starts and scales are read from global memory first, so that the loads run beside the
    // tensor cores rather than after them.
    const u32 qLow = descriptor_low(qBase, 0);
    auto issue_step_scores = [&](ScoreAccumulator* acc, float* m, int it, int stage) {
        step_blocks(list, it, mine, keyStart, real);
        units(it);
        start_scores(acc);
#if K_BLOCK_MEAN
        issue_block_means(m, qhBase, base + M_OFFSET + stage * M_STEP_BYTES);
#endif
        issue_scores(acc, qLow, descriptor_low(kBase + stage * K_STEP_BYTES, 0));
    };
    // Once a step's Q·Kᵀ is done: its K stage (`stage`) released, and its softmax (P in `s`, α for O).
    auto softmax_of_step = [&](ScoreAccumulator* acc, float* m, int stage, float* s, float* alpha) {
        fence_registers<STEP_KEYS / 2>(acc);
#if K_BLOCK_MEAN
        fence_registers<4>(m);
        block_mean_terms(m, rowUnit, t.lane, extra);
#endif
        __syncwarp();
        if (t.lane == 0) mbar_arrive(kEmpty + 8 * stage);
        scores_as_float(acc, s);
        softmax_step(p, t, s, keyStart, real, unit, extra, c, alpha);
    };

    // Step 0's scores and softmax.
    u32 pa[STEP_KEYS / PV_K][4];
    if (inTurn && c == 1) pass_turn(c);
    if (mySteps > 0) {
        ScoreAccumulator acc[STEP_KEYS / 2];
        float s[STEP_KEYS / 2], alpha[2], m[4];
        mbar_wait(qFull + 8 * c, 0);
#if K_BLOCK_MEAN
        queries_to_f16(qBase, qhBase, tid, c);
#endif
        mbar_wait(kFull, 0);
        if (inTurn) await_turn(c);
        issue_step_scores(acc, m, 0, 0);
        if (inTurn) pass_turn(c);
        wgmma_wait_for<0>();
        softmax_of_step(acc, m, 0, s, alpha);
        rescale_and_pack(o, alpha, s, pa);
    }
    // Step it's P·V behind step it+1's Q·Kᵀ; step it+1's softmax while the P·V runs. No wgmma sits in a
    // branch of its own (see softmax_step).
    StagePosition at;  // step it's buffers
    for (int it = 0; it + 1 < mySteps; ++it) {
        const StagePosition next = at.next();
        ScoreAccumulator acc[STEP_KEYS / 2];
        float s[STEP_KEYS / 2], alpha[2], m[4];
        mbar_wait(kFull + 8 * next.stage, next.phase);
        mbar_wait(vFull + 8 * at.stage, at.phase);
        if (inTurn) await_turn(c);
        issue_step_scores(acc, m, it + 1, next.stage);
        issue_values(o, pa, vBase + at.stage * V_STEP_BYTES);
        if (inTurn) pass_turn(c);
        wgmma_wait_for<1>();
        softmax_of_step(acc, m, next.stage, s, alpha);
        wgmma_wait_for<0>();
        fence_registers<D / 2>(o);
        __syncwarp();
        if (t.lane == 0) mbar_arrive(vEmpty + 8 * at.stage);
        rescale_and_pack(o, alpha, s, pa);
        at = next;
    }
    // The last step's P·V.
    if (mySteps > 0) {
        mbar_wait(vFull + 8 * at.stage, at.phase);
        if (inTurn) await_turn(c);
        issue_values(o, pa, vBase + at.stage * V_STEP_BYTES);
        if (inTurn && c == 0) pass_turn(c);
        wgmma_wait_for<0>();
        fence_registers<D / 2>(o);
        __syncwarp();
        if (t.lane == 0) mbar_arrive(vEmpty + 8 * at.stage);
        at = at.next();
    }
    // The rest of the CTA's steps belong to the other tile: release them as they come.
    for (int it = mySteps; it < steps; ++it, at = at.next()) {
        mbar_wait(kFull + 8 * at.stage, at.phase);
        __syncwarp();
        if (t.lane == 0) mbar_arrive(kEmpty + 8 * at.stage);
        mbar_wait(vFull + 8 * at.stage, at.phase);
        __syncwarp();
        if (t.lane == 0) mbar_arrive(vEmpty + 8 * at.stage);
    }
    if (t.index >= 0) store_tile(p, t, o, tid, vScales, rowShifts, slots, work.w - 1);
}

// One CTA: a producer warpgroup and CONSUMERS consumer warpgroups, each consumer one compute tile of ≤ 64
// rows; the two tiles share the K/V blocks the producer brings (their lists agree on the shorter's length).
extern "C" __global__ void __launch_bounds__(THREADS, 1) sparge_attention_sm90(const __grid_constant__ SpargeHopperParams hp) {
    extern __shared__ unsigned char smemRaw[];
    const u32 base = (shared_address(smemRaw) + 1023) & ~1023u;
    const i4* work = hp.p.work + CONSUMERS * blockIdx.x;
    int blocks = 0, longest = 0;
    for (int c = 0; c < CONSUMERS; ++c) {
        const int n = work[c].x >= 0 ? work[c].z : 0;
        if (n > blocks) { blocks = n; longest = c; }
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
        if (threadIdx.x == 0) produce(hp, base, work, blocks, list);
    } else {
        asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n");
#if QK_INT8
        const float *qScales = hp.scales.qScales, *kScales = hp.scales.kScales, *rowShifts = hp.scales.rowShifts;
#else
        const float *qScales = nullptr, *kScales = nullptr, *rowShifts = nullptr;
#endif
#if PV_FP8
        const float* vScales = hp.vScales;
#else
        const float* vScales = nullptr;
#endif
#if TAIL_PARTS
        const TailSlots slots = hp.slots;
#else
        const TailSlots slots = {nullptr, nullptr};
#endif
        // Turns where both tiles take as many steps, at least one (a causal diagonal can cut their lists to
        // different steps; a CTA's second tile can be missing). Both consumers decide alike from `work`.
        const int entries0 = work[0].x >= 0 ? work[0].z : 0, entries1 = work[1].x >= 0 ? work[1].z : 0;
        if (TURNS && entries0 > 0 && (entries0 + BPS - 1) / BPS == (entries1 + BPS - 1) / BPS)
            consume<true>(hp.p, base, role - 1, work[role - 1], blocks, list, qScales, kScales, rowShifts, vScales, slots);
        else
            consume<false>(hp.p, base, role - 1, work[role - 1], blocks, list, qScales, kScales, rowShifts, vScales, slots);
    }
}
