/// Dense mask bytes `[rows][nk]` on the device turned into the sparse mask's lists there: per row the
/// ascending computed key blocks. Only the row totals (4 bytes a row) and the lists (4 bytes a computed
/// block) come down — never the `rows · nk` bytes.
struct MaskCompaction {
    let device: CUDADevice

    /// The CSR row starts and key lists on the host, and the same lists left on the device (the attention
    /// kernel reads its block lists from them).
    struct Result {
        let rowStarts: [Int]
        let keys: [Int32]
        let deviceKeys: DeviceBuffer
    }

    func compact(_ bits: DeviceBuffer, rows: Int, keyBlocks nk: Int) throws -> Result {
        let chunks = (nk + 63) / 64
        let work = rows * chunks
        let offsets = try DeviceBuffer(device: device, bytes: work * 4, label: "mask chunk offsets")
        let totals = try DeviceBuffer(device: device, bytes: rows * 4, label: "mask row totals")
        let block = 256
        try device.launch(device.residentKernel("sparge_chunk_counts"), grid: (work + block - 1) / block, block: block, [
            .pointer(bits.address), .int64(Int64(rows)), .int(Int32(nk)), .pointer(offsets.address),
        ])
        try device.launch(device.residentKernel("sparge_row_offsets"), grid: (rows + block - 1) / block, block: block, [
            .pointer(offsets.address), .int64(Int64(rows)), .int(Int32(nk)), .pointer(totals.address),
        ])
        try device.synchronize()
        var counts = [Int32](repeating: 0, count: rows)
        try counts.withUnsafeMutableBytes { try totals.download(into: $0.baseAddress!, count: $0.count) }
        let t = CUDATrace.now()
        var rowStarts = [Int](repeating: 0, count: rows + 1)
        for r in 0..<rows { rowStarts[r + 1] = rowStarts[r] + Int(counts[r]) }
        CUDATrace.note("mask: host: row starts of \(rows) rows", since: t)
        let starts = try DeviceBuffer(device: device, bytes: rows * 8, label: "mask row starts")
        try starts.upload(rowStarts.dropLast().map(Int64.init))
        let keys = try DeviceBuffer(device: device, bytes: rowStarts[rows] * 4, label: "mask key lists")
        try device.launch(device.residentKernel("sparge_compact"), grid: (work + block - 1) / block, block: block, [
            .pointer(bits.address), .int64(Int64(rows)), .int(Int32(nk)), .pointer(offsets.address),
            .pointer(starts.address), .pointer(keys.address),
        ])
        try device.synchronize()
        var host = [Int32](repeating: 0, count: rowStarts[rows])
        try host.withUnsafeMutableBytes { try keys.download(into: $0.baseAddress!, count: $0.count) }
        return Result(rowStarts: rowStarts, keys: host, deviceKeys: keys)
    }
}
