// The float arithmetic of AttentionPrecision.int8's scores around their integer sums, in one place, so that
// every kernel that computes the sums (vector multiply-adds in tile_kernels_int8.h, AMX-INT8 tiles in
// tile_kernels_int8_amx.h) rounds them the same way: the same expressions, so the same fused or separate
// roundings on every set with the same target. Included after vector_ops.h.
#ifndef INT8_SCORE_TERMS_H
#define INT8_SCORE_TERMS_H

/// A lane's q·mean after pair j: `offset` plus its int16 pair `x` times (lo, hi) of the mean.
INLINE vfloat int8_offset_step(vfloat offset, vint x, vfloat lo, vfloat hi) {
    return offset + (vfloat_of((x << 16) >> 16) * lo + vfloat_of(x >> 16) * hi);
}

/// A score from its integer sum: (Σ q·k · keyScale + q·mean) · laneScale.
INLINE vfloat int8_score(vint sum, vfloat keyScale, vfloat offset, vfloat laneScale) {
    return (vfloat_of(sum) * keyScale + offset) * laneScale;
}
#endif
