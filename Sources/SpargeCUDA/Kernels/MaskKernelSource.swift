/// CUDA C++ source of the mask-prediction kernels (DESIGN.md §1, steps 2–6), compiled by NVRTC.
///
/// The mask a GPU predicts must be the CPU's bit for bit, so these kernels repeat the CPU's arithmetic
/// operation for operation (`BlockSummaries.summarizeBlock`, `MaskPredictor.predictRows`,
/// `PortableExp.exp`): the same operations in the same order, every rounding written out (`__dadd_rn`,
/// `__dmul_rn`, … are never contracted into a fused multiply-add; `fma` is used exactly where the CPU's SIMD
/// `addProduct` fuses). That is why each thread owns one whole serial sum of the CPU's and walks it in the
/// CPU's order, and parallelism comes only from running many such sums at once.
///
/// - `sparge_summarize_blocks`: a thread block per (head, block), its rows staged in shared memory: the row
///   norms (thread per row: four partial sums of squares, as the CPU), the column sums for the mean and
///   `Σ x_r·RN(1/‖x_r‖)` (thread per dimension), then `‖Σ x_r·RN(1/‖x_r‖)‖²/n² > θ`.
/// - `sparge_scores`: one thread per (mask row, key block): the compressed score, a Double dot with the
///   CPU's sixteen accumulators (queries stored transposed so that a warp's reads are contiguous).
/// - `sparge_select_rows`: one thread per mask row: the Float softmax in the CPU's summation order, and the
///   TopCdf/TopK selection from a min-heap of `(~bits(p) << 32) | j` keys, in scratch arrays interleaved
///   across threads; `sparge_select_rows_sorted`, where a row fits shared memory: a thread block per row that
///   sorts the same keys.
/// - TopK over longer rows (`sparge_topk.cu`): `sparge_softmax_rows`, a thread per row (the same softmax, the
///   exps left in the scores), then `sparge_topk_rows`, a thread block per row: a radix select of the k-th
///   rank key and the blocks before it.
/// - `sparge_mask_rules`: one thread block per mask row: the force-on rules in the CPU's order.
///
/// Inputs are assumed finite, as on the CPU: a score that overflows to ±∞ (or a NaN input) gives NaN
/// probabilities, which the CPU's selection and this one order differently.
///
/// The source also compiles as plain C++ with a small prelude that stands in for the CUDA built-ins; the
/// test suite runs it that way on the host (no GPU needed) and compares with the CPU, bit for bit.
enum MaskKernelSource {
    static let program = "sparge_mask.cu"

    /// Needs `HEAD_DIM` defined.
    static let source = String(decoding: PackageResources.sparge_mask_cu, as: UTF8.self)
        + String(decoding: PackageResources.sparge_topk_cu, as: UTF8.self)
}
