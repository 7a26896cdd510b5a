// `bf16_pairs(lo, hi)` for the bf16 kernel sets (bf16_softmax.h): 16 words bf16(lo) | bf16(hi) << 16, ties
// to even, input denormals as 0 (P is never NaN). With BF16_PAIRS_NATIVE, AVX512-BF16's vcvtne2ps2bf16 and a
// vpermw; else the same bits in integer lanes, for the emulated sets that the tests run on AVX2. The
// including file includes vector_ops.h (VW = 16) first.
#if defined(BF16_PAIRS_NATIVE)
#include <immintrin.h>

/// vcvtne2ps2bf16 puts hi's 16 bf16 above lo's; vpermw interleaves them into (lo, hi) words.
INLINE vint bf16_pairs(vfloat lo, vfloat hi) {
    const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8,
                                                23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    __m512bh halves = _mm512_cvtne2ps_pbh((__m512)hi, (__m512)lo);
    return (vint)_mm512_permutexvar_epi16(interleave, (__m512i)halves);
}
#else
/// vcvtne2ps2bf16's rounding on integer lanes: input denormals as 0, then ties to even.
INLINE vbits bf16_rounded_bits(vfloat x) {
    vbits a = (vbits)x;
    a &= ~(vbits)((a & 0x7F800000u) == 0) | 0x80000000u;
    return a + 0x7FFFu + ((a >> 16) & 1u);
}
INLINE vint bf16_pairs(vfloat lo, vfloat hi) {
    return (vint)((bf16_rounded_bits(lo) >> 16) | (bf16_rounded_bits(hi) & 0xFFFF0000u));
}
#endif
