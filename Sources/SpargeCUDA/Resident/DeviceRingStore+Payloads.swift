import SpargeKernels

/// The ring's payloads on the device: this rank's own blocks held where they entered, received payloads
/// placed at their rows of the kernel's K and V, this rank's payloads packed for the next rank, and the
/// buffers a payload goes down and up through.
extension DeviceRingStore {
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
}
