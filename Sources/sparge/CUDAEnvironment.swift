import Foundation
import SpargeCUDA

extension CUDAOptions {
    /// The CUDA backend's settings from this process's environment: the library reads none itself, the
    /// tool passes them (`sparge --help` lists the variables).
    static var fromEnvironment: CUDAOptions {
        let env = ProcessInfo.processInfo.environment
        var o = CUDAOptions()
        o.libcudaPath = env["SPARGE_LIBCUDA"]
        o.nvrtcPath = env["SPARGE_NVRTC"]
        o.toolkitFolders = ["CUDA_HOME", "CUDA_PATH"].compactMap { env[$0] }
        o.deviceOrdinal = env["SPARGE_CUDA_DEVICE"].flatMap(Int.init)
        o.localRank = ["OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "SLURM_LOCALID", "LOCAL_RANK"]
            .lazy.compactMap { env[$0].flatMap(Int.init) }.first
        o.predictsMaskOnDevice = env["SPARGE_CUDA_MASK"] != "cpu"
        o.trace = env["SPARGE_CUDA_TRACE"] != nil
        o.traceWaits = env["SPARGE_CUDA_TRACE"] != "host"
        if let m = env["SPARGE_CUDA_MTILES"].flatMap(Int.init) { o.mTiles = m }
        o.hopperKernel = env["SPARGE_CUDA_KERNEL"] != "mma"
        o.radixTopK = env["SPARGE_CUDA_TOPK"] != "heap"
        o.workListOnDevice = env["SPARGE_CUDA_WORK_LIST"] != "host"
        o.tailSplit = env["SPARGE_CUDA_TAIL_SPLIT"] != "0"
        o.consumerTurns = env["SPARGE_CUDA_TURNS"] != "0"
        if let mib = env["SPARGE_CUDA_STAGING_MIB"].flatMap(Int.init) { o.stagingBytes = max(1, mib) << 20 }
        return o
    }
}
