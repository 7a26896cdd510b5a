import SpargeKernels

/// int8's K for the attention kernel of a ring store: the kernel's K `[Hkv][kvRows][D]` as int8 (the
/// head's mean subtracted) and one fp32 scale a key block, `scales` `[Hkv][keyBlocks]`.
///
/// A block is quantized once, by the rank that holds it (`quantize`, from its storage format, as this rank's
/// own blocks are placed), and travels the ring as it is here: `places.copies(…intoPayload: true)` packs its
/// int8 rows and scale into a payload, `places.copies(…intoPayload: false)` takes them from one into `keys`
/// and `scales` — the bytes the receiver would have computed from the block's storage format with the same
/// kernels, in half (bf16 K) or a quarter (f32 K) of K's bytes.
struct QuantizedKeys {
    /// Bytes of a block's scale in a payload: the fp32 scale and 12 bytes of padding (not read). A block's
    /// int8 rows are a multiple of 16 bytes (a row is D = 64 or 128 bytes), so the slot keeps every block's
    /// V, and the next block, on 16 bytes, where `sparge_place_blocks` reads V 8 (16-bit) or 16 (f32) bytes
    /// at a time; with the bare 4 bytes V would sit 4 bytes off and be read an element at a time.
    /// 12 bytes a block: 0.05% of a 64-row block with bf16 V.
    static let scaleSlotBytes = 16

    /// How a block travels in int8: K's int8 rows (`headDim` bytes each), the block's scale (`scaleSlotBytes`),
    /// then V's rows in `kvFormat`.
    static func payloadFormat(kvFormat: StorageFormat, headDim: Int) -> PayloadFormat {
        PayloadFormat(keyBytesPerRow: headDim, keyExtraBytes: scaleSlotBytes, valueBytesPerRow: headDim * kvFormat.byteSize)
    }

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

    /// Where blocks lie in `keys` and `scales`, and the copies that move them to and from a payload.
    var places: Places { Places(keys: keys.address, scales: scales.address, dim: dim, blockK: blockK, kvRows: kvRows) }

    /// The int8 K `[Hkv][kvRows][dim]` at `keys` and the scales `[Hkv][kvRows / blockK]` (fp32) at `scales`:
    /// addresses only, so that the tests run the copies on host memory.
    struct Places {
        let keys: UInt64, scales: UInt64
        let dim: Int, blockK: Int, kvRows: Int

        /// `sparge_copy_blocks`' (source, destination, bytes) triples that move block `j` of kv head `g`
        /// (`rows` rows) between its rows and scale here and the payload block at `block` (its int8 rows,
        /// then its scale: `payloadFormat`'s): into the payload, or out of it to here. (Rows past a partial
        /// block's end are not copied: in the kernel's K they stay zeros, as `quantize` writes them.)
        func copies(kvHead g: Int, block j: Int, rows: Int, payloadBlock block: UInt64, intoPayload: Bool) -> [UInt64] {
            let rowsHere = keys + UInt64((g * kvRows + j * blockK) * dim)
            let scaleHere = scales + UInt64((g * (kvRows / blockK) + j) * 4)
            let (rowsThere, scaleThere) = (block, block + UInt64(rows * dim))
            let bytes = UInt64(rows * dim)
            return intoPayload
                ? [rowsHere, rowsThere, bytes, scaleHere, scaleThere, 4]
                : [rowsThere, rowsHere, bytes, scaleThere, scaleHere, 4]
        }
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
