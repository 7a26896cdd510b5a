import SpargeKernels

/// Where a launch of CTAs that run one an SM ends in a partly filled wave, its last `splitCTAs` CTAs (the
/// shortest lists: a work list places them last) each become `parts` CTAs, each taking a run of the list's
/// steps, so that the last wave holds many short parts rather than a few whole lists; `sparge_merge_parts`
/// then combines each split tile's parts (`TailParts`). Dense at 32K tokens and 8 heads, 2048 CTAs on 132
/// SMs are 15.5 waves: the last 68 CTAs in 7 parts each end the launch after 4/7 of a list's time, not 1.
///
/// The parts run as a launch of their own, the Hopper kernel's TAIL_PARTS variant (its whole-list kernel
/// stays as it was: a branch for parts in it cost 2.5% on an H200), on the lowest-priority stream beside the
/// whole lists, so that their CTAs take the SMs the whole lists leave. A part starts afresh and leaves its
/// state in a slot; with the λ rule on, each part would compute its first block unconditionally, so only a
/// final launch that computes every listed block is split.
struct TailSplit: Equatable {
    /// CTAs kept whole, CTAs split, and parts each.
    let kept: Int, splitCTAs: Int, parts: Int
    /// CTAs of the launch: the whole lists', then the parts'.
    var ctas: Int { kept + splitCTAs * parts }
    /// Most parts a CTA is cut into (`sparge_merge_parts` weighs at most 16).
    static let mostParts = 8

    /// Fewest steps (128 keys) the shortest list must hold for a launch to split, so that no part is empty
    /// and each is long next to what it costs: its pipeline's start, a 64 KB store, and its share of the
    /// merge (~20–40 µs in all at 32K tokens and 8 heads), against ~1.5 µs a step. On an H200 dense 32K (256
    /// steps) gained 1–2% in int8 and 4% in bf16. Lists of 26 steps (TopK 0.1) lost 0.09 ms of a 1.26 ms pass,
    /// measured with a first version whose parts ran inside the whole lists' launch; the floor between was
    /// not measured.
    static let minimumSteps = 96

    /// The split of `ctas` CTAs over `multiprocessors` SMs that ends the last wave soonest if every list
    /// were as long, or nil where none ends it a quarter of a list's time sooner, where there is no partly
    /// filled wave after a full one, or where the launch's shortest list has fewer than `minimumSteps` steps
    /// (`shortestSteps`). `parts` parts of the last wave's lists take ⌈splitCTAs · parts / SMs⌉ / parts of
    /// one list's time, against 1 unsplit.
    static func choose(ctas: Int, multiprocessors sms: Int, shortestSteps: Int) -> TailSplit? {
        guard sms > 0, ctas > sms, ctas % sms > 0, shortestSteps >= minimumSteps else { return nil }
        let splitCTAs = ctas % sms
        var best: (parts: Int, time: Double)?
        for parts in 2...mostParts {
            let time = Double((splitCTAs * parts + sms - 1) / sms) / Double(parts)
            if time < (best?.time ?? 0.75) { best = (parts, time) }
        }
        return best.map { TailSplit(kept: ctas - splitCTAs, splitCTAs: splitCTAs, parts: $0.parts) }
    }

    /// `choose` for one rank's launch of `ctas` CTAs on `device` over `mask`'s lists.
    static func choose(ctas: Int, on device: CUDADevice, mask: BlockMask, blockK: Int) -> TailSplit? {
        choose(ctas: ctas, multiprocessors: device.multiprocessors, shortestSteps: shortestSteps(of: mask, blockK: blockK))
    }

    /// List entries a step of the Hopper kernel takes (128 keys, its STEP_KEYS): parts are whole steps.
    static func stepEntries(blockK: Int) -> Int { max(1, 128 / blockK) }

    /// The steps of `mask`'s shortest row. Without a causal diagonal a tile's list is its block's whole row,
    /// so no CTA's list is shorter; with one, the first block's row is a step or two, which keeps causal
    /// launches whole. (O(rows): one rank at 32K tokens and 8 heads has 2048.)
    static func shortestSteps(of mask: BlockMask, blockK: Int) -> Int {
        let starts = mask.rowStarts
        guard starts.count > 1 else { return 0 }
        var shortest = Int.max
        for i in 0..<(starts.count - 1) { shortest = min(shortest, starts[i + 1] - starts[i]) }
        return shortest / stepEntries(blockK: blockK)
    }

    /// `work` (entries of 4 × Int32, `perCTA` a CTA, `kept + splitCTAs` CTAs) with its last `splitCTAs` CTAs
    /// cut into parts: the host's twin of `sparge_work_split`, entry for entry. Part p of a CTA whose longest
    /// list holds `steps` steps takes the entries from step ⌊p·steps/parts⌋ to step ⌊(p+1)·steps/parts⌋; each
    /// of its tiles keeps what of that run its own list holds, and gets slot `(j·parts + p)·perCTA + c`
    /// (stored plus one: 0 means a whole list).
    func apply(to work: [Int32], perCTA: Int, stepEntries: Int) -> [Int32] {
        precondition(work.count == (kept + splitCTAs) * perCTA * 4,
                     "TailSplit: \(work.count / 4) entries for \(kept + splitCTAs) CTAs")
        var out = Array(work.prefix(kept * perCTA * 4))
        out.reserveCapacity(ctas * perCTA * 4)
        for j in 0..<splitCTAs {
            let own = (0..<perCTA).map { c in Array(work[((kept + j) * perCTA + c) * 4..<((kept + j) * perCTA + c + 1) * 4]) }
            let longest = Int(own.filter { $0[0] >= 0 }.map { $0[2] }.max() ?? 0)
            let steps = (longest + stepEntries - 1) / stepEntries
            for p in 0..<parts {
                let from = min(longest, p * steps / parts * stepEntries)
                let to = min(longest, (p + 1) * steps / parts * stepEntries)
                for (c, e) in own.enumerated() {
                    guard e[0] >= 0 else { out += [-1, 0, 0, 0]; continue }
                    out += [e[0], e[1] + Int32(from), Int32(max(0, min(to, Int(e[2])) - from)), Int32(1 + (j * parts + p) * perCTA + c)]
                }
            }
        }
        return out
    }
}

/// The slots a split launch's parts leave their state in — per slot, the Hopper kernel's 64-row tile of
/// unnormalised O `[64][headDim]` f32 and (m, l) — and the merge that follows the launch.
struct TailParts {
    let split: TailSplit
    /// The launch's work list, whose parts' entries name each part's tile and slot.
    let work: DeviceBuffer
    let partialO: DeviceBuffer, partialML: DeviceBuffer
    let tilesPerCTA: Int, headDim: Int
    /// Rows a slot: the kernel's tile (TailSlots' stride in sparge_attention_sm90.cu).
    static let tileRows = 64

    init(device: CUDADevice, split: TailSplit, work: DeviceBuffer, tilesPerCTA: Int, headDim: Int) throws {
        precondition(split.parts <= TailSplit.mostParts, "TailParts: \(split.parts) parts a CTA")
        let slotRows = split.splitCTAs * split.parts * tilesPerCTA * Self.tileRows
        (self.split, self.work, self.tilesPerCTA, self.headDim) = (split, work, tilesPerCTA, headDim)
        partialO = try DeviceBuffer(device: device, bytes: slotRows * headDim * 4, label: "split tiles' parts")
        partialML = try DeviceBuffer(device: device, bytes: slotRows * 8, label: "split tiles' parts' (m, l)")
    }

    /// Enqueues the combination of every split tile's parts into `output` (`[heads · rows][headDim]` f32) and
    /// `lse`, adding `rowShifts` (int8's `q·μ`; 0: none) to the LSE, after the launch that wrote the parts;
    /// `tiles` is the launch's tile table.
    func enqueueMerge(device: CUDADevice, tiles: UInt64, rows: Int, output: UInt64, lse: UInt64, rowShifts: UInt64) throws {
        try device.launch(device.residentKernel("sparge_merge_parts"), grid: split.splitCTAs * tilesPerCTA, block: 256, [
            .pointer(work.address), .int(Int32(split.kept)), .int(Int32(split.parts)), .int(Int32(tilesPerCTA)),
            .pointer(tiles), .int(Int32(rows)), .int(Int32(headDim)), .int(Int32(Self.tileRows)),
            .pointer(partialO.address), .pointer(partialML.address), .pointer(output), .pointer(lse), .pointer(rowShifts),
            .float(0),  // the kernel's P_LOG2_SCALE: 0 but with fp8 P·V, which no pass offers
        ])
    }
}
