import Dispatch
import SpargeKernels

/// Block-sparse attention of some query blocks on a CUDA device, fed with key/value blocks over several
/// calls: the GPU twin of `BlockSparseAttention`, behind the same `StepwiseAttention` seam.
///
/// At creation the queries go to the device (rounded to the kernel's 16-bit type) with room for the whole
/// sequence's K and V (`[Hkv, nk·blockK, D]`, 16-bit; 128 MiB at N = 32768, 8 kv heads, D = 128) and the
/// online-softmax state of every compute tile. Each `attend` converts the table's blocks that some tile
/// visits to 16 bits on host threads into a pinned staging buffer, builds for every compute tile the list of its mask row's blocks that
/// the table holds (ascending, cut at the causal diagonal), copies both in one transfer on a copy stream, and
/// enqueues the kernels (place the blocks at their rows; one CTA per tile with a non-empty list, or per two
/// such tiles of one mask row on Hopper, the longest lists first: `AttentionKernel.arrange`) behind that
/// copy. It returns without waiting: the next call converts and copies into the other of two staging slots
/// while this call's kernel runs, so a ring's next payload goes up while the GPU works on the current one. `finish` waits, normalizes and copies the output back.
///
/// What matches the CPU tile exactly: which blocks each tile visits and in what order, the token-level
/// causal mask, the λ rule and its group (`computeTileQ` rows), the counters. What differs: inputs are
/// rounded to bf16 (or fp16) and P to fp16 before the tensor cores multiply, so outputs agree to about 1e-3
/// relative, not bit for bit.
///
/// Limits: head dimension 64 or 128, `blockK` 32, 64 or 128, `computeTileQ` a multiple of 16 up to 128.
public final class CUDABlockSparseAttention: StepwiseAttention {
    /// The configuration (block sizes, compute tile, causal, λ, scale).
    public let config: SpargeConfig
    /// Tokens in the whole sequence.
    public let seqLen: Int
    /// Query heads, key/value heads, head dimension.
    public let queryHeads: Int, kvHeads: Int, headDim: Int
    /// Query rows held (the rows of `mask.queryBlocks`, in that order).
    public let rows: Int
    /// The element type of Q and K (and of V unless a step falls back).
    public let precision: CUDAPrecision
    /// The device.
    public let device: CUDADevice

    /// Device seconds in the attention kernel over every `attend` (CUDA events), complete after
    /// `synchronize()` or `finish`.
    public private(set) var kernelSeconds = 0.0
    /// Host seconds in `attend` (converting blocks, building lists, enqueueing) over every call.
    public private(set) var uploadSeconds = 0.0
    /// Blocks computed (list entries launched) over every `attend`: the real work, for rates.
    public private(set) var launchedBlockVisits = 0
    /// Steps whose V did not fit fp16 and ran P·V in bf16.
    public private(set) var bf16ValueSteps = 0

    private let kernel: AttentionKernel
    private let keyBlocks: Int
    private let kvRows: Int
    /// Bytes of 16-bit K/V one staging slot carries at most (`CUDAOptions.stagingBytes`): a call holding
    /// more (one process with the whole sequence, say) goes up in parts of ascending key blocks, so that
    /// pinned buffers stay small and the conversion of one part overlaps the copy and kernel of the one
    /// before.
    private let stagingBudget: Int
    /// The tiles and their visit lists (the CPU driver's plan, so both visit the same blocks in one order).
    private let plan: AttentionPlan
    private let q: DeviceBuffer, k: DeviceBuffer, v: DeviceBuffer
    private let oacc: DeviceBuffer, ml: DeviceBuffer, counters: DeviceBuffer, tileTable: DeviceBuffer
    private let slots: [StagingSlot]
    private var nextSlot = 0
    private var statistics = AttentionStatistics()

    /// Prepares the tiles of `queries` (`[Hq, rows, D]`, the rows of `mask.queryBlocks` concatenated) on
    /// `device`.
    ///
    /// - Throws: `CUDAError.unsupported` for a shape the kernels do not handle, or any driver/NVRTC error.
    public init(queries: Tensor3, mask: BlockMask, kvHeads: Int, config: SpargeConfig, seqLen: Int,
                device: CUDADevice, precision: CUDAPrecision = .bf16, options: CUDAOptions = CUDAOptions()) throws {
        try Self.checkShape(headDim: queries.dim, config: config)
        guard precision != .int8 else {
            throw CUDAError.unsupported("--precision int8 runs in the resident pass, with the mask predicted on the device "
                + "(not with the mask on the host)")
        }
        var t = CUDATrace.now()
        plan = try AttentionPlan(mask: mask, queryHeads: queries.heads, queryRows: queries.rows, kvHeads: kvHeads,
                                 config: config, seqLen: seqLen)
        t = CUDATrace.note("attention init: plan of \(plan.tiles.count) tiles", since: t)
        self.config = config
        self.seqLen = seqLen
        self.queryHeads = queries.heads
        self.kvHeads = kvHeads
        self.headDim = queries.dim
        self.rows = queries.rows
        self.precision = precision
        self.device = device
        kernel = AttentionKernel(device: device, headDim: queries.dim, config: config, precision: precision, options: options)
        stagingBudget = max(1, options.stagingBytes)
        keyBlocks = (seqLen + config.blockK - 1) / config.blockK
        kvRows = keyBlocks * config.blockK

        let d = queries.dim
        q = try DeviceBuffer(device: device, bytes: queries.data.count * 2, label: "queries")
        k = try DeviceBuffer(device: device, bytes: kvHeads * kvRows * d * 2, zeroed: true, label: "keys")
        v = try DeviceBuffer(device: device, bytes: kvHeads * kvRows * d * 2, zeroed: true, label: "values")
        oacc = try DeviceBuffer(device: device, bytes: queries.data.count * 4, zeroed: true, label: "output accumulator")
        ml = try DeviceBuffer(device: device, bytes: queries.heads * queries.rows * 8, zeroed: true, label: "softmax state")
        counters = try DeviceBuffer(device: device, bytes: plan.tiles.count * 16, zeroed: true, label: "tile counters")
        tileTable = try DeviceBuffer(device: device, bytes: plan.tiles.count * 16, label: "tile table")
        let tileList: [Int32] = plan.tiles.flatMap { [Int32($0.head), Int32($0.localRow), Int32($0.rowCount), Int32($0.queryStart)] }
        try tileTable.upload(tileList)
        slots = [try StagingSlot(device: device), try StagingSlot(device: device)]

        t = CUDATrace.note("attention init: device buffers", since: t)
        // Queries, rounded to the kernel's type on host threads straight into pinned chunks.
        try queries.data.withUnsafeBufferPointer { src in
            let source = src.baseAddress!
            try device.stagedTransfer().upload(to: q, count: src.count * 2) { start, length, chunk in
                let (first, n) = (start / 2, length / 2)
                let target = chunk.bindMemory(to: UInt16.self, capacity: n)
                let piece = 1 << 16
                DispatchQueue.concurrentPerform(iterations: (n + piece - 1) / piece) { c in
                    let at = c * piece
                    _ = HalfPrecision.convert(source + first + at, count: min(piece, n - at), to: target + at,
                                              precision: precision, fp16Storage: false)
                }
            }
        }
        t = CUDATrace.note("attention init: queries to 16 bits and up", since: t)
        // Compile now, so that a compile error surfaces before any data moves.
        _ = try kernel.function(valuesInBF16: false)
        _ = try kernel.auxiliary("sparge_scatter")
    }

    /// Throws unless the kernels handle head dimension `headDim` and the tile shapes of `config`.
    public static func checkShape(headDim: Int, config: SpargeConfig) throws {
        guard headDim == 64 || headDim == 128 else {
            throw CUDAError.unsupported("head dimension \(headDim) (the kernels are built for 64 and 128); use --backend cpu")
        }
        guard [32, 64, 128].contains(config.blockK) else {
            throw CUDAError.unsupported("--block-k \(config.blockK) (the kernels take 32, 64 or 128); use --backend cpu")
        }
        guard config.computeTileQ % 16 == 0 && config.computeTileQ <= 128 else {
            throw CUDAError.unsupported("--tile-q \(config.computeTileQ) (the kernels take a multiple of 16 up to 128); use --backend cpu")
        }
        guard config.softmaxScale(headDim: headDim) > 0 else {
            throw CUDAError.unsupported("a softmax scale ≤ 0")
        }
    }

    /// A line for the user where `config` is known to run the kernel slowly on `device`, else nil. On Hopper
    /// (with `options.hopperKernel`) the wgmma kernel takes 64-row compute tiles and 64- or 128-key blocks:
    /// other shapes fall back to `mma.sync`, about half its rate. Elsewhere, 128-key blocks with compute tiles
    /// under 128 rows leave one 4-warp CTA an SM (their double-buffered K/V take 128 KiB of shared memory):
    /// 42% of FlexAttention's rate, against 73% with `--tile-q 128` (BENCHMARKS.md).
    public static func slowShapeHint(config: SpargeConfig, device: CUDADevice, options: CUDAOptions) -> String? {
        if AttentionKernel.hopperAvailable(device: device, options: options) {
            // (The head dimension and precision are not known yet where the hint is given; the usual D 128
            // stands in, at which every precision takes the same shapes.)
            if AttentionKernel.hopperTakes(headDim: 128, config: config, precision: .bf16) { return nil }
            return "the Hopper kernel takes --tile-q 64 (the default) and --block-k 64 or 128; "
                + "this shape runs the mma.sync kernel, at about half its rate"
        }
        guard config.blockK == 128 && config.computeTileQ < 128 else { return nil }
        return "with --block-k 128 the GPU kernel runs about 1.7× faster with --tile-q 128"
    }

    public func attend(_ table: KeyValueBlockTable, threads: Int, poll: ((Double) -> Void)?) throws {
        guard table.kvHeads == kvHeads && table.keyBlocks == keyBlocks && table.blockK == config.blockK else {
            throw SpargeError.invalidArgument("attend: a table of \(table.kvHeads) kv heads × \(table.keyBlocks) blocks of "
                + "\(table.blockK) for an attention of \(kvHeads) × \(keyBlocks) of \(config.blockK)")
        }
        // Parts: ascending ranges of key blocks holding at most `perPart` (kv head, block) entries each.
        let perPart = max(1, stagingBudget / (2 * config.blockK * headDim * 2))
        var ranges: [Range<Int>] = []
        var start = 0, inPart = 0
        for j in 0..<keyBlocks {
            let held = (0..<kvHeads).reduce(0) { $0 + (table.block(kvHead: $1, block: j) != nil ? 1 : 0) }
            if inPart > 0 && inPart + held > perPart {
                ranges.append(start..<j)
                start = j
                inPart = 0
            }
            inPart += held
        }
        ranges.append(start..<keyBlocks)
        if ranges.count == 1 { return try attendPart(table, blocks: 0..<keyBlocks, poll: poll) }
        for (i, range) in ranges.enumerated() {
            var part = KeyValueBlockTable(kvHeads: kvHeads, keyBlocks: keyBlocks, blockK: config.blockK, seqLen: seqLen,
                                          format: table.format)
            for j in range {
                for g in 0..<kvHeads {
                    if let b = table.block(kvHead: g, block: j) { part.set(kvHead: g, block: j, keys: b.keys, values: b.values) }
                }
            }
            try attendPart(part, blocks: range, poll: nil)
            poll?(Double(i + 1) / Double(ranges.count))
        }
    }

    /// One staged transfer and kernel launch for the blocks of `table`, all of which lie in `blocks`.
    private func attendPart(_ table: KeyValueBlockTable, blocks: Range<Int>, poll: ((Double) -> Void)?) throws {
        try device.makeCurrent()
        let uploadStart = DispatchTime.now().uptimeNanoseconds
        let d = headDim, bk = config.blockK

        // The blocks this call holds.
        var present = [Bool](repeating: false, count: kvHeads * keyBlocks)
        var anyHeld = false
        for g in 0..<kvHeads {
            for j in blocks where table.block(kvHead: g, block: j) != nil {
                present[g * keyBlocks + j] = true
                anyHeld = true
            }
        }
        guard anyHeld else { poll?(1); return }

        // Per tile: the blocks of its mask row held here, ascending, cut at the causal diagonal.
        var blockList: [Int32] = []
        var items: [AttentionKernel.WorkItem] = []
        var needed = [Bool](repeating: false, count: kvHeads * keyBlocks)
        let group = queryHeads / kvHeads
        let keys = plan.mask.keys
        for (i, tile) in plan.tiles.enumerated() {
            let g = tile.head / group
            let first = blockList.count
            // The tile's visits are its mask row already cut at its causal diagonal.
            for j in keys[plan.mask.firstKeyIndex(atLeast: blocks.lowerBound, in: tile.visits)..<tile.visits.upperBound] {
                if Int(j) >= blocks.upperBound { break }
                if present[g * keyBlocks + Int(j)] {
                    blockList.append(j)
                    needed[g * keyBlocks + Int(j)] = true
                }
            }
            if blockList.count > first {
                items.append(.init(tile: Int32(i), first: Int32(first), count: Int32(blockList.count - first)))
            }
        }
        let tiles = plan.tiles
        let workList = kernel.arrange(items, kvHead: { tiles[Int($0)].head / group }, block: { blockList[Int($0)] })
        // Only the blocks some tile of this call visits go to the device.
        var held: [(g: Int, j: Int, keys: UnsafeRawPointer, values: UnsafeRawPointer)] = []
        for g in 0..<kvHeads {
            for j in 0..<keyBlocks where needed[g * keyBlocks + j] {
                let b = table.block(kvHead: g, block: j)!
                held.append((g, j, b.keys, b.values))
            }
        }
        guard !held.isEmpty else { poll?(1); return }

        var t = CUDATrace.note("attend: block lists of \(plan.tiles.count) tiles, \(held.count) blocks held", since: uploadStart)
        // The slot the call before last used: wait for its kernel, then fill it.
        let slot = slots[nextSlot]
        nextSlot ^= 1
        kernelSeconds += try slot.retire()
        t = CUDATrace.note("attend: wait for the slot's previous kernel", since: t)
        let perEntry = 2 * bk * d
        let layout = StagingSlot.Layout(kvBytes: held.count * perEntry * 2, entries: held.count,
                                        launches: workList.count / 4, blocks: blockList.count)
        try slot.reserve(layout.total)
        let base = slot.host!.pointer
        let stage = base.bindMemory(to: UInt16.self, capacity: held.count * perEntry)
        var valuesInBF16 = false
        func fill(_ useBF16Values: Bool) -> Bool {
            let fits = UnsafeMutableBufferPointer<Bool>.allocate(capacity: held.count)
            defer { fits.deallocate() }
            let precision = self.precision, seqLen = self.seqLen, format = table.format
            held.withUnsafeBufferPointer { entries in
                DispatchQueue.concurrentPerform(iterations: entries.count) { e in
                    let entry = entries[e]
                    let rows = min(bk, seqLen - entry.j * bk)
                    let kDst = stage + e * perEntry, vDst = kDst + bk * d
                    // Blocks already in the kernel's 16-bit type are copied as they are.
                    fits[e] = HalfPrecision.stage(keys: entry.keys, values: entry.values, count: rows * d,
                                                  format: format, precision: precision, valuesInBF16: useBF16Values,
                                                  keysTo: kDst, valuesTo: vDst)
                    if rows < bk {
                        (kDst + rows * d).update(repeating: 0, count: (bk - rows) * d)
                        (vDst + rows * d).update(repeating: 0, count: (bk - rows) * d)
                    }
                }
            }
            return fits.allSatisfy { $0 }
        }
        if !fill(false) {
            guard precision == .bf16 else {
                throw CUDAError.unsupported("a value of V is beyond fp16's range (±65504); use --precision bf16")
            }
            valuesInBF16 = true
            bf16ValueSteps += 1
            _ = fill(true)
        }
        t = CUDATrace.note("attend: \(held.count) K/V blocks to 16 bits", since: t)
        let entries = (base + layout.entries).bindMemory(to: Int32.self, capacity: 2 * held.count)
        for (e, h) in held.enumerated() {
            entries[2 * e] = Int32(h.g)
            entries[2 * e + 1] = Int32(h.j)
        }
        workList.withUnsafeBytes { (base + layout.work).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        if !blockList.isEmpty {
            blockList.withUnsafeBytes { (base + layout.blocks).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        }

        // Copy on the copy stream; the kernels wait for it on theirs, and this call returns.
        let area = slot.deviceArea!
        try slot.host!.copyAsync(to: area, count: layout.total, stream: device.copyStream)
        try slot.copied.record(on: device.copyStream)
        try slot.copied.makeWait()
        try device.launch(kernel.auxiliary("sparge_scatter"), grid: held.count, block: 256,
                          [.pointer(area.address), .pointer(k.address), .pointer(v.address),
                           .pointer(area.address + UInt64(layout.entries)), .int(Int32(kvRows))])
        slot.timed = !workList.isEmpty
        if slot.timed {
            try slot.kernelStart.record()
            try kernel.launch(operands, work: area.address + UInt64(layout.work), blocks: area.address + UInt64(layout.blocks),
                              entries: workList.count / 4, seqLen: seqLen, group: group, valuesInBF16: valuesInBF16)
            try slot.kernelStop.record()
        }
        try slot.consumed.record()
        slot.inFlight = true
        launchedBlockVisits += blockList.count
        uploadSeconds += Double(DispatchTime.now().uptimeNanoseconds - uploadStart) * 1e-9
        CUDATrace.note("attend: lists, copy and kernels enqueued", since: t)
        poll?(1)
    }

    /// Waits for every `attend` enqueued so far; `kernelSeconds` then counts all of them.
    public func synchronize() throws {
        try device.makeCurrent()
        for slot in slots { kernelSeconds += try slot.retire() }
        try device.synchronize()
    }

    /// Forgets every `attend` so far (state, counters, timings), so that a benchmark can repeat the same
    /// work on the same instance.
    public func reset() throws {
        try synchronize()
        try oacc.zero()
        try ml.zero()
        try counters.zero()
        statistics = AttentionStatistics()
        kernelSeconds = 0
        uploadSeconds = 0
        launchedBlockVisits = 0
        bf16ValueSteps = 0
    }

    private var operands: AttentionKernel.Operands {
        AttentionKernel.Operands(q: q.address, k: k.address, v: v.address, oacc: oacc.address, ml: ml.address,
                                 counters: counters.address, tiles: tileTable.address, rows: rows, kvRows: kvRows,
                                 queryHeads: queryHeads, kvHeads: kvHeads)
    }

    /// The kernels compiled for this attention: name, options, registers and local (spill) bytes.
    public var kernelReport: [String] { device.compiledKernels }

    /// Counters read back from the device by `finish` (zero before it).
    public var attendStatistics: AttentionStatistics { statistics }

    public func finish(threads: Int = 1) throws -> (output: Tensor3, lse: [Float]) {
        var t = CUDATrace.now()
        try synchronize()
        t = CUDATrace.note("finish: wait for every kernel", since: t)
        let total = queryHeads * rows
        var lse = [Float](repeating: -.infinity, count: total)
        guard total > 0 else { return (Tensor3(heads: queryHeads, rows: rows, dim: headDim), lse) }
        let out = try DeviceBuffer(device: device, bytes: total * headDim * 4, label: "output")
        let lseBuffer = try DeviceBuffer(device: device, bytes: total * 4, label: "lse")
        let elements = total * headDim
        try kernel.normalize(oacc: oacc.address, ml: ml.address, output: out.address, lse: lseBuffer.address,
                             totalRows: total)
        try device.synchronize()
        t = CUDATrace.note("finish: normalise", since: t)
        // Written straight from the pinned chunks by several threads: a gigabyte-sized output is then not
        // first zero-filled (page by page, on one thread) and then overwritten.
        let data = try [Float](unsafeUninitializedCapacity: elements) { buffer, initialized in
            try device.stagedTransfer().download(from: out, into: UnsafeMutableRawPointer(buffer.baseAddress!),
                                                 count: elements * 4)
            initialized = elements
        }
        let output = Tensor3(heads: queryHeads, rows: rows, dim: headDim, data: data)
        try lse.withUnsafeMutableBytes { try lseBuffer.download(into: $0.baseAddress!, count: $0.count) }
        CUDATrace.note("finish: output and LSE down", since: t)
        statistics = try AttentionKernel.statistics(counters: counters, tiles: plan.tiles.count)
        return (output, lse)
    }
}
