/// How far an attention output is from a Double reference (the measures upstream SpargeAttn reports).
///
/// - `relativeL1 = Σ|o − ref| / Σ|ref|` (0 when both are all zero, +∞ when only `ref` is).
/// - `cosineSimilarity = Σ o·ref / (‖o‖ ‖ref‖)` over the flattened arrays (1 when both are all zero,
///   0 when exactly one is).
/// - `rmse = sqrt(Σ (o − ref)² / count)`.
/// Everything is accumulated in Double.
public struct ErrorMetrics: Sendable, Equatable {
    public let relativeL1: Double
    public let cosineSimilarity: Double
    public let rmse: Double

    /// The metrics of `output` against `reference` (same count, same order).
    public init(output: [Float], reference: [Double]) {
        precondition(output.count == reference.count, "ErrorMetrics: \(output.count) values vs \(reference.count)")
        var absDiff = 0.0, absRef = 0.0, dot = 0.0, oo = 0.0, rr = 0.0, sq = 0.0
        for i in 0..<output.count {
            let o = Double(output[i]), r = reference[i], e = o - r
            absDiff += abs(e); absRef += abs(r); dot += o * r; oo += o * o; rr += r * r; sq += e * e
        }
        relativeL1 = absRef > 0 ? absDiff / absRef : (absDiff == 0 ? 0 : .infinity)
        if oo == 0 || rr == 0 {
            cosineSimilarity = (oo == 0 && rr == 0) ? 1 : 0
        } else {
            cosineSimilarity = dot / (oo.squareRoot() * rr.squareRoot())
        }
        rmse = output.isEmpty ? 0 : (sq / Double(output.count)).squareRoot()
    }
}
