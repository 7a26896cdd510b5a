import SpargeKernels

/// The ring's blocks in device memory (`ResidentRingStore`): this rank's K/V stay where they entered,
/// payloads are packed on the device and go down and up through pinned host buffers (or, with a CUDA-aware
/// MPI, to and from MPI in device memory), and every block is
/// placed at its rows of the attention kernel's K and V (`[Hkv, nk·blockK, D]`, 16-bit) before the kernel
/// visits it. Nothing of a block is converted on the host. One rank holding the whole sequence places
/// nothing: the kernel reads its K where it is and its V converted in one pass, and writes the normalised
/// output itself (one launch holds every block).
///
/// In int8 the kernel's K is int8 with a scale a block (`QuantizedKeys`): a rank quantizes its own blocks as
/// it places them, and its payloads carry K so (`payloadFormat`: int8 rows and the scale, V in the storage
/// format), which a receiver copies into place and forwards as it came.
///
/// Per step the host does O(tiles + blocks of the step) work: the placement and copy tables, and for every
/// compute tile the part of its mask row (already on the device, from the mask's compaction) that lies in
/// the blocks of the payload's owner — two binary searches a range, no list copied. One rank whose mask was
/// compacted on the device does none of it: the device builds its tile table and work list
/// (`DeviceWorkList`).
final class DeviceRingStore: ResidentRingStore {
    let shard: DeviceShard
    let ring: DeviceShard.RingTensors
    let device: CUDADevice
    /// Who lays out the compute tiles: the host's plan, or (one rank) the device.
    let work: TileWork
    enum TileWork {
        case host(AttentionPlan)
        case device(DeviceWorkList)

        var tileCount: Int {
            switch self {
            case .host(let plan): plan.tiles.count
            case .device(let list): list.tiles
            }
        }
    }
    let kernel: AttentionKernel
    /// The key-block lists the kernel reads: the mask's own (compacted on the device, or uploaded), or for a
    /// mask whose rows are all prefixes (dense) one list `0..<nk` that every row indexes from its start.
    let blockLists: DeviceBuffer?
    let listsFromRowStart: Bool
    let tokenRanges: [Range<Int>]
    let payloadFormat: PayloadFormat
    let seqLen: Int, blockK: Int, keyBlocks: Int, kvRows: Int
    let k: DeviceBuffer
    /// int8: `k` in int8 and its block scales, written as blocks are placed.
    let quantizedKeys: QuantizedKeys?
    /// V in P·V's type, and whether that type is bf16 (V beyond fp16's range somewhere) rather than fp16,
    /// from `chooseValueType(wide:)` on: the shard's own V where it is in that type already and nothing is to
    /// be placed (`valuesInPlace`), else a buffer that blocks are placed in.
    var values: (buffer: DeviceBuffer, inBF16: Bool)?
    /// One rank holding the whole sequence in whole blocks, its K already in the kernel's type: the kernel
    /// reads that K where it is, and V is converted to P·V's type in one pass (or read where it is).
    let wholeInPlace: Bool
    /// One rank holding the whole sequence in whole blocks: the kernel reads V where it is, or converted in
    /// one pass, also where K must be placed (int8 quantizes it block by block; K in another format).
    let valuesInPlace: Bool
    /// Bytes of the kernel's V (two an element).
    let kvBytes: Int
    /// With one rank every tile's blocks are all in one launch, whose CTAs write the normalised output and
    /// LSE themselves (`final`); otherwise the launches carry the softmax state in `oacc` and `ml` between
    /// ring steps and `finish` normalises.
    let final: (output: DeviceBuffer, lse: DeviceBuffer)?
    let state: (oacc: DeviceBuffer, ml: DeviceBuffer)?
    var attended = false
    let counters: DeviceBuffer, tileTable: DeviceBuffer
    /// Whether one rank's launch may split its last wave (`TailSplit`): the Hopper kernel, every block
    /// computed, the switch on.
    let splitsTail: Bool
    let overflow: DeviceBuffer

    /// The payload being computed with: nil for this rank's own blocks, else a device copy of one that
    /// arrived, with each block's offset in it (`-1` when absent), per kv head × key block.
    var payload: DeviceBuffer?
    var payloadOffsets: [Int]
    var ownerBlocks: [Range<Int>] = []
    var sendDevice: DeviceBuffer?, sendHost: PinnedBuffer?, receiveHost: PinnedBuffer?
    var receivedBytes = 0
    /// Whether MPI takes device memory: payloads are sent from `sendDevice` and received into
    /// `receiveDevice` (a fresh buffer each step: the previous one may still be computed with).
    let messagesInDeviceMemory: Bool
    var receiveDevice: DeviceBuffer?
    /// The payload copied up on the copy stream once it arrived, and the event that says it is there.
    var arrived: (buffer: DeviceBuffer, copied: CUDAEvent)?
    var lastCopy: CUDAEvent?
    var timings: [(start: CUDAEvent, stop: CUDAEvent)] = []
    /// The tile counters coming down right behind the launch that finished every tile (one rank).
    var countersDown: PendingDownload?

    /// Device seconds in the attention kernel over every `attend` (after `finish`).
    var kernelSeconds = 0.0
    /// CTAs whose lists a launch split into parts (`TailSplit`).
    var splitTailCTAs = 0

    init(shard: DeviceShard, mask: BlockMask, maskLists: MaskCompaction.DeviceLists?, tokenRanges: [Range<Int>],
         config: SpargeConfig, seqLen: Int, messagesInDeviceMemory: Bool = false) throws {
        try CUDABlockSparseAttention.checkShape(headDim: shard.dim, config: config)
        try AttentionKernel.checkPrecision(shard.precision, device: shard.device)
        var t = CUDATrace.now()
        self.shard = shard
        self.messagesInDeviceMemory = messagesInDeviceMemory
        ring = try shard.ringTensors(wholeSequence: shard.holdsWholeSequence(seqLen: seqLen, blockK: config.blockK))
        device = shard.device
        kernel = AttentionKernel(device: device, headDim: shard.dim, config: config, precision: shard.precision,
                                 options: shard.options)
        splitsTail = shard.options.tailSplit && kernel.variant == .hopper && !config.lambdaActive  // see TailSplit
        let holdsEverything = tokenRanges == [0..<seqLen]  // one rank
        let work: TileWork
        if holdsEverything, shard.options.workListOnDevice, let lists = maskLists,
           DeviceWorkList.applies(mask: mask, queryHeads: shard.queryHeads, rows: shard.rows, seqLen: seqLen,
                                  config: config, tilesPerCTA: kernel.tilesPerCTA) {
            work = .device(try DeviceWorkList(device: device, rowStarts: lists.rowStarts, keys: lists.keys,
                                              heads: shard.queryHeads, seqLen: seqLen, config: config,
                                              tilesPerCTA: kernel.tilesPerCTA, headDim: shard.dim,
                                              tailSplit: { [splitsTail, device] in
                                                  splitsTail ? TailSplit.choose(ctas: $0, on: device, mask: mask, blockK: config.blockK) : nil
                                              }))
            t = CUDATrace.note("ring store: tile table and work list enqueued on the device", since: t)
        } else {
            work = .host(try AttentionPlan(mask: mask, queryHeads: shard.queryHeads, queryRows: shard.rows,
                                           kvHeads: shard.kvHeads, config: config, seqLen: seqLen))
            t = CUDATrace.note("ring store: host: plan of \(work.tileCount) tiles", since: t)
        }
        self.work = work
        (blockLists, listsFromRowStart) = try Self.blockLists(mask: mask, maskKeys: maskLists?.keys, device: shard.device)
        self.tokenRanges = tokenRanges
        payloadFormat = shard.precision.ringPayload(kvFormat: shard.kvFormat, headDim: shard.dim)
        self.seqLen = seqLen
        blockK = config.blockK
        keyBlocks = (seqLen + blockK - 1) / blockK
        kvRows = keyBlocks * blockK
        payloadOffsets = [Int](repeating: -1, count: shard.kvHeads * keyBlocks)

        let d = shard.dim
        kvBytes = shard.kvHeads * kvRows * d * 2
        let keyRowBytes = d * (ring.quantized == nil ? 2 : 1)  // the kernel's K: int8 or 16 bits
        // (int8 quantizes K as it places it: only V is read in place.)
        valuesInPlace = holdsEverything && shard.rows == kvRows
        wholeInPlace = valuesInPlace && shard.kvFormat == shard.precision.storageFormat
        k = wholeInPlace ? ring.keys : try DeviceBuffer(device: device, bytes: shard.kvHeads * kvRows * keyRowBytes, label: "keys")
        if !wholeInPlace { try Self.zeroTail(of: k, kvHeads: shard.kvHeads, kvRows: kvRows, seqLen: seqLen, rowBytes: keyRowBytes) }
        if let mean = ring.quantized?.keyMean {
            quantizedKeys = try QuantizedKeys(device: shard.device, keys: k, mean: mean, kvHeads: shard.kvHeads, dim: d,
                                              blockK: config.blockK, kvRows: kvRows)
        } else {
            quantizedKeys = nil
        }
        t = try CUDATrace.step("ring store: K buffer", since: t, on: device)
        let outputRows = shard.queryHeads * shard.rows
        if holdsEverything {
            final = (try DeviceBuffer(device: device, bytes: outputRows * d * 4, label: "output"),
                     try DeviceBuffer(device: device, bytes: outputRows * 4, label: "lse"))
            state = nil
        } else {
            final = nil
            state = (try DeviceBuffer(device: device, bytes: outputRows * d * 4, zeroed: true, label: "output accumulator"),
                     try DeviceBuffer(device: device, bytes: outputRows * 8, zeroed: true, label: "softmax state"))
        }
        counters = try DeviceBuffer(device: device, bytes: work.tileCount * 16, zeroed: true, label: "tile counters")
        t = try CUDATrace.step("ring store: accumulators zeroed", since: t, on: device)
        switch work {
        case .device(let list):
            tileTable = list.tileTable
        case .host(let plan):
            tileTable = try Self.tileTable(plan.tiles, device: device)
            t = CUDATrace.note("ring store: tile table up", since: t)
        }
        overflow = try DeviceBuffer(device: device, bytes: 4, zeroed: true, label: "overflow flag")
    }

    /// The host plan's tiles (head, local row, rows, first token) in device memory. Written in place:
    /// appending its 16K entries took 0.03–0.07 ms, on the pass's critical path.
    static func tileTable(_ tiles: [AttentionPlan.Tile], device: CUDADevice) throws -> DeviceBuffer {
        let table = [Int32](unsafeUninitializedCapacity: tiles.count * 4) { entries, initialized in
            for (i, tile) in tiles.enumerated() {
                (entries[4 * i], entries[4 * i + 1]) = (Int32(tile.head), Int32(tile.localRow))
                (entries[4 * i + 2], entries[4 * i + 3]) = (Int32(tile.rowCount), Int32(tile.queryStart))
            }
            initialized = tiles.count * 4
        }
        let buffer = try DeviceBuffer(device: device, bytes: tiles.count * 16, label: "tile table")
        try buffer.upload(table)
        return buffer
    }

    func chooseValueType(wide: Bool) throws {
        guard !wide || shard.precision.valuesMayWiden else {
            throw CUDAError.unsupported("a value of V is beyond fp16's range (±65504); use --precision bf16")
        }
        let t = CUDATrace.now()
        if valuesInPlace && shard.kvFormat == (wide ? .bf16 : .f16) {
            values = (ring.values, wide)
        } else if valuesInPlace && !wide, let half = ring.valuesInHalf {
            values = (half, false)
        } else {
            let buffer = try DeviceBuffer(device: device, bytes: kvBytes, label: "values")
            if !valuesInPlace {
                try Self.zeroTail(of: buffer, kvHeads: shard.kvHeads, kvRows: kvRows, seqLen: seqLen, rowBytes: shard.dim * 2)
            }
            values = (buffer, wide)
        }
        _ = try kernel.function(valuesInBF16: wide)
        CUDATrace.note("ring store: V buffer, kernel looked up", since: t)
    }

    /// Every block a tile visits is placed before it is visited; only the rows past the sequence's end in the
    /// last block are read without being placed, and must be zeros (0 · NaN would be NaN).
    static func zeroTail(of buffer: DeviceBuffer, kvHeads: Int, kvRows: Int, seqLen: Int, rowBytes: Int) throws {
        let tail = (kvRows - seqLen) * rowBytes
        for g in 0..<kvHeads { try buffer.zero(offset: (g * kvRows + seqLen) * rowBytes, count: tail) }
    }

    /// V in P·V's type and that type, once chosen.
    func chosenValues() throws -> (buffer: DeviceBuffer, inBF16: Bool) {
        guard let values else { throw CUDAError.unsupported("the ring ran before P·V's type was chosen") }
        return values
    }

    // MARK: - Helpers

    /// The lists for `blockLists`: `maskKeys` when the mask was compacted on the device; else `0..<nk` when
    /// every row is a prefix (a dense mask, made on the host: nothing of O(blocks) goes up); else the mask's
    /// keys uploaded. Nil when no block is computed.
    static func blockLists(mask: BlockMask, maskKeys: DeviceBuffer?,
                           device: CUDADevice) throws -> (DeviceBuffer?, fromRowStart: Bool) {
        if let maskKeys { return (maskKeys, false) }
        guard mask.computedCount > 0 else { return (nil, false) }
        let prefixes = mask.rowsArePrefixes
        let keys = prefixes ? (0..<Int32(mask.keyBlocks)).map { $0 } : mask.keys
        let lists = try DeviceBuffer(device: device, bytes: keys.count * 4, label: "mask key lists")
        try lists.upload(keys)
        return (lists, prefixes)
    }

    var operands: AttentionKernel.Operands {
        AttentionKernel.Operands(q: ring.queries.address, k: k.address, v: values?.buffer.address ?? 0,
                                 oacc: state?.oacc.address ?? 0, ml: state?.ml.address ?? 0,
                                 output: final?.output.address ?? 0, lse: final?.lse.address ?? 0,
                                 counters: counters.address, tiles: tileTable.address, rows: shard.rows, kvRows: kvRows,
                                 queryHeads: shard.queryHeads, kvHeads: shard.kvHeads,
                                 quantization: ring.quantized.map { ($0.queryScales.address, quantizedKeys!.scales.address, $0.rowShifts.address) })
    }

    func rows(ofBlock j: Int) -> Int { min(blockK, seqLen - j * blockK) }

    /// Keys and values of one of this rank's own blocks, in the shard's K/V.
    func localBlock(kvHead g: Int, block j: Int) throws -> (UInt64, UInt64) {
        var localRow = 0
        for range in tokenRanges {
            let token = j * blockK
            if range.contains(token) {
                let offset = UInt64(((g * shard.rows) + localRow + token - range.lowerBound) * shard.dim * shard.kvFormat.byteSize)
                return (ring.keys.address + offset, ring.values.address + offset)
            }
            localRow += range.count
        }
        throw SpargeError.invalidArgument("ring: block \(j) is not one of this rank's")
    }

    /// Keys and values of a block of the current payload.
    func currentBlock(kvHead g: Int, block j: Int) throws -> (UInt64, UInt64) {
        guard let payload else { return try localBlock(kvHead: g, block: j) }
        let offset = payloadOffsets[g * keyBlocks + j]
        guard offset >= 0 else { throw SpargeError.invalidArgument("ring: block \(j) of kv head \(g) is not in the payload") }
        let keys = payload.address + UInt64(offset)
        return (keys, keys + UInt64(payloadFormat.keyBytes(rows: rows(ofBlock: j))))
    }

    /// Appends one `BlockPlacement` of the kernel source: keys, values, (kv head, first row), (rows, 0).
    func appendPlacement(to table: inout [UInt64], keys: UInt64, values: UInt64, kvHead: Int, block j: Int) {
        table.append(keys)
        table.append(values)
        table.append(UInt64(UInt32(kvHead)) | UInt64(UInt32(j * blockK)) << 32)
        table.append(UInt64(UInt32(rows(ofBlock: j))))
    }

    /// One rank's V converted to P·V's type in one pass, where the blocks need no placing (unless it already
    /// is V itself).
    func convertValuesWhole() throws {
        let (v, inBF16) = try chosenValues()
        guard v !== ring.values && v !== ring.valuesInHalf else { return }
        try TensorEntry(device: device).convert(ring.values, from: shard.kvFormat, count: kvBytes / 2, into: v,
                                                as: inBF16 ? .bf16 : .f16, overflow: overflow)
    }

    /// Converts and places blocks (`placement` quadruples) at their rows of `k` and (with `values`) `v`; in
    /// int8 no K, which is quantized into `k` where `quantizeKeys` (this rank's own blocks; a payload's came
    /// quantized).
    func place(_ placements: [UInt64], quantizeKeys: Bool = true, values: Bool = true) throws {
        guard !placements.isEmpty else { return }
        let (v, valuesInBF16) = try chosenValues()
        let table = try DeviceBuffer(device: device, bytes: placements.count * 8, label: "placement table")
        try table.upload(placements)
        if quantizeKeys { try quantizedKeys?.quantize(table: table.address, count: placements.count / 4, format: shard.kvFormat) }
        guard quantizedKeys == nil || values else { return }
        try device.launch(device.residentKernel("sparge_place_blocks"), grid: placements.count / 4, block: 256, [
            .pointer(table.address), .int(ResidentKernelSource.code(of: shard.kvFormat)), .int(Int32(shard.dim)),
            .int(Int32(kvRows)), .pointer(quantizedKeys == nil ? k.address : 0), .int(shard.precision == .bf16 ? 1 : 2),
            .pointer(values ? v.address : 0), .int(valuesInBF16 ? 1 : 2), .pointer(overflow.address),
        ])
        // The table goes back to the pool when this returns; its next user is ordered after this kernel.
    }

    /// `sparge_copy_blocks` over `copies`, (source, destination, bytes) triples of 4-byte words.
    func copy(_ copies: [UInt64]) throws {
        guard !copies.isEmpty else { return }
        let table = try DeviceBuffer(device: device, bytes: copies.count * 8, label: "ring copy table")
        try table.upload(copies)
        try device.launch(device.residentKernel("sparge_copy_blocks"), grid: copies.count / 3, block: 256, [.pointer(table.address)])
        // The table goes back to the pool when this returns; its next user is ordered after this kernel.
    }
}
