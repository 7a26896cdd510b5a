/// The three tensor maps (`CUtensorMap`, 128 bytes each) the Hopper kernel's copy engine reads Q, K and V
/// through: each tensor seen as a 2-D array of 16-bit elements (Q and K of one byte in int8), `[heads ·
/// rows][D]`, read in boxes of 128 bytes of columns (the widest the 128-byte swizzle takes) by 64 rows for Q
/// and `blockK` rows for K and V, swizzled as `wgmma` reads them. Rows past the tensor's end read as zero.
struct TensorMaps {
    /// Q's, K's and V's maps, in the order `SpargeHopperParams` declares them.
    let bytes: [UInt8]

    private static let uint8: Int32 = 0         // CU_TENSOR_MAP_DATA_TYPE_UINT8
    private static let uint16: Int32 = 1        // CU_TENSOR_MAP_DATA_TYPE_UINT16: bytes are bytes to the copy
    private static let swizzle128B: Int32 = 3   // CU_TENSOR_MAP_SWIZZLE_128B
    private static let promoteL2By256B: Int32 = 3  // CU_TENSOR_MAP_L2_PROMOTION_L2_256B

    init(device: CUDADevice, operands: AttentionKernel.Operands, headDim: Int, blockK: Int) throws {
        guard let encode = device.api.cuTensorMapEncodeTiled else {
            throw CUDAError.unsupported("the driver has no cuTensorMapEncodeTiled (the Hopper kernel needs CUDA 12 or later)")
        }
        var bytes: [UInt8] = []
        let qk = operands.quantization == nil ? 2 : 1  // bytes an element of Q and K
        let tensors = [(operands.q, operands.queryHeads * operands.rows, 64, qk),
                       (operands.k, operands.kvHeads * operands.kvRows, blockK, qk),
                       (operands.v, operands.kvHeads * operands.kvRows, blockK, 2)]
        for (name, (address, rows, boxRows, size)) in zip(["Q", "K", "V"], tensors) {
            var map = [UInt8](repeating: 0, count: 128)
            let sizes: [UInt64] = [UInt64(headDim), UInt64(max(1, rows))]
            let strides: [UInt64] = [UInt64(headDim * size)]
            let box: [UInt32] = [UInt32(128 / size), UInt32(boxRows)]
            let elementStrides: [UInt32] = [1, 1]
            let result = map.withUnsafeMutableBytes {
                encode($0.baseAddress!, size == 1 ? Self.uint8 : Self.uint16, 2, UnsafeMutableRawPointer(bitPattern: UInt(address)),
                       sizes, strides, box, elementStrides, 0, Self.swizzle128B, Self.promoteL2By256B, 0)
            }
            try device.api.check(result, "cuTensorMapEncodeTiled(\(name): \(rows) rows of \(headDim), boxes of \(box[0]) × \(boxRows))")
            bytes += map
        }
        self.bytes = bytes
    }
}
