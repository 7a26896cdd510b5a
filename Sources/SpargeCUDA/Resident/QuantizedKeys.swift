import SpargeKernels

/// int8's K for the attention kernel of a ring store: the kernel's K `[Hkv][kvRows][D]` as int8 (the
/// head's mean subtracted) and one fp32 scale a key block, `scales` `[Hkv][keyBlocks]`. A block gets there
/// by `quantize`, from its storage format, as it is placed.
struct QuantizedKeys {
    let device: CUDADevice
    /// The kernel's K, int8.
    let keys: DeviceBuffer
    /// The blocks' scales `[Hkv][keyBlocks]`.
    let scales: DeviceBuffer
    /// The K mean `[Hkv][D]` (fp32) the blocks are smoothed by.
    let mean: DeviceBuffer
    let dim: Int, blockK: Int, kvRows: Int

    init(device: CUDADevice, keys: DeviceBuffer, mean: DeviceBuffer, kvHeads: Int, dim: Int, blockK: Int,
         kvRows: Int) throws {
        (self.device, self.keys, self.mean, self.dim, self.blockK, self.kvRows) = (device, keys, mean, dim, blockK, kvRows)
        scales = try DeviceBuffer(device: device, bytes: kvHeads * (kvRows / blockK) * 4, label: "K block scales")
    }

    /// The K blocks of a placement table (`count` `BlockPlacement`s, K in `format`) quantized into their rows
    /// of `keys` and their scales into `scales`: rows' maxima, blocks' scales, then the elements.
    func quantize(table: UInt64, count: Int, format: StorageFormat) throws {
        let (d, format) = (Int32(dim), ResidentKernelSource.code(of: format))
        let rowMax = try DeviceBuffer(device: device, bytes: count * blockK * 4, label: "K row maxima")
        let blockScale = try DeviceBuffer(device: device, bytes: count * 4, label: "K block scales (placed)")
        try device.launch(device.residentKernel("sparge_key_row_max"), grid: (count * blockK + 127) / 128, block: 128, [
            .pointer(table), .int(Int32(count)), .int(format), .int(d), .int(Int32(blockK)), .pointer(mean.address),
            .pointer(rowMax.address),
        ])
        try device.launch(device.residentKernel("sparge_key_block_scale"), grid: (count + 127) / 128, block: 128, [
            .pointer(table), .int(Int32(count)), .int(Int32(blockK)), .int(Int32(kvRows)), .pointer(rowMax.address),
            .pointer(blockScale.address), .pointer(scales.address),
        ])
        let quads = count * blockK * dim / 4
        try device.launch(device.residentKernel("sparge_key_quantize"), grid: (quads + 255) / 256, block: 256, [
            .pointer(table), .int(Int32(count)), .int(format), .int(d), .int(Int32(blockK)), .int(Int32(kvRows)),
            .pointer(mean.address), .pointer(blockScale.address), .pointer(keys.address),
        ])
    }
}
