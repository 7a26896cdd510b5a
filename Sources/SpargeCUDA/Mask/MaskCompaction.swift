/// Dense mask bytes `[rows][nk]` on the device turned into the sparse mask's lists there: per row the
/// ascending computed key blocks. Only the row totals (4 bytes a row) and the lists (4 bytes a computed
/// block) come down — never the `rows · nk` bytes.
struct MaskCompaction {
    /// A sparse mask's lists in device memory: row starts (Int64, `rows + 1` of them) and key blocks (Int32).
    struct DeviceLists {
        let rowStarts: DeviceBuffer
        let keys: DeviceBuffer
    }

    let device: CUDADevice

    /// The CSR row starts and key lists on the host, and the same left on the device (the attention
    /// kernel reads its block lists from them; one rank's work list is built from both there).
    struct Result {
        let rowStarts: [Int]
        let keys: [Int32]
        let device: DeviceLists
    }

    /// Up to this many bytes of key lists (`rows · nk · 4`, every block computed) are allocated before the
    /// lists are counted, so that one synchronisation brings them down; beyond it the total comes down first.
    static let listBoundBytes = 64 << 20

    func compact(_ bits: DeviceBuffer, rows: Int, keyBlocks nk: Int) throws -> Result {
        let chunks = (nk + 63) / 64
        let work = rows * chunks
        let offsets = try DeviceBuffer(device: device, bytes: work * 4, label: "mask chunk offsets")
        let totals = try DeviceBuffer(device: device, bytes: rows * 4, label: "mask row totals")
        let segmentCount = (rows + ResidentKernelSource.segmentRows - 1) / ResidentKernelSource.segmentRows
        let segments = try DeviceBuffer(device: device, bytes: (segmentCount + 1) * 8, label: "mask segment starts")
        let starts = try DeviceBuffer(device: device, bytes: (rows + 1) * 8, label: "mask row starts")
        let block = 256
        func launch(_ name: String, threads: Int, _ arguments: [KernelArgument]) throws {
            try device.launch(device.residentKernel(name), grid: (threads + block - 1) / block, block: block, arguments)
        }
        // The row starts are a scan on the device: the host waits once, not for the totals and then the lists.
        try launch("sparge_chunk_counts", threads: work, [.pointer(bits.address), .int64(Int64(rows)), .int(Int32(nk)),
                                                          .pointer(offsets.address)])
        try launch("sparge_row_offsets", threads: rows, [.pointer(offsets.address), .int64(Int64(rows)), .int(Int32(nk)),
                                                         .pointer(totals.address)])
        try launch("sparge_segment_sums", threads: segmentCount, [.pointer(totals.address), .int64(Int64(rows)),
                                                                  .pointer(segments.address)])
        try launch("sparge_segment_starts", threads: 1, [.pointer(segments.address), .int64(Int64(segmentCount))])
        try launch("sparge_row_starts", threads: rows + 1, [.pointer(totals.address), .pointer(segments.address),
                                                            .int64(Int64(rows)), .pointer(starts.address)])
        let bound = rows * nk
        var total = bound
        if bound * 4 > Self.listBoundBytes {
            try device.synchronize()
            var last: Int64 = 0
            try withUnsafeMutableBytes(of: &last) { try starts.download(into: $0.baseAddress!, count: 8, offset: rows * 8) }
            total = Int(last)
        }
        let keys = try DeviceBuffer(device: device, bytes: total * 4, label: "mask key lists")
        try launch("sparge_compact", threads: work, [.pointer(bits.address), .int64(Int64(rows)), .int(Int32(nk)),
                                                     .pointer(offsets.address), .pointer(starts.address),
                                                     .pointer(keys.address)])
        try device.synchronize()
        var starts64 = [Int64](repeating: 0, count: rows + 1)
        try starts64.withUnsafeMutableBytes { try starts.download(into: $0.baseAddress!, count: $0.count) }
        let rowStarts = starts64.map { Int($0) }
        var host = [Int32](repeating: 0, count: rowStarts[rows])
        try host.withUnsafeMutableBytes { try keys.download(into: $0.baseAddress!, count: $0.count) }
        return Result(rowStarts: rowStarts, keys: host, device: DeviceLists(rowStarts: starts, keys: keys))
    }
}
