/// How much of a block mask is computed (DESIGN.md §1.7), as a sum that ranks can add up.
///
/// `density = computed / area`, where the area is every (head, query block, key block) pair held, or only
/// the block-causal ones when causal. Each rank counts its own rows; adding the counts of all ranks
/// gives the global density exactly (integers).
public struct MaskStatistics: Sendable, Equatable {
    /// Blocks computed.
    public var computed: Int
    /// Blocks that could be computed (the denominator).
    public var area: Int

    public init(computed: Int = 0, area: Int = 0) {
        self.computed = computed
        self.area = area
    }

    /// The counts of the rows held in `mask`; causal counts only the block-causal area (the mask has
    /// nothing outside it anyway). O(rows), whatever the number of key blocks.
    public init(mask: BlockMask, config: SpargeConfig) {
        self.init(computed: mask.computedCount, area: 0)
        for i in mask.queryBlocks {
            area += config.causal
                ? MaskPredictor.blockCausalLimit(queryBlock: i, blockQ: config.blockQ, blockK: config.blockK,
                                                 keyBlocks: mask.keyBlocks)
                : mask.keyBlocks
        }
        area *= mask.heads
    }

    /// Adds another rank's counts.
    public mutating func add(_ other: MaskStatistics) {
        computed += other.computed
        area += other.area
    }

    /// `computed / area` (0 when the area is empty).
    public var density: Double { area == 0 ? 0 : Double(computed) / Double(area) }
    /// `1 − density`.
    public var sparsity: Double { 1 - density }
}
