import SpargeKernels

/// CUDA C++ of the kernels that keep a forward pass on the device (DESIGN.md §6.1), compiled by NVRTC:
/// tensors entering (any element type and strides, to a packed type), the K sums in `KeyMean`'s order, the
/// mask's dense bytes compacted into the sparse mask's key lists, and the ring's blocks copied between
/// payloads and placed at their rows for the attention kernel.
///
/// Element type codes are `ResidentKernelSource.code(of:)`'s: 0 f32, 1 bf16, 2 f16. Conversions round to
/// nearest even, as `StorageFormat.convert` on the host. No CUDA header is included.
///
/// Like the mask kernels, the source compiles as plain C++ with a small prelude standing in for the CUDA
/// built-ins; the test suite runs the K sums and the compaction that way on the host.
extension CUDADevice {
    /// Kernel `name` of `ResidentKernelSource` (compiled on first use, cached per process).
    func residentKernel(_ name: String) throws -> CUDAFunction {
        try function(source: ResidentKernelSource.source, program: ResidentKernelSource.program, name: name, defines: [])
    }
}

enum ResidentKernelSource {
    static let program = "sparge_resident.cu"

    /// The kernels' code for an element type.
    static func code(of format: StorageFormat) -> Int32 {
        switch format {
        case .f32: 0
        case .bf16: 1
        case .f16: 2
        }
    }

    static let source = String(decoding: PackageResources.sparge_resident_cu, as: UTF8.self)

    /// Rows one thread block of `sparge_query_row_scales` takes (its `QUANT_ROWS`), and rows a segment of
    /// the mask compaction's scan (`SEGMENT_ROWS`): the launches' grids depend on them
    /// (`ResidentKernelEmulationTests` checks them against the source's defines).
    static let quantizationRows = 32, segmentRows = 64
}
