import SpargeKernels

/// One rank's Q, K, V on a CUDA device for a resident forward pass (`ResidentShard`): entered once, then
/// the K sums, summaries and mask rows are computed where they are, and the ring store attends from them.
///
/// Held on the device:
/// - Q and K as the summaries read them: the entered tensors where they are packed bf16 (a model's tensors,
///   widened as they are loaded), else fp32 copies — either way the Floats the CPU pools, so that the mask is
///   the CPU's bit for bit;
/// - converted once, after the mask kernels are enqueued (the device converts while the host plans the
///   ring): Q in the kernel's 16-bit type (in int8 quantized, with its scales and shifts), K and V in the
///   ring's storage format, and with the whole sequence V in fp16 for P·V.
/// A caller's device tensor that is already packed in the wanted type is used in place.
final class DeviceShard: ResidentShard {
    let device: CUDADevice
    let precision: CUDAPrecision
    let options: CUDAOptions
    let kvFormat: StorageFormat
    let queryHeads: Int, kvHeads: Int, rows: Int, dim: Int
    /// Q `[Hq][rows][D]` and K `[Hkv][rows][D]` as the summaries and K sums read them.
    let queryRows: SummaryRows, keyRows: SummaryRows

    /// A tensor's rows on the device for the summaries: packed fp32, or packed bf16 read in place.
    struct SummaryRows {
        let buffer: DeviceBuffer
        let inBF16: Bool
        var type: Int32 { ResidentKernelSource.code(of: inBF16 ? .bf16 : .f32) }
    }
    /// The tensors as they entered (on the device), for the ring's conversions.
    private let entered: (q: Tensor, k: Tensor, v: Tensor)
    private var ring: RingTensors?
    private var summaries: Summaries?
    /// Whether `summarize` pooled the key blocks into `summaries` (`summarizeQueries` pools the query blocks).
    private var pooledKeys = false
    /// The K sums `summarizeQueries` enqueued ahead of the query summaries, until `keySums` takes them.
    private var pendingKeySums: PendingDownload?
    /// The self-similarity flags (queries', then keys') on their way down since `summarize` pooled them.
    private var flagsComingDown: PendingDownload?
    /// Pinned host memory this rank's key summaries go down into for the allgather (`packKeySummaries`).
    private var summaryStaging: PinnedBuffer?
    /// V in fp16 for P·V, converted on the side stream since `startValuesAhead` (one rank, bf16 or int8, V
    /// entered packed in bf16): the copy, the flag of values beyond fp16, and the flag coming down (its event
    /// also orders the main stream after the conversion).
    private var valuesAhead: (half: DeviceBuffer, beyondHalf: DeviceBuffer, flagDown: PendingDownload)?
    /// Whether `beginPass` asked for `valuesAhead`, not yet enqueued.
    private var valuesAheadWanted = false
    /// The last predicted mask's lists on the device (the attention kernel's block lists).
    private var maskLists: MaskCompaction.DeviceLists?
    /// The K mean of every head (`[Hkv][D]` fp32, the whole sequence's) and the softmax scale, from
    /// `summarize`: what int8 smooths K by and weighs the row shifts with.
    private var smoothing: (keyMean: DeviceBuffer, softmaxScale: Float)?

    /// Q in the kernel's type `[Hq][rows][D]` (16 bits, or int8 with `quantized`), K and V in `kvFormat`
    /// `[Hkv][rows][D]`, and whether a value of V lies beyond fp16's range (a device flag, read once).
    struct RingTensors {
        let queries: DeviceBuffer, keys: DeviceBuffer, values: DeviceBuffer
        /// V in fp16 for P·V, made ahead where this rank holds the whole sequence (`ringTensors(wholeSequence:)`).
        let valuesInHalf: DeviceBuffer?
        let beyondHalf: DeviceBuffer
        /// int8: Q's row scales and row shifts (`q·μ` times the softmax scale) `[Hq][rows]`, and the K mean
        /// `[Hkv][D]` the ring's K blocks are smoothed by when they are placed.
        typealias Quantized = (queryScales: DeviceBuffer, rowShifts: DeviceBuffer, keyMean: DeviceBuffer)
        let quantized: Quantized?
    }

    /// Block summaries on the device: `[heads][blocks]` with this rank's runs side by side.
    private struct Summaries {
        let queryMeans: DeviceBuffer, queryFlags: DeviceBuffer, keyMeans: DeviceBuffer, keyFlags: DeviceBuffer
        /// Per run: first global key block and key blocks.
        let keyRuns: [(firstBlock: Int, count: Int)]
        let queryBlocks: Int, keyBlocks: Int, blockK: Int
    }

    init(device: CUDADevice, precision: CUDAPrecision, options: CUDAOptions, q: Tensor, k: Tensor, v: Tensor,
         kvFormat: StorageFormat) throws {
        guard q.shape.count == 3, k.shape.count == 3, k.shape == v.shape, q.shape[1] == k.shape[1], q.shape[2] == k.shape[2] else {
            throw SpargeError.invalidArgument("Q \(q.shape), K \(k.shape), V \(v.shape): expected [Hq, rows, D] and two [Hkv, rows, D]")
        }
        self.device = device
        self.precision = precision
        self.options = options
        self.kvFormat = kvFormat
        (queryHeads, rows, dim) = (q.shape[0], q.shape[1], q.shape[2])
        kvHeads = k.shape[0]
        try device.makeCurrent()
        CUDATrace.beginPass()
        var t = CUDATrace.now()
        let entry = TensorEntry(device: device)
        entered = (try entry.onDevice(q, "Q"), try entry.onDevice(k, "K"), try entry.onDevice(v, "V"))
        t = CUDATrace.note("enter: tensors on the device", since: t)
        queryRows = try Self.summaryRows(entered.q, "Q", entry)
        keyRows = try Self.summaryRows(entered.k, "K", entry)
        try CUDATrace.step("enter: Q, K for the summaries (bf16 read in place, else fp32)", since: t, on: device)
    }

    /// `t`'s own memory when it is packed bf16, else an fp32 copy: the summaries widen bf16 as they load it,
    /// which saves converting a model's bf16 Q and K (two passes over them) before the summaries can start.
    private static func summaryRows(_ t: Tensor, _ name: String, _ entry: TensorEntry) throws -> SummaryRows {
        let inBF16 = t.element == .bf16 && t.isContiguous
        return SummaryRows(buffer: try entry.packed(t, as: inBF16 ? .bf16 : .f32, name), inBF16: inBF16)
    }

    /// Whether this rank holds the whole sequence in whole key blocks: its ring store then reads K and V
    /// where they are (one rank), which decides what `ringTensors` converts ahead.
    func holdsWholeSequence(seqLen: Int, blockK: Int) -> Bool { rows == seqLen && rows % blockK == 0 }

    /// With one rank holding the whole sequence in a bf16 or int8 pass whose V entered packed in bf16 (a
    /// model's tensor), V's fp16 copy for P·V is to run on the side stream beside the block summaries
    /// (`startValuesAhead`, once the K sums are down): on the main stream it came after the mask, and with the
    /// work list built on the device it was what the attention kernel waited for (0.08 ms at 32K tokens and
    /// 8 heads).
    func beginPass(seqLen: Int, tokenRanges: [Range<Int>], config: SpargeConfig) throws {
        valuesAheadWanted = valuesAhead == nil && ring == nil
            && halfAhead(wholeSequence: holdsWholeSequence(seqLen: seqLen, blockK: config.blockK))
            && entered.v.isContiguous && entered.v.element == kvFormat
    }

    /// Enqueues V's fp16 copy on the side stream where `beginPass` asked for it. Called once the host has the
    /// K sums: started at the pass's beginning it took the memory bandwidth (and, at equal priority, the
    /// SMs) of the K sums the host waits for — 0.02 → 0.1 ms, which cost what it saved (08:25, 08:35, one
    /// H200). From here on the device pools Q and K, kernels bound by latency.
    private func startValuesAhead() throws {
        guard valuesAheadWanted, ring == nil else { return }
        valuesAheadWanted = false
        let t = CUDATrace.now()
        // The copy and the flag are memory of the pool, whose last users may still be queued on the main
        // stream. (Zeroing the flag on the legacy stream orders it too; the pass's next memset — the mask's
        // bits — waits in turn for the copy, which therefore overlaps the block summaries.)
        try device.orderAfterQueuedWork(device.sideStream)
        let values = try device.deviceBuffer(of: entered.v, label: "V")
        let beyondHalf = try DeviceBuffer(device: device, bytes: 4, zeroed: true, label: "V beyond fp16")
        let half = try halfCopy(of: values, flaggingBeyondHalf: beyondHalf, on: device.sideStream)
        valuesAhead = (half, beyondHalf, try PendingDownload(device: device, parts: [(beyondHalf, 0, 4)], on: device.sideStream))
        CUDATrace.note("V to fp16 on the side stream (enqueued)", since: t)
    }

    /// Whether a bf16 or int8 pass (P·V in fp16) gets V in fp16 for P·V ahead (with `wholeSequence`: the
    /// ring store reads V where it is), from the pass that looks for values beyond fp16's range — instead of
    /// after the range is known, just before the attention kernel.
    private func halfAhead(wholeSequence: Bool) -> Bool { wholeSequence && precision != .fp16 && kvFormat == .bf16 }

    /// The ring's tensors, converted on first use. With `wholeSequence` (this rank holds every token, in
    /// whole key blocks: its ring store reads V where it is) a bf16 or int8 pass also gets V in fp16 for P·V
    /// (`halfAhead`): taken from `beginPass`, or converted now, while the host plans the ring.
    func ringTensors(wholeSequence: Bool = false) throws -> RingTensors {
        if let ring { return ring }
        let t = CUDATrace.now()
        let entry = TensorEntry(device: device)
        let (queries, quantized) = try queriesForKernel()
        let halfAhead = halfAhead(wholeSequence: wholeSequence)
        let beyondHalf = try valuesAhead?.beyondHalf ?? DeviceBuffer(device: device, bytes: 4, zeroed: true, label: "V beyond fp16")
        let values = try entry.packed(entered.v, as: kvFormat, "V", range: halfAhead ? nil : beyondHalf)
        var half: DeviceBuffer?
        if let valuesAhead {
            try valuesAhead.flagDown.orderMainStreamAfter()
            half = valuesAhead.half
        } else if halfAhead {
            half = try halfCopy(of: values, flaggingBeyondHalf: beyondHalf)
        }
        let converted = RingTensors(
            queries: queries, keys: try entry.packed(entered.k, as: kvFormat, "K"), values: values,
            valuesInHalf: half, beyondHalf: beyondHalf, quantized: quantized)
        ring = converted
        try CUDATrace.step("ring formats: Q in \(precision.rawValue), K and V in \(kvFormat.rawValue) (enqueued)", since: t, on: device)
        return converted
    }

    /// `values` (V in `kvFormat`) rounded to fp16, setting `flag` where a value is beyond fp16's range (the
    /// copy then holds ±∞ there, and P·V takes `values` in bf16 instead).
    private func halfCopy(of values: DeviceBuffer, flaggingBeyondHalf flag: DeviceBuffer,
                          on stream: UnsafeMutableRawPointer? = nil) throws -> DeviceBuffer {
        let count = kvHeads * rows * dim
        let half = try DeviceBuffer(device: device, bytes: max(2, count * 2), label: "V in fp16 for P·V")
        try TensorEntry(device: device, stream: stream).convert(values, from: kvFormat, count: count, into: half, as: .f16,
                                                                overflow: flag)
        return half
    }

    /// Q in the kernel's type: 16 bits, or int8 quantized by rows — from Q as the summaries read it (fp32, or
    /// bf16 where it entered), with the row shifts of the K mean from `summarize`.
    private func queriesForKernel() throws -> (DeviceBuffer, RingTensors.Quantized?) {
        guard precision == .int8 else {
            return (try TensorEntry(device: device).packed(entered.q, as: precision.storageFormat ?? .bf16, "Q"), nil)
        }
        guard let smoothing else { throw SpargeError.invalidArgument("int8: the shard's blocks were not summarized yet") }
        let count = queryHeads * rows
        let queries = try DeviceBuffer(device: device, bytes: max(1, count * dim), label: "Q int8")
        let scales = try DeviceBuffer(device: device, bytes: max(4, count * 4), label: "Q row scales")
        let shifts = try DeviceBuffer(device: device, bytes: max(4, count * 4), label: "Q row shifts")
        if count > 0 {
            let rowsPerBlock = ResidentKernelSource.quantizationRows
            try device.launch(device.residentKernel("sparge_query_row_scales"), grid: (count + rowsPerBlock - 1) / rowsPerBlock,
                              block: 128, [
                .pointer(queryRows.buffer.address), .int(queryRows.type), .int64(Int64(rows)), .int(Int32(queryHeads)), .int(Int32(dim)),
                .int(Int32(queryHeads / kvHeads)), .pointer(smoothing.keyMean.address), .float(smoothing.softmaxScale),
                .pointer(scales.address), .pointer(shifts.address),
            ])
            let quads = count * dim / 4
            try device.launch(device.residentKernel("sparge_query_quantize"), grid: (quads + 255) / 256, block: 256, [
                .pointer(queryRows.buffer.address), .int(queryRows.type), .int64(Int64(quads)), .int(Int32(dim)),
                .pointer(scales.address),
                .pointer(queries.address),
            ])
        }
        return (queries, (scales, shifts, smoothing.keyMean))
    }

    func needsWideValues() throws -> Bool {
        if let flag = try valuesAhead?.flagDown.bytes() {
            return flag.load(as: Int32.self) != 0  // (only V's fp16 copy sets it)
        }
        return try TensorEntry(device: device).raised(try ringTensors().beyondHalf)
    }

    func keySums() throws -> [Double] {
        try device.makeCurrent()
        let t = CUDATrace.now()
        let pending = try pendingKeySums ?? enqueueKeySums()
        pendingKeySums = nil
        let bytes = try pending.bytes()
        let sums = [Double](UnsafeBufferPointer(start: bytes.baseAddress?.assumingMemoryBound(to: Double.self),
                                                count: kvHeads * dim))
        CUDATrace.note("K sums on the device, \(sums.count) down", since: t)
        try startValuesAhead()
        return sums
    }

    /// The K sums, enqueued with their download: `summarizeQueries` enqueues them ahead of the query
    /// summaries, so that `keySums` waits for the sums alone while the device pools Q.
    private func enqueueKeySums() throws -> PendingDownload {
        let chunkRows = KeyMean.chunkRows
        let chunks = (rows + chunkRows - 1) / chunkRows
        let count = kvHeads * dim
        let partials = try DeviceBuffer(device: device, bytes: kvHeads * max(1, chunks) * dim * 8, label: "K sum chunks")
        let total = try DeviceBuffer(device: device, bytes: count * 8, label: "K sums")
        // (No rows: no chunk is summed, and the total of none is 0.)
        try device.launch(device.residentKernel("sparge_key_partials"), grid: (kvHeads * chunks * dim + 255) / 256, block: 256, [
            .pointer(keyRows.buffer.address), .int(keyRows.type), .int(Int32(kvHeads)), .int(Int32(rows)), .int(Int32(dim)),
            .int(Int32(chunkRows)), .pointer(partials.address),
        ])
        try device.launch(device.residentKernel("sparge_key_total"), grid: (count + 255) / 256, block: 256, [
            .pointer(partials.address), .int(Int32(kvHeads)), .int(Int32(chunks)), .int(Int32(dim)), .pointer(total.address),
        ])
        return try PendingDownload(device: device, parts: [(total, 0, count * 8)])
    }

    var smoothsKeys: Bool { precision == .int8 }

    func keepKeyMean(_ keyMean: [Float], config: SpargeConfig) throws {
        try device.makeCurrent()
        _ = try keptKeyMean(keyMean, config: config)
    }

    /// The K mean on the device, kept (with the softmax scale) for int8's smoothing.
    private func keptKeyMean(_ keyMean: [Float], config: SpargeConfig) throws -> DeviceBuffer {
        let buffer = try DeviceBuffer(device: device, bytes: kvHeads * dim * 4, label: "K mean")
        try buffer.upload(keyMean)
        smoothing = (buffer, config.softmaxScale(headDim: dim))
        return buffer
    }

    func summarizeQueries(tokenRanges: [Range<Int>], config: SpargeConfig) throws {
        try device.makeCurrent()
        var t = CUDATrace.now()
        try CUDAMaskPredictor.checkHeadDim(dim)
        let queryCounts = tokenRanges.map { ($0.count + config.blockQ - 1) / config.blockQ }
        let keyCounts = tokenRanges.map { ($0.count + config.blockK - 1) / config.blockK }
        let (nq, nk) = (queryCounts.reduce(0, +), keyCounts.reduce(0, +))
        let zeros = try DeviceBuffer(device: device, bytes: queryHeads * dim * 4, zeroed: true, label: "no mean")
        let s = Summaries(
            queryMeans: try DeviceBuffer(device: device, bytes: queryHeads * nq * dim * 4, label: "query block means"),
            queryFlags: try DeviceBuffer(device: device, bytes: queryHeads * nq, label: "query flags"),
            keyMeans: try DeviceBuffer(device: device, bytes: kvHeads * nk * dim * 4, label: "key block means"),
            keyFlags: try DeviceBuffer(device: device, bytes: kvHeads * nk, label: "key flags"),
            keyRuns: zip(tokenRanges, keyCounts).map { ($0.lowerBound / config.blockK, $1) },
            queryBlocks: nq, keyBlocks: nk, blockK: config.blockK)
        // The K sums first in the stream: the host waits for them (keySums) while the device pools Q.
        pendingKeySums = try enqueueKeySums()
        t = try CUDATrace.step("summaries: buffers, K sums enqueued", since: t, on: device)
        let predictor = CUDAMaskPredictor(device: device, radixTopK: options.radixTopK)
        var (localRow, queryAt) = (0, 0)
        for (i, range) in tokenRanges.enumerated() {
            try predictor.summarizeOnDevice(
                rows: start(of: queryRows, atRow: localRow), rowsInBF16: queryRows.inBF16, headStride: rows * dim,
                count: range.count, heads: queryHeads, dim: dim, blockSize: config.blockQ, threshold: config.simThreshold,
                mean: zeros.address, meansOut: s.queryMeans.address + UInt64(queryAt * dim * 4),
                flagsOut: s.queryFlags.address + UInt64(queryAt), outBlocks: nq)
            (localRow, queryAt) = (localRow + range.count, queryAt + queryCounts[i])
        }
        summaries = s
        pooledKeys = false
        try CUDATrace.step("summaries: \(nq) query blocks a head (enqueued)", since: t, on: device)
    }

    func summarize(tokenRanges: [Range<Int>], config: SpargeConfig, keyMean: [Float]) throws {
        try device.makeCurrent()
        var t = CUDATrace.now()
        guard let s = summaries, s.blockK == config.blockK, s.keyRuns.count == tokenRanges.count else {
            throw SpargeError.invalidArgument("summarize: the query blocks were not pooled for these ranges first")
        }
        let predictor = CUDAMaskPredictor(device: device, radixTopK: options.radixTopK)
        let meanBuffer = try keptKeyMean(keyMean, config: config)
        t = try CUDATrace.step("summaries: K mean up", since: t, on: device)
        var (localRow, keyAt) = (0, 0)
        for (range, run) in zip(tokenRanges, s.keyRuns) {
            try predictor.summarizeOnDevice(
                rows: start(of: keyRows, atRow: localRow), rowsInBF16: keyRows.inBF16, headStride: rows * dim,
                count: range.count, heads: kvHeads, dim: dim, blockSize: config.blockK, threshold: config.simThreshold,
                mean: meanBuffer.address, meansOut: s.keyMeans.address + UInt64(keyAt * dim * 4),
                flagsOut: s.keyFlags.address + UInt64(keyAt), outBlocks: s.keyBlocks)
            (localRow, keyAt) = (localRow + range.count, keyAt + run.count)
        }
        pooledKeys = true
        flagsComingDown = try flagsDown(s)
        try CUDATrace.step("summaries on the device: \(s.queryBlocks) query and \(s.keyBlocks) key blocks a head", since: t, on: device)
    }

    /// Where row `row` of `x` lies.
    private func start(of x: SummaryRows, atRow row: Int) -> UInt64 {
        x.buffer.address + UInt64(row * dim * (x.inBF16 ? 2 : 4))
    }

    func packKeySummaries() throws -> UnsafeRawBufferPointer {
        let s = try pooled()
        let t = CUDATrace.now()
        try device.synchronize()
        let total = s.keyRuns.reduce(0) { $0 + PackedKeySummaries.byteCount(blocks: $1.count, heads: kvHeads, dim: dim) }
        if (summaryStaging?.bytes ?? 0) < total { summaryStaging = try PinnedBuffer(device: device, bytes: total) }
        let staging = summaryStaging!.pointer
        // Per run and head, its means and its flags straight from the pooled arrays into their place.
        var (at, offset) = (0, 0)
        for run in s.keyRuns {
            for g in 0..<kvHeads {
                let place = PackedKeySummaries.offsets(ofRunAt: offset, count: run.count, heads: kvHeads, dim: dim, head: g)
                try s.keyMeans.download(into: staging + place.means, count: run.count * dim * 4,
                                        offset: (g * s.keyBlocks + at) * dim * 4, pinned: true)
                try s.keyFlags.download(into: staging + place.flags, count: run.count, offset: g * s.keyBlocks + at,
                                        pinned: true)
            }
            offset += PackedKeySummaries.byteCount(blocks: run.count, heads: kvHeads, dim: dim)
            at += run.count
        }
        CUDATrace.note("summaries: \(total) B of key summaries down for the allgather", since: t)
        return UnsafeRawBufferPointer(start: staging, count: total)
    }

    func selfSimilarFlags() throws -> (queries: [UInt8], keys: [UInt8]) {
        let s = try pooled()
        let q = queryHeads * s.queryBlocks
        let bytes = try (flagsComingDown ?? flagsDown(s)).bytes()  // long landed when a pass asks, after its attention
        return (Array(bytes[0..<q]), Array(bytes[q...]))
    }

    /// The query and key flags' download, enqueued once they are pooled: the pass asks for them at its end,
    /// where waiting for two downloads cost ~0.02 ms.
    private func flagsDown(_ s: Summaries) throws -> PendingDownload {
        try PendingDownload(device: device, parts: [(s.queryFlags, 0, queryHeads * s.queryBlocks),
                                                    (s.keyFlags, 0, kvHeads * s.keyBlocks)])
    }

    func predictRows(queryBlocks: [Int], keySummaries: PackedKeySummaries?, config: SpargeConfig,
                     seqLen: Int) throws -> BlockMask {
        try device.makeCurrent()
        let s = try pooled()
        let nk = (seqLen + config.blockK - 1) / config.blockK
        var t = CUDATrace.now()
        let predictor = CUDAMaskPredictor(device: device, radixTopK: options.radixTopK)
        let (keyFloats, keyFlags) = try keySummariesOnDevice(keySummaries, pooled: s, keyBlocks: nk)
        let keyMeans = try predictor.widened(keyFloats, count: kvHeads * nk * dim)
        t = CUDATrace.note("mask: key means widened", since: t)
        let predicted = try predictor.predictRows(
            on: CUDAMaskPredictor.MaskInputs(queryMeans: s.queryMeans.address, queryFlags: s.queryFlags.address,
                                             keyMeans: keyMeans.address, keyFlags: keyFlags.address),
            queryBlocks: queryBlocks, config: config, headDim: dim, queryHeads: queryHeads, kvHeads: kvHeads,
            seqLen: seqLen)
        maskLists = predicted.lists
        // The device converts while the host plans the ring.
        _ = try ringTensors(wholeSequence: holdsWholeSequence(seqLen: seqLen, blockK: config.blockK))
        return predicted.mask
    }

    func makeRingStore(mask: BlockMask, tokenRanges: [Range<Int>], config: SpargeConfig, seqLen: Int,
                       messagesInPlace: Bool) throws -> any ResidentRingStore {
        try DeviceRingStore(shard: self, mask: mask, maskLists: maskLists, tokenRanges: tokenRanges, config: config,
                            seqLen: seqLen, messagesInDeviceMemory: messagesInPlace)
    }

    /// Every key block's Float means and flags on the device: `gathered` uploaded (several ranks), or this
    /// rank's own when they are every block (one rank).
    private func keySummariesOnDevice(_ gathered: PackedKeySummaries?, pooled s: Summaries,
                                      keyBlocks nk: Int) throws -> (means: DeviceBuffer, flags: DeviceBuffer) {
        guard let gathered else {
            var next = 0
            for run in s.keyRuns {
                guard run.firstBlock == next else {
                    throw SpargeError.invalidArgument("predictRows: this rank's key blocks do not cover the sequence")
                }
                next += run.count
            }
            guard next == nk else { throw SpargeError.invalidArgument("predictRows: \(next) key blocks for \(nk)") }
            return (s.keyMeans, s.keyFlags)
        }
        guard gathered.keyBlocks == nk && gathered.heads == kvHeads && gathered.dim == dim else {
            throw SpargeError.invalidArgument("predictRows: key summaries of \(gathered.keyBlocks) blocks × "
                + "\(gathered.heads) heads × \(gathered.dim) for \(nk) key blocks × \(kvHeads) × \(dim)")
        }
        let t = CUDATrace.now()
        let means = try DeviceBuffer(device: device, bytes: kvHeads * nk * dim * 4, label: "key means (all ranks)")
        let flags = try DeviceBuffer(device: device, bytes: kvHeads * nk, label: "key flags (all ranks)")
        // Per run and head, straight from the allgather's buffer to its rows (the runs cover every block once).
        try gathered.bytes.withUnsafeBytes { raw in
            for run in gathered.runs {
                for g in 0..<kvHeads {
                    try means.upload(raw.baseAddress! + gathered.meansOffset(of: run, head: g), count: run.count * dim * 4,
                                     offset: (g * nk + run.firstBlock) * dim * 4)
                    try flags.upload(raw.baseAddress! + gathered.flagsOffset(of: run, head: g), count: run.count,
                                     offset: g * nk + run.firstBlock)
                }
            }
        }
        CUDATrace.note("mask: \(gathered.bytes.count) B of every rank's key summaries up", since: t)
        return (means, flags)
    }

    private func pooled() throws -> Summaries {
        guard let summaries, pooledKeys else { throw SpargeError.invalidArgument("the shard's blocks were not summarized yet") }
        return summaries
    }
}
