import SpargeKernels

/// Where a forward pass spent its time and what it moved, on one rank (and the run-wide mask density).
public struct ForwardStatistics: Sendable, Equatable {
    /// Computed blocks and block area over the whole run (block-causal area when causal).
    public var mask = MaskStatistics()
    /// The ring's traffic and time on this rank.
    public var ring = RingStatistics()
    /// Key blocks visited and P·V blocks skipped by the λ rule on this rank.
    public var attention = AttentionStatistics()
    /// Bytes of the summaries exchange (key summaries and need table) this rank contributed.
    public var summaryBytes = 0
    /// Whether the ring's payloads went to MPI from device memory (a CUDA-aware MPI), not through the host.
    public var messagesInPlace = false
    /// Seconds in each phase on this rank: pooling and exchanging summaries, predicting mask rows,
    /// the ring, and the whole call.
    public var summarySeconds = 0.0, maskSeconds = 0.0, ringSeconds = 0.0, totalSeconds = 0.0
    /// Within the ring's seconds, outside its steps: preparing the attention (its tiles and output) before
    /// the first step, and finishing it (normalized rows, LSE) after the last.
    public var setupSeconds = 0.0, finishSeconds = 0.0

    public init() {}
}

/// The result of a forward pass on one rank: its own rows only (the output stays sharded).
public struct ForwardResult: Sendable {
    /// Output `[Hq, localRows, D]`, rows in the order of the rank's token ranges.
    public var output: Tensor3
    /// Row log-sum-exp `[Hq][localRows]` (natural log of the scaled scores; `-inf` for a row that saw no key).
    public var lse: [Float]
    /// This rank's mask rows (its query blocks against all key blocks).
    public var mask: BlockMask
    /// Not-self-similar flags of this rank's query blocks `[Hq][rows]` and of every key block
    /// `[Hkv][nk]` (1 = self-similar), for pictures of the mask; empty after a dense pass on a GPU, which
    /// pools no summaries.
    public var querySelfSimilar: [UInt8]
    public var keySelfSimilar: [UInt8]
    /// Counters and timings.
    public var statistics: ForwardStatistics
}

/// A failure that every rank of the run agreed on; the message says what and, where known, which rank.
public struct ForwardError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
