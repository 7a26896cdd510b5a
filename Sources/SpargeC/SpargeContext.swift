import CSparge
import SpargeCUDA
import SpargeKernels
import SpargeRing

/// What a `sparge_context` holds: the ranks, the threads, the engine (and one per other precision asked
/// for, on the same CPU or device), the CPU pass's staged copies of Q and K, and the last call's mask rows.
final class SpargeContext {
    let communicator: Communicator
    let threads: Int
    /// The engine the context was made with, in its default precision.
    let engine: any AttentionEngine
    /// Engines made for the precisions calls asked for, once each.
    private var engines: [AttentionPrecision: any AttentionEngine] = [:]
    /// The CPU pass's fp32 copies of Q and K, kept from one call to the next (freed with the context).
    let staging = HostStaging()
    /// The mask rows of the last forward call that asked to keep them, one per batch item.
    var lastMasks: [BlockMask] = []

    /// A context over the caller's MPI communicator (`handle` ≠ 0, duplicated) or over this process alone.
    /// With a communicator it is collective: an engine that fails on one rank fails the call on every rank.
    init(mpiHandle handle: UInt64, threads: Int, engine kind: Int32, device: Int32, trace: Bool) throws {
        self.threads = threads
        communicator = handle == 0 ? SingleProcessCommunicator() : try MPICommunicator(duplicating: UInt(handle))
        var made: (any AttentionEngine)?
        var problem = ""
        do { made = try SpargeContext.engine(kind, device: device, threads: threads, trace: trace) } catch {
            let failure = CError(error)
            problem = "\(failure.status.rawValue) \(failure.message)"
        }
        let all = communicator.allgather(bytes: Array(problem.utf8)).map { String(decoding: $0, as: UTF8.self) }
        if let failed = all.firstIndex(where: { !$0.isEmpty }) {
            (communicator as? MPICommunicator)?.finalize()
            let (status, message) = (all[failed].prefix { $0 != " " }, all[failed].drop { $0 != " " }.dropFirst())
            throw CError(sparge_status(UInt32(status)!), (communicator.size > 1 ? "rank \(failed): " : "") + message)
        }
        engine = made!
    }

    /// The engine `kind` asks for: the CPU, or the CUDA device `device` (tracing its host work when `trace`).
    private static func engine(_ kind: Int32, device: Int32, threads: Int, trace: Bool) throws -> any AttentionEngine {
        guard threads >= 1, device >= 0 else {
            throw CError(SPARGE_ERROR_INVALID_ARGUMENT, "threads \(threads) must be at least 1, device \(device) at least 0")
        }
        switch kind {
        case Int32(SPARGE_ENGINE_CPU.rawValue): return CPUAttentionEngine()
        case Int32(SPARGE_ENGINE_CUDA.rawValue):
            var options = CUDAOptions()
            options.deviceOrdinal = Int(device)
            options.trace = trace
            return try CUDAAttentionEngine(options: options)
        default: throw CError(SPARGE_ERROR_INVALID_ARGUMENT, "engine \(kind) is neither cpu (0) nor cuda (1)")
        }
    }

    /// The engine computing in `precision` (nil: the context's own) on the context's CPU or device.
    func engine(for precision: AttentionPrecision?) throws -> any AttentionEngine {
        guard let precision else { return engine }
        if let made = engines[precision] { return made }
        let made: any AttentionEngine
        switch engine {
        case let cpu as CPUAttentionEngine:
            made = cpu.precision == precision ? cpu : CPUAttentionEngine(isa: cpu.isa, precision: precision)
        case let cuda as CUDAAttentionEngine:
            guard let asked = CUDAPrecision(precision) else {
                throw CError(SPARGE_ERROR_UNSUPPORTED, "precision \(precision.rawValue): the CUDA engine computes in "
                    + CUDAPrecision.allCases.map(\.rawValue).joined(separator: ", ") + "; fp32 runs on the CPU engine")
            }
            made = asked == cuda.precision ? cuda : try CUDAAttentionEngine(device: cuda.device, precision: asked, options: cuda.options)
        default:
            throw CError(SPARGE_ERROR_UNSUPPORTED, "precision \(precision.rawValue): the \(engine.name) engine has one precision")
        }
        engines[precision] = made
        return made
    }

    /// Frees the duplicate communicator (MPI itself stays as the caller has it).
    func close() {
        (communicator as? MPICommunicator)?.finalize()
    }
}
