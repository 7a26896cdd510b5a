import SpargeKernels

/// The attention over the blocks a step holds: the launch (the device's work list or the host's), the split
/// of the last wave into parts, and the end of the pass (output, LSE and the tiles' counters).
extension DeviceRingStore {
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
}
