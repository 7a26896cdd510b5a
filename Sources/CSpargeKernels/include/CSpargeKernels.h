// CSpargeKernels: the attention tile's micro-kernels (fp32, and AttentionPrecision.int8's integer products
// with their quantization), the mask's kernels (summaries, the K mean's sums, scores, exponentials, TopK's
// selection), compiled once per x86 ISA, and the CPU feature test that picks among them. SpargeKernels is the
// only caller; this target has no API of its own.
//
// Why C: Swift can compile code for one CPU per module only (`-target-cpu`, an unsafe flag), while one
// binary has to run the best kernels of whatever CPU it lands on. Here the same kernel source
// (tile_kernels.h) is included once per ISA inside `#pragma clang attribute push(target(...))`, so every
// instantiation is compiled for its own ISA in a portable build, and `sparge_cpu_isa` says which one this
// CPU can run (cpuid, and xgetbv for the OS's saving of the wide registers).
//
// Layout (see AttentionTile): queries are packed transposed as Q̂ᵀ[D][stride], scores as Sᵀ[keys][stride],
// the output accumulator as Oᵀ[D][L]; L (`lanes`, the lanes computed) is a multiple of 64, `stride` ≥ L;
// K and V blocks are row-major [keys][D]. Every function handles any D ≥ 1 and any key count 0…blockK.
#ifndef CSPARGEKERNELS_H
#define CSPARGEKERNELS_H

#ifdef __cplusplus
extern "C" {
#endif

/// The kernel sets, in the order of preference (a larger value needs more of the CPU).
typedef enum {
    SPARGE_ISA_PORTABLE = 0,     ///< x86-64 baseline (SSE2) or any other CPU: 4-wide vectors, no FMA
    SPARGE_ISA_AVX2 = 1,         ///< AVX2 + FMA: 8-wide, 16 registers
    SPARGE_ISA_AVX512 = 2,       ///< AVX-512F and VL: 16-wide, 32 registers
    SPARGE_ISA_AVX512_BF16 = 3,  ///< AVX-512 plus AVX512-BF16 and AVX512-VNNI (AMD Zen 4 and later, Cooper Lake)
    SPARGE_ISA_AMX = 4,          ///< AVX-512 plus AMX-BF16 tiles and AVX512-BF16, AMX-INT8 for int8's scores where present (Sapphire Rapids and later)
} sparge_isa;

/// The best kernel set this CPU and its OS support. For AMX it also asks Linux once for the permission to
/// use the tile registers (arch_prctl ARCH_REQ_XCOMP_PERM); where that fails the answer is AVX512-BF16.
int sparge_cpu_isa(void);

/// Sᵀ[c][r] = Σ_i K[c][i]·Q̂ᵀ[i][r] for c < keyCount, r < lanes; rowMax[r] = max(rowMax[r], max_c Sᵀ[c][r]).
/// Meanwhile it asks for the first `aheadBytes` bytes at `aheadKeys` and `aheadValues` (the block visited
/// next; NULL for none) to be brought into the cache, a few lines per micro-kernel: blocks that come from
/// the L3 cost a quarter of the rate otherwise, and one burst of prefetches before a block did not help.
typedef void (*sparge_scores_fn)(const float *queriesT, long stride, long lanes, const float *keys, long dim,
                                 long keyCount, float *scores, float *rowMax, const void *aheadKeys,
                                 const void *aheadValues, long aheadBytes);
/// The online-softmax update of one block (OnlineSoftmax's merge with the block as side B, β folded into
/// the exponentials): per lane r, m = max(m_prev, blockMax), α = 2^(m_prev − m), Pᵀ[c][r] = 2^(Sᵀ[c][r] − m)
/// in place, sum = α·sum + Σ_c Pᵀ[c][r], runningMax = m, and α replaces blockMax. Where m is −inf the
/// exponents are taken against 0 (all of them are then 0, never NaN).
typedef void (*sparge_softmax_fn)(float *scores, long stride, long lanes, long keyCount, float *blockMaxThenAlpha,
                                  float *runningMax, float *runningSum);
/// Oᵀ[i][r] = α[r]·Oᵀ[i][r] + Σ_c V[c][i]·Pᵀ[c][r] for i < dim, r < lanes.
typedef void (*sparge_pv_fn)(const float *probabilities, long stride, long lanes, const float *values, long dim,
                             long keyCount, const float *alpha, float *outputT);
/// 2·16·chains·iterations FLOPs of independent FMA chains (the ceiling probe); returns a value that depends on
/// every chain, so that none is removed.
typedef float (*sparge_fma_probe_fn)(long iterations);

/// AttentionPrecision.int8's products (layouts in tile_kernels_int8.h: int16 pairs packed in 32-bit words,
/// along the sum). Scores: Sᵀ[c][r] = laneScale[r]·(keyScale·Σ_i q[r][i]·k[c][i] + Σ_i q[r][i]·keyMean[i])
/// with integer sums, the second term skipped when keyMean is NULL (else it holds 2·pairs floats); rowMax
/// and the prefetch as `sparge_scores_fn`.
typedef void (*sparge_int8_scores_fn)(const int *queriesT, long stride, long lanes, const float *laneScale,
                                      const int *keys, long pairs, long keyCount, float keyScale,
                                      const float *keyMean, float *scores, float *rowMax, const void *aheadKeys,
                                      const void *aheadValues, long aheadBytes);
/// `sparge_softmax_fn` with P quantized: p = round(16383·2^(S − m)) (ties to even), written as packed
/// pairs of keys over the first ⌈keyCount/2⌉ score rows; the sum adds p / 16383.
typedef void (*sparge_int8_softmax_fn)(float *scores, long stride, long lanes, long keyCount,
                                       float *blockMaxThenAlpha, float *runningMax, float *runningSum);
/// Oᵀ[i][r] = α[r]·Oᵀ[i][r] + valueScale[i]/16383·Σ_c v[c][i]·p[c][r], the sum in int32 over 64 keys at a time.
typedef void (*sparge_int8_pv_fn)(const int *probabilities, long stride, long lanes, const int *values, long dim,
                                  long keyCount, const float *valueScale, const float *alpha, float *outputT);
/// 2·vectorWidth·chains·iterations int16 multiply-adds in independent chains of the kernels' step,
/// `acc + vpmaddwd(x, y)` (the integer probe; the addition competes with vpmaddwd for the vector pipes).
typedef int (*sparge_madd_probe_fn)(long iterations);

/// AttentionPrecision.bf16 on bf16 operands: AMX-BF16 matrix tiles (tile_kernels_bf16.h) or AVX512-BF16 dot
/// products in vectors (dot_kernels_bf16.h), on the same layouts. bf16 values are 16-bit
/// words (StorageFormat.bf16's rounding), D is a multiple of 32, and Kp is the key count rounded up to 32:
///   Q̂ᵀ  [D/2][stride] 32-bit words: lane r of pair j = (bf16 q[r][2j], bf16 q[r][2j+1]), low half first;
///        the queries unscaled (the softmax applies the scale in fp32); lanes past the tile's rows 0
///   K    [Kp][D]  bf16 row-major, rows past the key count 0
///   Vᵀ   [D][Kp]  bf16, V transposed, columns past the key count 0
///   Pᵀ   [Kp/2][stride] words: lane r of pair j = (bf16 p[2j][r], bf16 p[2j+1][r]), over the score rows
/// Every product of two bf16 values is exact in fp32; sums are fp32 (the instructions' order, or the twin's).
/// A visit takes one key block or several (`sparge_bf16_block`, in key order): their keys are the visit's, one
/// after the other, and every block but the last holds a multiple of 32 keys, so that no padding lies between
/// them. Kp is then the visit's key count rounded up to 32 and Sᵀ and Pᵀ hold its keys in that order.
/// Scores: Sᵀ[c][r] = Σ_i q[r][i]·k[c][i] for c < Kp (the score block holds Kp rows), unscaled;
/// rowMax[r] = max(rowMax[r], scale·max_{c < keyCount} Sᵀ[c][r]); meanwhile the `aheadCount` blocks at
/// `ahead` (the next visit's; none: 0) are asked for, a few lines per micro-step, as `sparge_scores_fn` does.
typedef struct {
    const unsigned short *keys;     ///< K [Kp][D] of this block (its own Kp)
    const unsigned short *valuesT;  ///< Vᵀ [D][Kp]
    long keyCount;
} sparge_bf16_block;
typedef void (*sparge_bf16_scores_fn)(const unsigned *queriesT, long stride, long lanes, const sparge_bf16_block *blocks,
                                      long blockCount, long dim, float scale, float *scores, float *rowMax,
                                      const sparge_bf16_block *ahead, long aheadCount);
/// `sparge_softmax_fn` on unscaled scores: p = 2^(fma(Sᵀ, scale, −m)), the sum adds p in fp32, and Pᵀ holds
/// bf16(p) (ties to even; a p below 2⁻¹²⁶ may become 0) as pairs over the first Kp/2 score rows, 0 past
/// the key count (the visit's, over all its blocks).
typedef void (*sparge_bf16_softmax_fn)(float *scores, long stride, long lanes, long keyCount, float scale,
                                       float *blockMaxThenAlpha, float *runningMax, float *runningSum);
/// Oᵀ[i][r] = α[r]·Oᵀ[i][r] + Σ_{c < Kp} Vᵀ[i][c]·Pᵀ[c][r] for i < dim, r < lanes, over the blocks' keys in order.
typedef void (*sparge_bf16_pv_fn)(const unsigned *probabilities, long stride, long lanes, const sparge_bf16_block *blocks,
                                  long blockCount, long dim, const float *alpha, float *outputT);

/// The bf16 tile kernels of one set (all NULL where the set has no bf16 products). On AMX the kernels
/// configure the calling thread's tiles at their first call and keep the configuration; `release` gives the
/// tiles back (call it when the thread's share of work is done, or before other code on the thread uses
/// tiles; elsewhere it does nothing).
typedef struct {
    sparge_bf16_scores_fn scores;
    sparge_bf16_softmax_fn softmax;
    sparge_bf16_pv_fn pv;
    void (*release)(void);
    /// The ceiling of the set's bf16 products, for `PeakFlops`: `iterations` rounds of independent products
    /// on its instruction (VDPBF16PS chains, or TDPBF16PS on four tiles), `probeFlops` FLOPs a round (2 per
    /// multiply-add); returns a value that keeps them alive. NULL (and 0) where the set has no instruction of
    /// its own (the twin, the stand-ins).
    float (*probe)(long iterations);
    long probeFlops;
} sparge_bf16_tile_kernels;

/// One ISA's kernels.
typedef struct {
    sparge_scores_fn scores;
    sparge_softmax_fn softmax;
    sparge_pv_fn pv;
    sparge_fma_probe_fn fmaProbe;
    /// Floats per vector register, and FMAs in flight per iteration of `fmaProbe` (its chains × 16 / width).
    long vectorWidth;
    long probeChains;
    sparge_int8_scores_fn int8Scores;
    sparge_int8_softmax_fn int8Softmax;
    sparge_int8_pv_fn int8PV;
    sparge_madd_probe_fn maddProbe;
    /// The mask's compressed score Σ a[j]·b[j] in Double, in MaskPredictor.dotDouble's exact order.
    double (*dotDouble)(const double *a, const double *b, long d);
    /// `count` f16 values widened to float, exactly (what Swift's Float(Float16) gives; a NaN stays a NaN).
    void (*widenF16)(const unsigned short *halves, long count, float *out);
    /// `count` floats rounded to f16, to nearest even (what Swift's Float16(Float) gives; a NaN stays a NaN);
    /// returns 0 when a finite value overflowed to ±∞ (beyond ±65504), else 1.
    int (*narrowF16)(const float *values, long count, unsigned short *out);
    /// bf16 products on bf16 operands (the AVX512-BF16 and AMX sets only).
    sparge_bf16_tile_kernels bf16;
    /// One block's summary for the mask, bit for bit as `BlockSummaries.summarizeBlock` (block_summaries.h):
    /// meanOut[j] = Float(Σ_r Double(x[r][j] − mean[j]) / n) over `n` rows of `d`, and, with
    /// `needSimilarity`, returns the self-similarity (NaN when a row is zero), else 0. `scratch`: 2·d doubles.
    double (*summarizeBlock)(const float *x, long n, long d, const float *mean, float *meanOut, double *scratch,
                             int needSimilarity);
    /// A tile's output rows from its accumulator Oᵀ (`dim` rows of `lanes`): output[r][i] = Oᵀ[i][r] · (1 /
    /// runningSum[r]) for r < rows (0 where the sum is not positive), rows of `dim` (finish_rows.h).
    void (*finishRows)(const float *outputT, long lanes, long dim, long rows, const float *runningSum,
                       float *output);
    /// `dotDouble(a, Double(b + k·d), d)` into out[k] for `count` rows of `d` floats at `b`, widened exactly (the
    /// same Doubles as on the widened rows, several rows at a time).
    void (*dotDoubleRows)(const double *a, const float *b, long count, long d, double *out);
    /// A mask row's softmax numerators and their sum, bit for bit as `MaskPredictor.selectBlocks` defines them
    /// (mask_exp.h): scores[j] ← 0 where it is −∞, else PortableExp.exp(scores[j] − max); returns their Float
    /// sum in ascending j.
    float (*maskExpRow)(float *scores, long count, float max);
} sparge_tile_kernels;

/// The key count the bf16 tile kernels pad a block to (a multiple of 32).
static inline long sparge_bf16_padded_keys(long keyCount) { return (keyCount + 31) / 32 * 32; }
/// A visit's real keys: the sum of its blocks' key counts.
static inline long sparge_bf16_visit_keys(const sparge_bf16_block *blocks, long blockCount) {
    long keys = 0;
    for (long b = 0; b < blockCount; b++) keys += blocks[b].keyCount;
    return keys;
}
/// bf16(x): the nearest bfloat16, ties to even (NaN stays a quiet NaN), StorageFormat.bf16Bits exactly.
unsigned short sparge_bf16(float x);
/// 2^x by the kernels' recipe for P (vector_ops.h's vexp2_probability: relative error ≤ 1.02e-4, below
/// bf16's rounding) on one value: what the bf16 tile kernels' softmax computes, for twins that must round
/// the same p to bf16.
float sparge_bf16_exp2(float x);
/// A bf16 word as the tile instructions read it: the float, with denormals as 0.
float sparge_bf16_widened(unsigned short w);
/// One key/value block (`rows` × `dim`, row-major fp32) as the bf16 tile kernels take it: K [Kp][dim] and
/// Vᵀ [dim][Kp] (Kp = sparge_bf16_padded_keys(rows)), zero padded.
void sparge_pack_bf16_block(const float *keys, const float *values, long rows, long dim, unsigned short *packedKeys,
                            unsigned short *valuesT);
/// sparge_pack_bf16_block for a block already stored in bf16 (`rows` × `dim` words, StorageFormat.bf16): the
/// same packed bits, without widening it first (a NaN of any payload becomes 0x7FC0, as bf16(x) makes it).
void sparge_pack_bf16_block_stored(const unsigned short *keys, const unsigned short *values, long rows, long dim,
                                   unsigned short *packedKeys, unsigned short *valuesT);
/// TopK's threshold for a mask row (mask_select.c): the keep-th smallest (1 ≤ keep ≤ count) of `count`
/// distinct keys; `keys` is only read, `scratch` (2·count keys) overwritten.
unsigned long long sparge_select_smallest(const unsigned long long *keys, unsigned long long *scratch, long count,
                                          long keep);
/// The K mean's partial sums (KeyMean.init(summing:rows:), key_mean.c): sums[j] = Σ_r Double(x[r·dim + j])
/// over `rows` rows, each column from zero in row order: `KeyMean.columnSumsTwin`'s Doubles, on every ISA.
void sparge_key_column_sums(const float *x, long rows, long dim, double *sums);
/// out[i] = bf16(values[i]) for `count` values (StorageFormat.bf16Bits exactly), in vectors.
void sparge_bf16_round(const float *values, long count, unsigned short *out);
/// Q̂ᵀ for the bf16 tile kernels: `rows` query rows (`rows × dim`, unscaled) into [dim/2][stride] words;
/// lanes rows…lanes−1 are 0.
void sparge_pack_bf16_queries(const float *queries, long rows, long dim, long stride, long lanes,
                              unsigned *queriesT);
/// The scalar twin of the bf16 tile kernels: the same definitions in plain loops (sums in the order of i and
/// c), on any CPU.
sparge_bf16_tile_kernels sparge_bf16_twin(void);
/// For measurement: bf16 tile kernels that compute nothing and keep a valid online-softmax state (every
/// block maximum 0, every p 1, α 1; the output accumulator untouched). A pass on them costs what its driver
/// costs around the kernels (`sparge bench-kernel --dense`, SPARGE_BF16_TILES=bookkeeping). The score block is
/// not written, so a causal diagonal block, whose maxima the driver reads from it, sees arbitrary values.
sparge_bf16_tile_kernels sparge_bf16_bookkeeping(void);

/// AttentionPrecision.int8's rounding (its one implementation): n[i] = round((x[i] − mean[i % dim]) / s),
/// ties to even, with s = max|x − mean| / limit over the `count` values (rows of `dim`; mean NULL: 0).
/// Returns s; all n are 0 where s is 0.
float sparge_quantize(const float *x, long count, long dim, const float *mean, float limit, short *n);
/// mean[i] = Σ_r x[r][i] / rows over `rows` rows of `dim`, summed in row order.
void sparge_column_mean(const float *x, long rows, long dim, float *mean);
/// One key/value block for the int8 kernels: keys smoothed by `keyMean` (2·⌈dim/2⌉ floats, the column
/// mean, 0-padded) and quantized to int8 with one scale (`*keyScale`) into `keys` ([rows][⌈dim/2⌉] pairs);
/// values quantized per dimension to |v| ≤ 2047 (scale valueScale[i]) into `values` ([⌈rows/2⌉][dim]
/// pairs of rows).
void sparge_quantize_block(const float *keys, const float *values, long rows, long dim, int *packedKeys,
                           float *keyMean, float *keyScale, int *packedValues, float *valueScale);

/// The kernels of `isa` (any value of `sparge_isa`; the caller checks `sparge_cpu_isa` first).
sparge_tile_kernels sparge_kernels(int isa);

#if defined(__x86_64__)
/// For tests: the AVX-512 kernels' source and blocking compiled for AVX2 (runs wherever AVX2 does).
sparge_tile_kernels sparge_kernels_avx512_blocking(void);
/// For tests: the AMX set's bf16 kernels (tile_kernels_bf16.h) with the tile instructions emulated in C and
/// the vectors compiled for AVX2: their loops, tails, strides and layouts, runnable without AMX.
sparge_bf16_tile_kernels sparge_bf16_emulated(void);
/// For tests: the AVX512-BF16 set's bf16 kernels (dot_kernels_bf16.h) with VDPBF16PS written out in C (in the
/// scalar twin's order) and the vectors compiled for AVX2, runnable without AVX512-BF16.
sparge_bf16_tile_kernels sparge_bf16_dot_emulated(void);
/// For tests: the AMX set's int8 scores (tile_kernels_int8_amx.h, TDPBSSD) with the tile instructions emulated
/// in C and the vectors compiled for AVX2.
sparge_int8_scores_fn sparge_int8_scores_amx_emulated(void);
#endif

#ifdef __cplusplus
}
#endif
#endif
