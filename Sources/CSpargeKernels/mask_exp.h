// The mask's row softmax numerators (MaskPredictor.selectBlocks) in vectors, bit for bit as the Swift
// reference `PortableExp.exp` and the GPU's `sparge_exp` compute each one: every operation in Double, each
// rounded on its own (no FMA), then rounded to Float once. Included by tile_kernels.h (KERNEL, INLINE).
//
// One value in Swift is a chain of 28 dependent Double operations (Cody–Waite, then Horner to degree 13),
// and a row's values one after another left the row waiting on that chain: ~40% of mask prediction at
// N = 32768. Here eight values run side by side.
//
// k = rint(t), t = x·log₂e, comes from t plus and minus 1.5·2⁵² (round to nearest even for |t| < 2⁵¹; here
// |t| ≤ 151), and 2ᵏ from that sum's low bits: bits(t + 1.5·2⁵²) = bits(1.5·2⁵²) + k, whose low 12 bits plus
// 1023, shifted up 52, are 2ᵏ's bits (for x in [−104, 89], k lies in −150…128 and 1023 + k in 873…1151).

// 8-double vectors in inlined helpers: no ABI crosses a call, whatever the set's vector width.
#pragma clang diagnostic ignored "-Wpsabi"

typedef double mexp_d8 __attribute__((vector_size(64), aligned(8)));
typedef float mexp_f8 __attribute__((vector_size(32), aligned(4)));
typedef unsigned long long mexp_u8 __attribute__((vector_size(64), aligned(8)));
typedef int mexp_i8 __attribute__((vector_size(32), aligned(4)));

/// eˣ for eight Floats by PortableExp's recipe (only for x in [−104, 89]; the caller selects the rest).
INLINE mexp_f8 mask_exp8(mexp_f8 x) {
#pragma clang fp contract(off)
    const double magic = 6755399441055744.0;  // 1.5·2⁵²
    const mexp_d8 xd = __builtin_convertvector(x, mexp_d8);
    const mexp_d8 shifted = xd * 1.4426950408889634 + magic;
    const mexp_d8 k = shifted - magic;
    const mexp_d8 r = (xd - k * 0.6931471803691238) - k * 1.9082149292705877e-10;
    mexp_d8 p = r * 1.6059043836821613e-10 + 2.08767569878681e-09;
    p = p * r + 2.505210838544172e-08;
    p = p * r + 2.755731922398589e-07;
    p = p * r + 2.7557319223985893e-06;
    p = p * r + 2.48015873015873e-05;
    p = p * r + 0.0001984126984126984;
    p = p * r + 0.001388888888888889;
    p = p * r + 0.008333333333333333;
    p = p * r + 0.041666666666666664;
    p = p * r + 0.16666666666666666;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    const mexp_u8 twoToK = ((mexp_u8)shifted + 1023) << 52;
    return __builtin_convertvector(p * (mexp_d8)twoToK, mexp_f8);
}

/// PortableExp.exp(x) for one Float, the same recipe (the rows' tails).
INLINE float mask_exp1(float x) {
    mexp_f8 v = {x, 0, 0, 0, 0, 0, 0, 0};
    return mask_exp8(v)[0];
}

/// Lanes of `a` where `mask` is set (all ones), else of `b`.
INLINE mexp_f8 mask_select8(mexp_i8 mask, mexp_f8 a, mexp_f8 b) {
    return (mexp_f8)((mask & (mexp_i8)a) | (~mask & (mexp_i8)b));
}

/// scores[j] ← 0 where scores[j] = −∞, else PortableExp.exp(scores[j] − max) (the subtraction in Float),
/// for j < count; returns their Float sum in ascending j (MaskPredictor.selectBlocks' numerators and sum).
float KERNEL(mask_exp_row)(float *scores, long count, float max) {
#pragma clang fp contract(off)
    const float inf = __builtin_inff();
    const mexp_f8 zero = {0}, infinity = {inf, inf, inf, inf, inf, inf, inf, inf};
    long j = 0;
    for (; j + 8 <= count; j += 8) {
        const mexp_f8 s = *(const mexp_f8 *)(scores + j);
        const mexp_f8 x = s - max;
        // Outside [−104, 89] (and NaN) the recipe's value is replaced, so it may compute anything there.
        const mexp_i8 inRange = (x >= -104.0f) & (x <= 89.0f);
        mexp_f8 out = mask_select8(inRange, mask_exp8(mask_select8(inRange, x, zero)),
                                   mask_select8(x > 89.0f, infinity, zero));
        out = mask_select8(x != x, x, out);
        out = mask_select8(s == -inf, zero, out);
        *(mexp_f8 *)(scores + j) = out;
    }
    for (; j < count; j++) {
        const float s = scores[j], x = s - max;
        float e = x != x ? x : (x < -104.0f ? 0 : (x > 89.0f ? inf : mask_exp1(x)));
        scores[j] = s == -inf ? 0 : e;
    }
    float sum = 0;
    for (long i = 0; i < count; i++) sum += scores[i];
    return sum;
}
