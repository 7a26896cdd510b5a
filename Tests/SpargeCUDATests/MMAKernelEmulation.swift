import Foundation
@testable import SpargeCUDA
import SpargeKernels

/// The `mma.sync` attention kernel (`AttentionKernelSource.source`, `sparge_attention` and `sparge_finish`)
/// compiled as C++ for the host and run by a thread per CUDA thread (`LAUNCH_THREADS`). Only the PTX is
/// replaced (`SPARGE_HOST_EMULATION`): the loads into shared memory, `ldmatrix`, the tensor-core `mma`s, the
/// warp shuffles, `ex2`/`lg2` and the conversions of P, each as the PTX ISA defines it for the lanes of a
/// warp, which meet at a barrier of their own for every warp-wide instruction. Everything else — the
/// swizzle, the fragment addressing, the masks, the online softmax, the λ rule, the state between launches —
/// is the kernel's own code.
struct MMAKernelEmulation {
    /// The kernel's specialisation (`AttentionKernel`'s defines).
    struct Shape: CustomStringConvertible {
        var dim: Int, blockK: Int, warps: Int, mTiles: Int
        var valuesInBF16 = false
        var int8 = true
        var rowsPerTile: Int { warps * 16 * mTiles }
        var description: String {
            "D \(dim), BK \(blockK), \(warps) warps × \(mTiles) m-tiles, P·V \(valuesInBF16 ? "bf16" : "fp16")\(int8 ? ", int8" : "")"
        }
    }

    let shape: Shape
    let program: HostKernelProgram

    init(_ shape: Shape) throws {
        self.shape = shape
        let name = "mma-\(shape.dim)-\(shape.blockK)-\(shape.warps)-\(shape.mTiles)-\(shape.valuesInBF16 ? 1 : 0)-\(shape.int8 ? 1 : 0)"
        program = try HostKernelProgram.build(
            name: name, source: HostKernelProgram.prelude + Self.warp + AttentionKernelSource.source + Self.harness,
            defines: ["HEAD_DIM": shape.dim, "BLOCK_K": shape.blockK, "NWARPS": shape.warps, "MT": shape.mTiles,
                      "QK_INT8": shape.int8 ? 1 : 0, "QK_BF16": 0, "PV_BF16": shape.valuesInBF16 ? 1 : 0])
    }

    /// One call: Q `[Hq][rows][D]` and K `[Hkv][kvRows][D]` int8 with their scales and Q's row shifts, V
    /// `[Hkv][kvRows][D]` as P·V's 16-bit patterns, the tiles (head, first row, rows, first query), and per
    /// launch its work list (tile, first entry, entries) into `blocks`. One launch writes the output itself;
    /// several carry the softmax state between them and `sparge_finish` normalises.
    struct Call {
        var queryHeads: Int, kvHeads: Int, rows: Int, seqLen: Int, kvRows: Int
        var causal: Bool
        var qScale: Float, pvThreshold: Float
        var queries: [Int8], queryScales: [Float], rowShifts: [Float]
        var keys: [Int8], keyScales: [Float]
        var values: [UInt16]
        var tiles: [(head: Int, localRow: Int, rowCount: Int, queryStart: Int)]
        var blocks: [Int32]
        var launches: [[(tile: Int, first: Int, count: Int)]]
    }

    /// The normalised output `[Hq][rows][D]` and the LSE `[Hq][rows]`.
    func run(_ call: Call) throws -> (output: [Float], lse: [Float]) {
        let r = try runCounting(call)
        return (r.output, r.lse)
    }

    /// `run`, and each tile's counters after the last launch: key blocks visited, P·V computed, skipped by λ.
    func runCounting(_ call: Call) throws -> (output: [Float], lse: [Float],
                                              counters: [(visited: Int, computed: Int, skipped: Int)]) {
        var input = Data()
        input.append(ints: [call.queryHeads, call.kvHeads, call.rows, call.seqLen, call.kvRows, call.causal ? 1 : 0,
                            call.tiles.count, call.blocks.count, call.launches.count])
        input.append(floats: [call.qScale, call.pvThreshold, call.pvThreshold < SpargeConfig.lambdaOff ? 1 : 0])
        call.queries.withUnsafeBytes { input.append(contentsOf: $0) }
        input.append(floats: call.queryScales)
        input.append(floats: call.rowShifts)
        call.keys.withUnsafeBytes { input.append(contentsOf: $0) }
        input.append(floats: call.keyScales)
        call.values.withUnsafeBytes { input.append(contentsOf: $0) }
        input.append(ints: call.tiles.flatMap { [$0.head, $0.localRow, $0.rowCount, $0.queryStart] })
        input.append(ints: call.blocks.map(Int.init))
        for launch in call.launches {
            input.append(ints: [launch.count] + launch.flatMap { [$0.tile, $0.first, $0.count] })
        }
        let out = try program.run("attend", input)
        let count = call.queryHeads * call.rows
        let counters = out.values(Int32.self, at: (count * shape.dim + count) * 4, count: 4 * call.tiles.count)
        return (out.values(Float.self, count: count * shape.dim), out.values(Float.self, at: count * shape.dim * 4, count: count),
                (0..<call.tiles.count).map { (Int(counters[4 * $0]), Int(counters[4 * $0 + 1]), Int(counters[4 * $0 + 2])) })
    }

    /// The kernel's PTX as host C++ (before the kernel source, which then skips its own).
    static let warp = #"""
#define SPARGE_HOST_EMULATION 1
#define __launch_bounds__(n)
#define __restrict__
// Shared memory: the block's, seen by all its threads (one block runs at a time).
extern "C" { unsigned char smem[1 << 18]; }  // (C linkage: the kernel, extern "C", declares it)
static inline unsigned shared_address(const void* p) { return (unsigned)((const unsigned char*)p - smem); }

// The lanes of each warp exchange their operands through slots and meet at their own barrier.
static pthread_barrier_t warp_barriers[32];
struct WarpSlots { unsigned words[32][4]; unsigned b[32][2]; float value[32]; unsigned address[32]; };
static WarpSlots warp_slots[32];
static inline int lane_id() { return (int)(threadIdx.x % 32); }
static inline WarpSlots& slots() { return warp_slots[threadIdx.x / 32]; }
static inline void warp_sync() { pthread_barrier_wait(&warp_barriers[threadIdx.x / 32]); }

static float __shfl_xor_sync(unsigned, float v, int mask) {
    slots().value[lane_id()] = v;
    warp_sync();
    float r = slots().value[lane_id() ^ mask];
    warp_sync();
    return r;
}

// cp.async: copies wait in the thread's queue until a wait_group completes their group (the latest a GPU may
// land them), so that a read before its wait sees stale bytes. src-size < 16 fills the rest with zeros.
struct PendingCopy { unsigned dst; const void* src; int bytes, group; };
static __thread PendingCopy pending[512];
static __thread int pendingCount, committed;
static void cp_async16(unsigned dst, const void* src, int bytes) {
    if (pendingCount == 512) { fprintf(stderr, "cp.async queue full\n"); exit(3); }
    pending[pendingCount++] = PendingCopy{dst, src, bytes, committed};
}
static void cp_async_commit() { ++committed; }
template <int N> static void cp_async_wait() {
    int kept = 0;
    for (int i = 0; i < pendingCount; ++i) {
        PendingCopy c = pending[i];
        if (c.group < committed - N) {
            memset(smem + c.dst, 0, 16);
            memcpy(smem + c.dst, c.src, c.bytes);
        } else {
            pending[kept++] = c;
        }
    }
    pendingCount = kept;
}

// ldmatrix .x4 .b16: matrix j's eight rows at the addresses of lanes 8j…8j+7; lane t receives row t/4, 16-bit
// elements 2(t%4) and 2(t%4)+1 of it, or with .trans elements [2(t%4)][t/4] and [2(t%4)+1][t/4].
static void ldmatrix_x4(unsigned* r, unsigned addr, bool trans) {
    const int t = lane_id();
    slots().address[t] = addr;
    warp_sync();
    for (int j = 0; j < 4; ++j) {
        if (!trans) {
            memcpy(&r[j], smem + slots().address[8 * j + t / 4] + 4 * (t % 4), 4);
        } else {
            unsigned short lo, hi;
            memcpy(&lo, smem + slots().address[8 * j + 2 * (t % 4)] + 2 * (t / 4), 2);
            memcpy(&hi, smem + slots().address[8 * j + 2 * (t % 4) + 1] + 2 * (t / 4), 2);
            r[j] = lo | (unsigned)hi << 16;
        }
    }
    warp_sync();
}
static void ldmatrix4(unsigned& r0, unsigned& r1, unsigned& r2, unsigned& r3, unsigned addr) {
    unsigned r[4]; ldmatrix_x4(r, addr, false); r0 = r[0]; r1 = r[1]; r2 = r[2]; r3 = r[3];
}
static void ldmatrix4_trans(unsigned& r0, unsigned& r1, unsigned& r2, unsigned& r3, unsigned addr) {
    unsigned r[4]; ldmatrix_x4(r, addr, true); r0 = r[0]; r1 = r[1]; r2 = r[2]; r3 = r[3];
}

// fp16 and bf16 from float, to nearest even (finite values; beyond fp16's range ∞), and back.
static unsigned short f16_bits(float x) {
    unsigned short sign = signbit(x) ? 0x8000 : 0;
    double a = fabs((double)x);
    if (a < 0x1p-14) return sign | (unsigned short)nearbyint(a * 0x1p24);
    int e; frexp(a, &e); e -= 1;  // a = m·2^e, 1 ≤ m < 2
    double m = nearbyint((a / ldexp(1.0, e) - 1) * 1024);
    if (m == 1024) { m = 0; e += 1; }
    if (e > 15) return sign | 0x7c00;
    return sign | (unsigned short)((e + 15) << 10) | (unsigned short)m;
}
static float f16_value(unsigned short h) {
    int e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp((double)m, -24) : e == 31 ? INFINITY : ldexp(1024.0 + m, e - 25);
    return (float)((h & 0x8000) ? -v : v);
}
static unsigned short bf16_bits(float x) { unsigned u; memcpy(&u, &x, 4); return (unsigned short)((u + 0x7fff + ((u >> 16) & 1)) >> 16); }
static float bf16_value(unsigned short h) { unsigned u = (unsigned)h << 16; float f; memcpy(&f, &u, 4); return f; }
#if PV_BF16
#define pv_bits bf16_bits
#define pv_value bf16_value
#else
#define pv_bits f16_bits
#define pv_value f16_value
#endif
static unsigned pack_pv(float lo, float hi) { return pv_bits(lo) | (unsigned)pv_bits(hi) << 16; }
// ex2.approx.ftz, lg2.approx.ftz: the exact functions, subnormal results flushed.
static float fast_exp2(float x) { float y = exp2f(x); return y < 0x1p-126f ? 0.f : y; }
static float fast_log2(float x) { return log2f(x); }

// mma m16n8k16 (P·V) and m16n8k32 int8 (Q·Kᵀ): the warp's fragments gathered, each lane computing its own
// four accumulators (rows g, g+8, columns 2(t%4), 2(t%4)+1; g = t/4). PTX ISA, "Matrix Fragments for
// mma.m16n8k16 with floating point type" and "... mma.m16n8k32": A register i holds row g + 8(i%2) at
// columns (bytes of k) 4(t%4)… of its 16-byte half i/2; B register i holds column g at k of half i.
static void gather(const unsigned* a, unsigned b0, unsigned b1) {
    const int t = lane_id();
    memcpy(slots().words[t], a, 16);
    slots().b[t][0] = b0; slots().b[t][1] = b1;
    warp_sync();
}
// Byte `byte` (0…3) of the register of A holding (row, k-byte) and of B holding (k-byte, column).
static unsigned a_word(int row, int kb) { return slots().words[4 * (row % 8) + (kb % 16) / 4][row / 8 + 2 * (kb / 16)]; }
static unsigned b_word(int kb, int col) { return slots().b[4 * col + (kb % 16) / 4][kb / 16]; }
static void mma_pv(float* c, const unsigned* a, unsigned b0, unsigned b1) {
    gather(a, b0, b1);
    const int t = lane_id();
    for (int i = 0; i < 4; ++i) {
        const int row = t / 4 + 8 * (i / 2), col = 2 * (t % 4) + i % 2;
        double sum = 0;
        for (int k = 0; k < 16; ++k) {  // element k is bytes 2k, 2k+1
            float x = pv_value((unsigned short)(a_word(row, 2 * k) >> (16 * (k % 2))));
            float y = pv_value((unsigned short)(b_word(2 * k, col) >> (16 * (k % 2))));
            sum += (double)x * y;
        }
        c[i] = (float)((double)c[i] + sum);
    }
    warp_sync();
}
#if QK_INT8
static void mma_qk(float* c, const unsigned* a, unsigned b0, unsigned b1) {
    gather(a, b0, b1);
    const int t = lane_id();
    for (int i = 0; i < 4; ++i) {
        const int row = t / 4 + 8 * (i / 2), col = 2 * (t % 4) + i % 2;
        int acc; memcpy(&acc, &c[i], 4);
        for (int k = 0; k < 32; ++k)
            acc += (int)(signed char)(a_word(row, k) >> (8 * (k % 4))) * (int)(signed char)(b_word(k, col) >> (8 * (k % 4)));
        memcpy(&c[i], &acc, 4);
    }
    warp_sync();
}
#else
#error "the emulation takes the int8 Q·Kᵀ (QK_INT8)"
#endif

"""#

    /// `attend`: the call's inputs in `Call`'s order, its launches, the output and LSE out.
    static let harness = #"""

template <typename T> static T* take_array(long long count) { T* p = (T*)calloc(count + 1, sizeof(T)); take(p, count * sizeof(T)); return p; }

int main(int argc, char** argv) {
    if (argc != 4 || strcmp(argv[1], "attend") != 0) return 2;
    in_file = fopen(argv[2], "rb");
    FILE* out_file = fopen(argv[3], "wb");
    if (!in_file || !out_file) return 2;
    alarm(600);
    const int heads = (int)take_int(), kvHeads = (int)take_int(), rows = (int)take_int(), seqLen = (int)take_int();
    const int kvRows = (int)take_int(), causal = (int)take_int(), tileCount = (int)take_int(), blockCount = (int)take_int();
    const int launches = (int)take_int();
    float scales[3]; take(scales, 12);  // qScale, pvThreshold, whether the λ rule runs
    const long long queryRows = (long long)heads * rows;
    signed char* q = take_array<signed char>(queryRows * D);
    float* qScales = take_array<float>(queryRows);
    float* rowShifts = take_array<float>(queryRows);
    signed char* k = take_array<signed char>((long long)kvHeads * kvRows * D);
    float* kScales = take_array<float>((long long)kvHeads * kvRows / BK);
    u16* v = take_array<u16>((long long)kvHeads * kvRows * D);
    i4* tiles = (i4*)calloc(tileCount + 1, sizeof(i4));
    for (int i = 0; i < tileCount; ++i) { tiles[i].x = (int)take_int(); tiles[i].y = (int)take_int(); tiles[i].z = (int)take_int(); tiles[i].w = (int)take_int(); }
    int* blocks = (int*)calloc(blockCount + 1, sizeof(int));
    for (int i = 0; i < blockCount; ++i) blocks[i] = (int)take_int();
    float* oacc = (float*)calloc(queryRows * D, 4);
    f2* ml = (f2*)calloc(queryRows, sizeof(f2));
    float* out = (float*)malloc(queryRows * D * 4);
    float* lse = (float*)malloc(queryRows * 4);
    for (long long i = 0; i < queryRows * D; ++i) out[i] = NAN;  // a row the kernel does not write stays NaN
    for (long long i = 0; i < queryRows; ++i) lse[i] = NAN;
    TileCounters* counters = (TileCounters*)calloc(tileCount + 1, sizeof(TileCounters));
    for (int w = 0; w < NWARPS; ++w) pthread_barrier_init(&warp_barriers[w], 0, 32);
    for (int launch = 0; launch < launches; ++launch) {
        const int items = (int)take_int();
        i4* work = (i4*)calloc(items + 1, sizeof(i4));
        for (int i = 0; i < items; ++i) { work[i].x = (int)take_int(); work[i].y = (int)take_int(); work[i].z = (int)take_int(); }
        SpargeMmaParams mp;
        memset(&mp, 0, sizeof mp);
        SpargeAttentionParams& p = mp.p;
        p.q = (const u16*)q; p.k = (const u16*)k; p.v = v;
        p.oacc = oacc; p.ml = ml;
        p.out = launches == 1 ? out : 0; p.lse = launches == 1 ? lse : 0;
        p.counters = counters; p.tiles = tiles; p.work = work; p.blocks = blocks;
        p.rows = rows; p.seqLen = seqLen; p.kvRows = kvRows; p.group = heads / kvHeads;
        p.qScale = scales[0]; p.pvThreshold = scales[1]; p.causal = causal; p.lambda = scales[2] != 0.f;
        mp.scales.qScales = qScales; mp.scales.kScales = kScales; mp.scales.rowShifts = rowShifts;
        if (items > 0) LAUNCH_THREADS(items, THREADS, sparge_attention(mp));
    }
    if (launches > 1) LAUNCH((queryRows * D / 4 + 63) / 64, 64, sparge_finish(oacc, ml, out, lse, queryRows, rowShifts));
    fwrite(out, 4, queryRows * D, out_file);
    fwrite(lse, 4, queryRows, out_file);
    fwrite(counters, sizeof(TileCounters), tileCount, out_file);
    fclose(out_file);
    return 0;
}
"""#
}
