import SpargeKernels

extension CUDAPrecision {
    /// How a key/value block of a resident pass in this precision travels the ring, K and V stored as
    /// `kvFormat`: in int8 K as the kernel reads it (int8 rows and the block's scale, quantized once by the
    /// block's owner: `QuantizedKeys`) and V in `kvFormat`; otherwise K and V rows in `kvFormat`.
    func ringPayload(kvFormat: StorageFormat, headDim: Int) -> PayloadFormat {
        self == .int8 ? QuantizedKeys.payloadFormat(kvFormat: kvFormat, headDim: headDim) : .storage(kvFormat, headDim: headDim)
    }
}
