import SpargeKernels

/// One rank's attention work built on the device from the mask compacted there: the tile table and the
/// single launch's work list (`AttentionKernel.arrange`'s entries, longest lists first), with no
/// `AttentionPlan` on the host. With one rank the host's plan, table and lists stood between the mask and the
/// kernel with the device idle (0.15–0.2 ms at 32K tokens and 8 heads); here three small kernels queue
/// behind the compaction (`sparge_work_items` in sparge_resident.cu says how tiles are numbered and shared).
///
/// It takes one rank holding every token, its mask rows every query block in order, and a kernel whose CTA
/// takes a whole number of a query block's tiles (`applies`); other shapes keep the host's plan. The tiles
/// and their lists are the plan's; the CTAs may differ (the host pairs neighbouring tiles of two blocks where
/// their lists agree, the device only a block's own), which changes no result.
struct DeviceWorkList {
    /// `WorkShape` of sparge_resident.cu, field by field.
    struct Shape: BitwiseCopyable {
        var heads: Int32, queryBlocks: Int32, blockQ: Int32, tileQ: Int32, blockK: Int32, seqLen: Int32
        var causal: Int32, perCTA: Int32, keyBlocks: Int32
    }

    /// Compute tiles, and CTAs before any tail split.
    let tiles: Int, ctas: Int
    /// Per tile (head, local row, rows, first token), 4 × Int32.
    let tileTable: DeviceBuffer
    /// The launch's entries (tile, first key index, count, part), `perCTA` a CTA, longest lists first; the
    /// last ones are parts where the tail is split.
    let work: DeviceBuffer
    /// The tail split and its parts' slots, where the list's tail is split: then the first `kept` CTAs'
    /// entries are whole lists and the parts' follow.
    let tailParts: TailParts?

    /// Whether the device builds the work of `mask` (over `queryHeads` heads of `rows` rows) for a kernel
    /// taking `tilesPerCTA` tiles a CTA: the rows are every token and the mask's rows every query block of
    /// every head, in order (what the kernels index by); a CTA holds tiles of one query block only, so a
    /// block's tiles come in whole CTAs; and the key lists' indices fit the work list's Int32 (as
    /// `AttentionPlan` checks these, the host path throws where they fail).
    static func applies(mask: BlockMask, queryHeads: Int, rows: Int, seqLen: Int, config: SpargeConfig,
                        tilesPerCTA: Int) -> Bool {
        (try? config.validate()) != nil && rows == seqLen && mask.heads == queryHeads
            && mask.rowCount == (seqLen + config.blockQ - 1) / config.blockQ
            && mask.queryBlocks.elementsEqual(0..<mask.rowCount) && mask.keys.count <= Int(Int32.max)
            && (config.blockQ / config.computeTileQ) % tilesPerCTA == 0
    }

    /// Enqueues the work of `heads` query heads over `seqLen` tokens whose mask rows (`h · queryBlocks + r`)
    /// are the compaction's `rowStarts` (Int64, one past the last row included) and `keys` on the device.
    /// `tailSplit` says, given the CTA count, how to split the launch's tail (`TailSplit`; nil: not at all),
    /// and `headDim` sizes the parts' slots.
    init(device: CUDADevice, rowStarts: DeviceBuffer, keys: DeviceBuffer, heads: Int, seqLen: Int,
         config: SpargeConfig, tilesPerCTA: Int, headDim: Int, tailSplit: (_ ctas: Int) -> TailSplit?) throws {
        let keyBlocks = (seqLen + config.blockK - 1) / config.blockK
        let shape = Shape(heads: Int32(heads), queryBlocks: Int32((seqLen + config.blockQ - 1) / config.blockQ),
                          blockQ: Int32(config.blockQ), tileQ: Int32(config.computeTileQ), blockK: Int32(config.blockK),
                          seqLen: Int32(seqLen), causal: config.causal ? 1 : 0, perCTA: Int32(tilesPerCTA),
                          keyBlocks: Int32(keyBlocks))
        let (tiles, ctas) = Self.counts(shape)
        let split = tailSplit(ctas)
        let entryBytes = ctas * tilesPerCTA * 16
        let table = try DeviceBuffer(device: device, bytes: tiles * 16, label: "tile table")
        let work = try DeviceBuffer(device: device, bytes: max(ctas, split?.ctas ?? 0) * tilesPerCTA * 16,
                                    label: "attention work list")
        let entries = try DeviceBuffer(device: device, bytes: entryBytes, label: "work entries in tile order")
        let longest = try DeviceBuffer(device: device, bytes: ctas * 4, label: "work longest lists")
        let counts = try DeviceBuffer(device: device, bytes: (keyBlocks + 1) * 4, zeroed: true, label: "work list counts")
        let block = 256, grid = (ctas + block - 1) / block
        let shapeBytes = withUnsafeBytes(of: shape) { Array($0) }
        try device.launch(device.residentKernel("sparge_work_items"), grid: grid, block: block, [
            .bytes(shapeBytes), .pointer(rowStarts.address), .pointer(keys.address), .pointer(entries.address),
            .pointer(table.address), .pointer(longest.address), .pointer(counts.address),
        ])
        let scanThreads = 1024
        try device.launch(device.residentKernel("sparge_work_starts"), grid: 1, block: scanThreads,
                          sharedBytes: scanThreads * 4, [.pointer(counts.address), .int(Int32(keyBlocks + 1))])
        try device.launch(device.residentKernel("sparge_work_place"), grid: grid, block: block, [
            .pointer(entries.address), .pointer(longest.address), .int64(Int64(ctas)), .int(Int32(tilesPerCTA)),
            .int(Int32(keyBlocks)), .pointer(counts.address), .pointer(work.address),
        ])
        if let split {
            try device.launch(device.residentKernel("sparge_work_split"), grid: 1, block: (split.splitCTAs + 31) / 32 * 32, [
                .pointer(work.address), .int(Int32(split.kept)), .int(Int32(split.splitCTAs)), .int(Int32(split.parts)),
                .int(Int32(tilesPerCTA)), .int(Int32(TailSplit.stepEntries(blockK: config.blockK))),
            ])
            tailParts = try TailParts(device: device, split: split, work: work, tilesPerCTA: tilesPerCTA, headDim: headDim)
        } else {
            tailParts = nil
        }
        // The scratch goes back to the pool when this returns; its next user is ordered after these kernels.
        (self.tiles, self.ctas, tileTable, self.work) = (tiles, ctas, table, work)
    }

    /// Tiles and CTAs: every query block holds `blockQ / tileQ` tiles in `that / perCTA` CTAs, the last
    /// (partial) block its rows' tiles in as many CTAs as they fill.
    static func counts(_ s: Shape) -> (tiles: Int, ctas: Int) {
        let (blocks, perBlock, perCTA) = (Int(s.queryBlocks), Int(s.blockQ / s.tileQ), Int(s.perCTA))
        guard blocks > 0 else { return (0, 0) }
        let lastRows = Int(s.seqLen) - (blocks - 1) * Int(s.blockQ)
        let lastTiles = (lastRows + Int(s.tileQ) - 1) / Int(s.tileQ)
        let tilesPerHead = (blocks - 1) * perBlock + lastTiles
        let ctasPerHead = (blocks - 1) * (perBlock / perCTA) + (lastTiles + perCTA - 1) / perCTA
        return (Int(s.heads) * tilesPerHead, Int(s.heads) * ctasPerHead)
    }
}
