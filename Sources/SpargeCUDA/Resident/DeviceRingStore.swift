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
    private let shard: DeviceShard
    private let ring: DeviceShard.RingTensors
    private let device: CUDADevice
    /// Who lays out the compute tiles: the host's plan, or (one rank) the device.
    private let work: TileWork
    private enum TileWork {
        case host(AttentionPlan)
        case device(DeviceWorkList)

        var tileCount: Int {
            switch self {
            case .host(let plan): plan.tiles.count
            case .device(let list): list.tiles
            }
        }
    }
    private let kernel: AttentionKernel
    /// The key-block lists the kernel reads: the mask's own (compacted on the device, or uploaded), or for a
    /// mask whose rows are all prefixes (dense) one list `0..<nk` that every row indexes from its start.
    private let blockLists: DeviceBuffer?
    private let listsFromRowStart: Bool
    private let tokenRanges: [Range<Int>]
    let payloadFormat: PayloadFormat
    private let seqLen: Int, blockK: Int, keyBlocks: Int, kvRows: Int
    private let k: DeviceBuffer
    /// int8: `k` in int8 and its block scales, written as blocks are placed.
    private let quantizedKeys: QuantizedKeys?
    /// V in P·V's type, and whether that type is bf16 (V beyond fp16's range somewhere) rather than fp16,
    /// from `chooseValueType(wide:)` on: the shard's own V where it is in that type already and nothing is to
    /// be placed (`valuesInPlace`), else a buffer that blocks are placed in.
    private var values: (buffer: DeviceBuffer, inBF16: Bool)?
    /// One rank holding the whole sequence in whole blocks, its K already in the kernel's type: the kernel
    /// reads that K where it is, and V is converted to P·V's type in one pass (or read where it is).
    private let wholeInPlace: Bool
    /// One rank holding the whole sequence in whole blocks: the kernel reads V where it is, or converted in
    /// one pass, also where K must be placed (int8 quantizes it block by block; K in another format).
    private let valuesInPlace: Bool
    /// Bytes of the kernel's V (two an element).
    private let kvBytes: Int
    /// With one rank every tile's blocks are all in one launch, whose CTAs write the normalised output and
    /// LSE themselves (`final`); otherwise the launches carry the softmax state in `oacc` and `ml` between
    /// ring steps and `finish` normalises.
    private let final: (output: DeviceBuffer, lse: DeviceBuffer)?
    private let state: (oacc: DeviceBuffer, ml: DeviceBuffer)?
    private var attended = false
    private let counters: DeviceBuffer, tileTable: DeviceBuffer
    /// Whether one rank's launch may split its last wave (`TailSplit`): the Hopper kernel, every block
    /// computed, the switch on.
    private let splitsTail: Bool
    private let overflow: DeviceBuffer

    /// The payload being computed with: nil for this rank's own blocks, else a device copy of one that
    /// arrived, with each block's offset in it (`-1` when absent), per kv head × key block.
    private var payload: DeviceBuffer?
    private var payloadOffsets: [Int]
    private var ownerBlocks: [Range<Int>] = []
    private var sendDevice: DeviceBuffer?, sendHost: PinnedBuffer?, receiveHost: PinnedBuffer?
    private var receivedBytes = 0
    /// Whether MPI takes device memory: payloads are sent from `sendDevice` and received into
    /// `receiveDevice` (a fresh buffer each step: the previous one may still be computed with).
    private let messagesInDeviceMemory: Bool
    private var receiveDevice: DeviceBuffer?
    /// The payload copied up on the copy stream once it arrived, and the event that says it is there.
    private var arrived: (buffer: DeviceBuffer, copied: CUDAEvent)?
    private var lastCopy: CUDAEvent?
    private var timings: [(start: CUDAEvent, stop: CUDAEvent)] = []
    /// The tile counters coming down right behind the launch that finished every tile (one rank).
    private var countersDown: PendingDownload?

    /// Device seconds in the attention kernel over every `attend` (after `finish`).
    private(set) var kernelSeconds = 0.0
    /// CTAs whose lists a launch split into parts (`TailSplit`).
    private var splitTailCTAs = 0

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
    private static func tileTable(_ tiles: [AttentionPlan.Tile], device: CUDADevice) throws -> DeviceBuffer {
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
    private static func zeroTail(of buffer: DeviceBuffer, kvHeads: Int, kvRows: Int, seqLen: Int, rowBytes: Int) throws {
        let tail = (kvRows - seqLen) * rowBytes
        for g in 0..<kvHeads { try buffer.zero(offset: (g * kvRows + seqLen) * rowBytes, count: tail) }
    }

    /// V in P·V's type and that type, once chosen.
    private func chosenValues() throws -> (buffer: DeviceBuffer, inBF16: Bool) {
        guard let values else { throw CUDAError.unsupported("the ring ran before P·V's type was chosen") }
        return values
    }

    // MARK: - Payloads

    func holdLocal(ownerBlocks: [Range<Int>]) throws {
        try device.makeCurrent()
        let t = CUDATrace.now()
        payload = nil
        self.ownerBlocks = ownerBlocks
        if wholeInPlace {
            try convertValuesWhole()
            CUDATrace.note("ring: own blocks in place", since: t)
            return
        }
        var placements: [UInt64] = []
        placements.reserveCapacity(4 * shard.kvHeads * ownerBlocks.reduce(0) { $0 + $1.count })
        for g in 0..<shard.kvHeads {
            for range in ownerBlocks {
                for j in range {
                    let (keys, values) = try localBlock(kvHead: g, block: j)
                    appendPlacement(to: &placements, keys: keys, values: values, kvHead: g, block: j)
                }
            }
        }
        let listed = CUDATrace.note("ring: host: placement table of \(placements.count / 4) own blocks", since: t)
        try place(placements, values: !valuesInPlace)
        if valuesInPlace { try convertValuesWhole() }
        CUDATrace.note("ring: own blocks placed", since: listed)
    }

    func holdReceived(_ entries: [PayloadEntry], ownerBlocks: [Range<Int>]) throws {
        try device.makeCurrent()
        let t = CUDATrace.now()
        self.ownerBlocks = ownerBlocks
        for i in payloadOffsets.indices { payloadOffsets[i] = -1 }
        guard !entries.isEmpty else {
            // Nothing came (no later rank needed a block of that owner): no receive was posted, and no tile
            // visits the owner's blocks. An empty payload, not a stale one.
            arrived = nil
            payload = try DeviceBuffer(device: device, bytes: 1, label: "empty ring payload")
            CUDATrace.note("ring: empty payload", since: t)
            return
        }
        if arrived == nil { try payloadArrived() }
        let up: DeviceBuffer
        if messagesInDeviceMemory, let received = receiveDevice {
            up = received
        } else {
            // Copied up on the copy stream when it arrived (often while the last kernel ran); the kernels
            // from here on wait for that copy, the host does not.
            let (buffer, copied) = arrived!
            try copied.makeWait()
            up = buffer
        }
        arrived = nil
        receiveDevice = nil
        payload = up
        var placements: [UInt64] = [], keyCopies: [UInt64] = []
        placements.reserveCapacity(4 * entries.count)
        for e in entries {
            payloadOffsets[e.kvHead * keyBlocks + e.block] = e.offset
            let block = up.address + UInt64(e.offset)
            // int8: the owner's int8 rows and scale, copied where they go (placing V only).
            keyCopies += quantizedKeys?.places.copies(kvHead: e.kvHead, block: e.block, rows: e.rows, payloadBlock: block,
                                                      intoPayload: false) ?? []
            appendPlacement(to: &placements, keys: block, values: block + UInt64(payloadFormat.keyBytes(rows: e.rows)),
                            kvHead: e.kvHead, block: e.block)
        }
        try copy(keyCopies)
        try place(placements, quantizeKeys: false)
        CUDATrace.note("ring: payload of \(entries.count) blocks up and placed", since: t)
    }

    func pack(_ entries: [PayloadEntry], byteCount: Int) throws -> UnsafeRawBufferPointer {
        try device.makeCurrent()
        let t = CUDATrace.now()
        if (sendDevice?.bytes ?? 0) < byteCount {
            sendDevice = try DeviceBuffer(device: device, bytes: byteCount, label: "ring send area")
            sendHost = messagesInDeviceMemory ? nil : try PinnedBuffer(device: device, bytes: byteCount)
        }
        let area = sendDevice!.address
        var copies: [UInt64] = []
        for e in entries {
            let (keys, values) = try currentBlock(kvHead: e.kvHead, block: e.block)
            let block = area + UInt64(e.offset)
            let keyPart = UInt64(payloadFormat.keyBytes(rows: e.rows)), valuePart = UInt64(payloadFormat.valueBytes(rows: e.rows))
            // int8: K as quantized (by this rank, or by the owner it came from) where the kernel reads it.
            copies += quantizedKeys?.places.copies(kvHead: e.kvHead, block: e.block, rows: e.rows, payloadBlock: block,
                                                   intoPayload: true) ?? [keys, block, keyPart]
            copies += [values, block + keyPart, valuePart]
        }
        if !copies.isEmpty {
            try copy(copies)
            try device.synchronize()
            if !messagesInDeviceMemory {
                try device.api.check(device.api.cuMemcpyDtoH(sendHost!.pointer, area, byteCount),
                                     "cuMemcpyDtoH(\(byteCount) B of ring payload)")
            }
        }
        if messagesInDeviceMemory {
            CUDATrace.note("ring: \(entries.count) blocks packed (MPI sends from the device)", since: t)
            return UnsafeRawBufferPointer(start: UnsafeRawPointer(bitPattern: UInt(area)), count: byteCount)
        }
        CUDATrace.note("ring: \(entries.count) blocks packed and down", since: t)
        return UnsafeRawBufferPointer(start: sendHost!.pointer, count: byteCount)
    }

    func payloadArrived() throws {
        guard !messagesInDeviceMemory, arrived == nil else { return }
        try device.makeCurrent()
        let buffer = try DeviceBuffer(device: device, bytes: receivedBytes, label: "ring payload")
        let copied = try CUDAEvent(device: device)
        if receivedBytes > 0 {
            try device.api.check(device.api.cuMemcpyHtoDAsync(buffer.address, receiveHost!.pointer, receivedBytes,
                                                              device.copyStream),
                                 "cuMemcpyHtoDAsync(\(receivedBytes) B of ring payload)")
        }
        try copied.record(on: device.copyStream)
        arrived = (buffer, copied)
        lastCopy = copied
    }

    func receiveBuffer(byteCount: Int) throws -> UnsafeMutableRawBufferPointer {
        receivedBytes = byteCount
        if messagesInDeviceMemory {
            // MPI writes the buffer from its own stream, which waits for none of ours: the memory the pool
            // hands out must be free of queued work first.
            try device.synchronize()
            let buffer = try DeviceBuffer(device: device, bytes: byteCount, label: "ring payload (MPI receives)")
            receiveDevice = buffer
            return UnsafeMutableRawBufferPointer(start: UnsafeMutableRawPointer(bitPattern: UInt(buffer.address)), count: byteCount)
        }
        // MPI may write the pinned buffer once the last payload's copy up has read it.
        try lastCopy?.synchronize()
        if (receiveHost?.bytes ?? 0) < byteCount { receiveHost = try PinnedBuffer(device: device, bytes: byteCount) }
        // The copy up (on the copy stream) waits for the work enqueued so far — not for the attention
        // launched after this.
        try device.orderAfterQueuedWork(device.copyStream)
        return UnsafeMutableRawBufferPointer(start: receiveHost!.pointer, count: byteCount)
    }

    // MARK: - Attention

    func attend(threads: Int, poll: ((Double) -> Void)?) throws {
        try device.makeCurrent()
        let t = CUDATrace.now()
        // A launch that finishes its tiles has a CTA for every tile, visits or none: it writes the output.
        let finishing = final != nil
        guard !(finishing && (attended || ownerBlocks.count > 1)) else {
            throw CUDAError.unsupported("one rank's blocks came in more than one launch")
        }
        attended = true
        let list: (buffer: DeviceBuffer, launches: [(first: Int, items: Int)], tail: TailParts?)
        switch work {
        case .device(let built):
            // Built with the store: every tile's whole row, in the one launch of the one rank's blocks.
            guard ownerBlocks == [0..<keyBlocks] else {
                throw CUDAError.unsupported("a work list built for every key block met blocks \(ownerBlocks)")
            }
            list = (built.work, [(0, (built.tailParts?.split.kept ?? built.ctas) * kernel.tilesPerCTA)], built.tailParts)
        case .host(let plan):
            guard let hostList = try hostWorkList(plan, finishing: finishing) else { poll?(1); return }
            list = hostList
        }
        let listed = CUDATrace.note("attend: \(list.launches.count) launches' work lists", since: t)
        let valuesInBF16 = try chosenValues().inBF16
        let group = shard.queryHeads / shard.kvHeads
        let (start, stop) = (try CUDAEvent(device: device), try CUDAEvent(device: device))
        try start.record()
        // A split tail's parts go to the side stream, behind what the launch waits for: at the lowest priority
        // their CTAs take the SMs the whole lists leave, which is the last wave's. The merge waits for both.
        let partsReady = list.tail == nil ? nil : try CUDAEvent(device: device)
        try partsReady?.record()
        for launch in list.launches {
            try kernel.launch(operands, work: list.buffer.address + UInt64(launch.first * 16),
                              blocks: blockLists?.address ?? 0, entries: launch.items, seqLen: seqLen, group: group,
                              valuesInBF16: valuesInBF16)
        }
        if let tail = list.tail, let partsReady {
            try enqueueParts(of: tail, work: list.buffer, after: partsReady, group: group, valuesInBF16: valuesInBF16)
        }
        try stop.record()
        timings.append((start, stop))
        if finishing { countersDown = try PendingDownload(device: device, parts: [(counters, 0, work.tileCount * 16)]) }
        // A host work list is freed when this returns: the kernel must have read it.
        try device.synchronize(poll: poll.map { p in { p(0.5) } })
        CUDATrace.note("attend: \(list.launches.count) kernel launches, run", since: listed)
        poll?(1)
    }

    /// The parts of a split tail (their entries follow the kept CTAs' in `work`) on the side stream once
    /// `ready` has passed, then their merge into the output on the main stream.
    private func enqueueParts(of tail: TailParts, work: DeviceBuffer, after ready: CUDAEvent, group: Int,
                              valuesInBF16: Bool) throws {
        guard let final else { throw CUDAError.unsupported("a split tail in a launch that does not finish its tiles") }
        let (perCTA, split) = (kernel.tilesPerCTA, tail.split)
        splitTailCTAs += split.splitCTAs
        try ready.makeWait(device.sideStream)
        try kernel.launch(operands, work: work.address + UInt64(split.kept * perCTA * 16), blocks: blockLists?.address ?? 0,
                          entries: split.splitCTAs * split.parts * perCTA, seqLen: seqLen, group: group,
                          valuesInBF16: valuesInBF16, tailParts: tail, on: device.sideStream)
        let partsDone = try CUDAEvent(device: device)
        try partsDone.record(on: device.sideStream)
        try partsDone.makeWait()
        try tail.enqueueMerge(device: device, tiles: tileTable.address, rows: shard.rows, output: final.output.address,
                              lse: final.lse.address, rowShifts: ring.quantized?.rowShifts.address ?? 0)
    }

    /// Per tile of `plan`, the part of its mask row in each range of the owner's blocks (every one of them is
    /// placed by now), uploaded: one launch per range, in order, so that no two CTAs of a launch update the
    /// same tile; one rank's single, finishing launch with its tail split where `TailSplit` finds it pays.
    /// Nil when no tile visits a block and none is to be finished.
    private func hostWorkList(_ plan: AttentionPlan, finishing: Bool) throws
        -> (buffer: DeviceBuffer, launches: [(first: Int, items: Int)], tail: TailParts?)? {
        let t = CUDATrace.now()
        var work: [Int32] = []
        work.reserveCapacity(4 * plan.tiles.count * ownerBlocks.count)
        var launches: [(first: Int, items: Int)] = []
        var visits = 0
        let group = shard.queryHeads / shard.kvHeads
        let tiles = plan.tiles, mask = plan.mask, keys = mask.keys, fromRowStart = listsFromRowStart
        for range in ownerBlocks {
            // A range of every key block (one rank) holds each tile's whole list: no search.
            let whole = range.lowerBound <= 0 && range.upperBound >= keyBlocks
            var items: [AttentionKernel.WorkItem] = []
            items.reserveCapacity(tiles.count)
            for i in tiles.indices {
                let row = tiles[i].visits
                let lo = whole ? row.lowerBound : mask.firstKeyIndex(atLeast: range.lowerBound, in: row)
                let hi = whole ? row.upperBound : mask.firstKeyIndex(atLeast: range.upperBound, in: lo..<row.upperBound)
                if hi > lo || finishing {
                    items.append(.init(tile: Int32(i), first: Int32(lo - (fromRowStart ? row.lowerBound : 0)),
                                       count: Int32(hi - lo)))
                    visits += hi - lo
                }
            }
            // Lists from a row's start are 0, 1, 2, …; else they are the mask's keys.
            let entries = kernel.arrange(items, kvHead: { tiles[Int($0)].head / group },
                                         block: { fromRowStart ? $0 : keys[Int($0)] })
            if !entries.isEmpty { launches.append((work.count / 4, entries.count / 4)) }
            work += entries
        }
        CUDATrace.note("attend: host: \(work.count / 4) tile lists, \(visits) block visits", since: t)
        guard visits > 0 || (finishing && !work.isEmpty) else { return nil }
        let perCTA = kernel.tilesPerCTA
        let split = finishing && splitsTail && launches.count == 1
            ? TailSplit.choose(ctas: work.count / 4 / perCTA, on: device, mask: mask, blockK: blockK) : nil
        if let split {
            work = split.apply(to: work, perCTA: perCTA, stepEntries: TailSplit.stepEntries(blockK: blockK))
            launches = [(0, split.kept * perCTA)]  // the parts: a launch of their own (attend)
        }
        let buffer = try DeviceBuffer(device: device, bytes: work.count * 4, label: "attention work list")
        try buffer.upload(work)
        let tail = try split.map { try TailParts(device: device, split: $0, work: buffer, tilesPerCTA: perCTA, headDim: shard.dim) }
        return (buffer, launches, tail)
    }

    func finish() throws -> (output: Tensor, lse: Tensor, statistics: AttentionStatistics) {
        try device.makeCurrent()
        var t = CUDATrace.now()
        let (heads, rows, d) = (shard.queryHeads, shard.rows, shard.dim)
        let output: DeviceBuffer, lse: DeviceBuffer
        if let final {
            guard attended else { throw CUDAError.unsupported("the ring finished before its one launch") }
            (output, lse) = final
        } else {
            output = try DeviceBuffer(device: device, bytes: heads * rows * d * 4, label: "output")
            lse = try DeviceBuffer(device: device, bytes: heads * rows * 4, label: "lse")
            t = try CUDATrace.step("finish: output buffers", since: t, on: device)
            if let state, heads * rows > 0 {
                try kernel.normalize(oacc: state.oacc.address, ml: state.ml.address, output: output.address,
                                     lse: lse.address, totalRows: heads * rows,
                                     rowShifts: ring.quantized?.rowShifts.address ?? 0)
            }
        }
        try device.synchronize()
        kernelSeconds = try timings.reduce(0) { $0 + (try $1.stop.seconds(since: $1.start)) }
        t = CUDATrace.note("finish: \(final == nil ? "normalised on the device" : "normalised by the kernel") "
            + "(kernel \((kernelSeconds * 1e6).rounded() / 1e3) ms)", since: t)
        var statistics = try countersDown.map { AttentionKernel.statistics(counters: try $0.bytes(), tiles: work.tileCount) }
            ?? AttentionKernel.statistics(counters: counters, tiles: work.tileCount)
        statistics.deviceSeconds = kernelSeconds
        statistics.splitTailCTAs = splitTailCTAs
        CUDATrace.note("finish: counters down", since: t)
        CUDATrace.flush()
        return (try output.tensor(.f32, shape: [heads, rows, d]), try lse.tensor(.f32, shape: [heads, rows]), statistics)
    }

    // MARK: - Helpers

    /// The lists for `blockLists`: `maskKeys` when the mask was compacted on the device; else `0..<nk` when
    /// every row is a prefix (a dense mask, made on the host: nothing of O(blocks) goes up); else the mask's
    /// keys uploaded. Nil when no block is computed.
    private static func blockLists(mask: BlockMask, maskKeys: DeviceBuffer?,
                                   device: CUDADevice) throws -> (DeviceBuffer?, fromRowStart: Bool) {
        if let maskKeys { return (maskKeys, false) }
        guard mask.computedCount > 0 else { return (nil, false) }
        let prefixes = mask.rowsArePrefixes
        let keys = prefixes ? (0..<Int32(mask.keyBlocks)).map { $0 } : mask.keys
        let lists = try DeviceBuffer(device: device, bytes: keys.count * 4, label: "mask key lists")
        try lists.upload(keys)
        return (lists, prefixes)
    }

    private var operands: AttentionKernel.Operands {
        AttentionKernel.Operands(q: ring.queries.address, k: k.address, v: values?.buffer.address ?? 0,
                                 oacc: state?.oacc.address ?? 0, ml: state?.ml.address ?? 0,
                                 output: final?.output.address ?? 0, lse: final?.lse.address ?? 0,
                                 counters: counters.address, tiles: tileTable.address, rows: shard.rows, kvRows: kvRows,
                                 queryHeads: shard.queryHeads, kvHeads: shard.kvHeads,
                                 quantization: ring.quantized.map { ($0.queryScales.address, quantizedKeys!.scales.address, $0.rowShifts.address) })
    }

    private func rows(ofBlock j: Int) -> Int { min(blockK, seqLen - j * blockK) }

    /// Keys and values of one of this rank's own blocks, in the shard's K/V.
    private func localBlock(kvHead g: Int, block j: Int) throws -> (UInt64, UInt64) {
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
    private func currentBlock(kvHead g: Int, block j: Int) throws -> (UInt64, UInt64) {
        guard let payload else { return try localBlock(kvHead: g, block: j) }
        let offset = payloadOffsets[g * keyBlocks + j]
        guard offset >= 0 else { throw SpargeError.invalidArgument("ring: block \(j) of kv head \(g) is not in the payload") }
        let keys = payload.address + UInt64(offset)
        return (keys, keys + UInt64(payloadFormat.keyBytes(rows: rows(ofBlock: j))))
    }

    /// Appends one `BlockPlacement` of the kernel source: keys, values, (kv head, first row), (rows, 0).
    private func appendPlacement(to table: inout [UInt64], keys: UInt64, values: UInt64, kvHead: Int, block j: Int) {
        table.append(keys)
        table.append(values)
        table.append(UInt64(UInt32(kvHead)) | UInt64(UInt32(j * blockK)) << 32)
        table.append(UInt64(UInt32(rows(ofBlock: j))))
    }

    /// One rank's V converted to P·V's type in one pass, where the blocks need no placing (unless it already
    /// is V itself).
    private func convertValuesWhole() throws {
        let (v, inBF16) = try chosenValues()
        guard v !== ring.values && v !== ring.valuesInHalf else { return }
        try TensorEntry(device: device).convert(ring.values, from: shard.kvFormat, count: kvBytes / 2, into: v,
                                                as: inBF16 ? .bf16 : .f16, overflow: overflow)
    }

    /// Converts and places blocks (`placement` quadruples) at their rows of `k` and (with `values`) `v`; in
    /// int8 no K, which is quantized into `k` where `quantizeKeys` (this rank's own blocks; a payload's came
    /// quantized).
    private func place(_ placements: [UInt64], quantizeKeys: Bool = true, values: Bool = true) throws {
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
    private func copy(_ copies: [UInt64]) throws {
        guard !copies.isEmpty else { return }
        let table = try DeviceBuffer(device: device, bytes: copies.count * 8, label: "ring copy table")
        try table.upload(copies)
        try device.launch(device.residentKernel("sparge_copy_blocks"), grid: copies.count / 3, block: 256, [.pointer(table.address)])
        // The table goes back to the pool when this returns; its next user is ordered after this kernel.
    }
}
