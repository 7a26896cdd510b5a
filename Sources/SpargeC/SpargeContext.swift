import CSparge
import SpargeCUDA
import SpargeKernels
import SpargeRing

/// What a `sparge_context` holds: the ranks, the threads, the engine, and the last call's mask rows.
final class SpargeContext {
    let communicator: Communicator
    let threads: Int
    let engine: any AttentionEngine
    /// The mask rows of the last forward call that asked to keep them, one per batch item.
    var lastMasks: [BlockMask] = []

    /// A context over the caller's MPI communicator (`handle` ≠ 0, duplicated) or over this process alone.
    init(mpiHandle handle: UInt64, threads: Int, engine kind: Int32, device: Int32) throws {
        guard threads >= 1, device >= 0 else {
            throw CError(SPARGE_ERROR_INVALID_ARGUMENT, "threads \(threads) must be at least 1, device \(device) at least 0")
        }
        self.threads = threads
        communicator = handle == 0 ? SingleProcessCommunicator() : try MPICommunicator(duplicating: UInt(handle))
        switch kind {
        case Int32(SPARGE_ENGINE_CPU.rawValue): engine = CPUAttentionEngine()
        case Int32(SPARGE_ENGINE_CUDA.rawValue):
            var options = CUDAOptions()
            options.deviceOrdinal = Int(device)
            engine = try CUDAAttentionEngine(options: options)
        default: throw CError(SPARGE_ERROR_INVALID_ARGUMENT, "engine \(kind) is neither cpu (0) nor cuda (1)")
        }
    }

    /// Frees the duplicate communicator (MPI itself stays as the caller has it).
    func close() {
        (communicator as? MPICommunicator)?.finalize()
    }
}
