/// `exp` of a Float, computed by one explicit recipe that a GPU kernel repeats operation for operation, so
/// that the mask prediction's softmax gives the same bits on every backend (libm's `expf` and CUDA's `expf`
/// differ in the last bit now and then, and a last bit can move a TopCdf cut).
///
/// The recipe, all in Double with each operation rounded on its own (no fused multiply-add):
/// `k = rint(x·log₂e)`, `r = (x − k·ln2_hi) − k·ln2_lo` (Cody–Waite), the Taylor polynomial of `eʳ` to degree 13
/// by Horner, times `2ᵏ`, rounded to Float once. For `|r| ≤ ln2/2` the polynomial's error is below 10⁻¹⁷,
/// so the Float result is the correctly rounded `eˣ` except when `eˣ` lies within about 10⁻¹⁵ (relative) of
/// a point halfway between two Floats.
///
/// Its twins are the GPU's `sparge_exp` (`sparge_mask.cu`) and the CPU kernels' `mask_exp_row`
/// (`CSpargeKernels/mask_exp.h`, eight values at a time); change all three together.
public enum PortableExp {
    /// `eˣ`: 0 below −104 (where `eˣ` rounds to 0 in Float), +∞ above 89, NaN for NaN.
    @inlinable
    public static func exp(_ x: Float) -> Float {
        if x.isNaN { return x }
        if x < -104 { return 0 }
        if x > 89 { return .infinity }
        let xd = Double(x)
        let k = (xd * 1.4426950408889634).rounded(.toNearestOrEven)
        let r = (xd - k * 0.6931471803691238) - k * 1.9082149292705877e-10
        var p = 1.6059043836821613e-10
        p = p * r + 2.08767569878681e-09
        p = p * r + 2.505210838544172e-08
        p = p * r + 2.755731922398589e-07
        p = p * r + 2.7557319223985893e-06
        p = p * r + 2.48015873015873e-05
        p = p * r + 0.0001984126984126984
        p = p * r + 0.001388888888888889
        p = p * r + 0.008333333333333333
        p = p * r + 0.041666666666666664
        p = p * r + 0.16666666666666666
        p = p * r + 0.5
        p = p * r + 1.0
        p = p * r + 1.0
        // 2^k exactly (|k| ≤ 151 here, well inside Double's normal range).
        let twoToK = Double(bitPattern: UInt64(1023 + Int(k)) << 52)
        return Float(p * twoToK)
    }
}
