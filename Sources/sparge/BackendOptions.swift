import Foundation
import SpargeCUDA
import SpargeRing

/// `--backend cpu|cuda|auto` and `--precision`, shared by `run`, `bench` and `verify`.
enum BackendOptions {
    static let specs: [OptionSpec] = [
        .value("backend", "cpu|cuda|auto", "who computes the attention tiles (default cpu; auto = cuda where every rank has a GPU)"),
        .value("precision", "fp32|bf16|fp16|int8", "what Q, K, V are rounded or quantized to before the products (default fp32 on the cpu backend, bf16 on cuda, which computes bf16 or fp16)"),
        .value("kv-precision", "f32|bf16|f16", "what K/V blocks are stored and sent around the ring in (default on the cpu backend the type --precision rounds to, f32 for fp32 and int8; bf16 on cuda)"),
    ]

    /// `--kv-precision`, else the engine's default: on the CPU the type of its precision (f32 for fp32:
    /// exact), bf16 on a GPU (what its kernels read anyway, and half the ring's bytes).
    static func kvFormat(_ o: ParsedOptions, engine: any AttentionEngine) throws -> StorageFormat {
        if let name = try o.choice("kv-precision", StorageFormat.allCases.map(\.rawValue)) { return StorageFormat(rawValue: name)! }
        if let cpu = engine as? CPUAttentionEngine { return cpu.precision.inputFormat ?? .f32 }
        return .bf16
    }

    /// `--precision` (AttentionPrecision's names), if given.
    static func precision(_ o: ParsedOptions) throws -> AttentionPrecision? {
        try o.choice("precision", AttentionPrecision.allCases.map(\.rawValue)).flatMap(AttentionPrecision.init)
    }

    /// Collective: the engine every rank uses. `cuda` fails on every rank when any rank has no usable GPU
    /// (the message names the ranks); `auto` then falls back to the CPU on every rank, saying so on rank 0.
    static func engine(_ o: ParsedOptions, ctx: CommandContext) throws -> any AttentionEngine {
        let choice = try o.choice("backend", ["cpu", "cuda", "auto"]) ?? "cpu"
        let asked = try precision(o)
        if choice == "cpu" { return try cpuEngine(precision: asked ?? .fp32, ctx: ctx) }
        guard let precision = CUDAPrecision(asked ?? .bf16) else {
            throw UsageError("--precision \(asked!.rawValue): the cuda backend computes in "
                + CUDAPrecision.allCases.map(\.rawValue).joined(separator: " or "))
        }
        var engine: CUDAAttentionEngine?
        var problem: Error?
        do { engine = try CUDAAttentionEngine(precision: precision, options: .fromEnvironment) } catch { problem = error }
        if choice == "cuda" {
            ctx.agree(problem.map { BackendError("--backend cuda: \($0)") })
            return engine!
        }
        if ctx.comm.anyRank(problem != nil) {
            if ctx.isRoot {
                let reason = problem.map { "\($0)".split(separator: "\n").first.map(String.init) ?? "" } ?? "another rank has no GPU"
                FileHandle.standardError.write(Data("sparge: --backend auto: using the CPU (\(reason))\n".utf8))
            }
            return try cpuEngine(precision: asked ?? .fp32, ctx: ctx)
        }
        return engine!
    }

    /// Collective: the CPU backend in `precision` with the kernels `SPARGE_CPU_ISA` names, else the best this
    /// CPU has. A name that some rank's CPU cannot run fails on every rank (the message names the ranks).
    /// SPARGE_BF16_VISIT_KEYS (measurement only) sets the keys one visit of bf16 tiles groups;
    /// SPARGE_CPU_WHOLE_CALL=0 (measurement only) keeps the tiles' state in the output even where one call
    /// holds every block (`BlockSparseAttention.finishesWholeCalls`); SPARGE_PROFILE_VISITS=1 and
    /// SPARGE_PROFILE_PHASES=1 turn on `VisitProfile` and `PhaseTrace`.
    static func cpuEngine(precision: AttentionPrecision, ctx: CommandContext) throws -> CPUAttentionEngine {
        var isa = CPUISA.detected
        var problem: Error?
        let environment = ProcessInfo.processInfo.environment
        if let name = environment["SPARGE_CPU_ISA"] {
            do { isa = try CPUISA.named(name) } catch { problem = BackendError("SPARGE_CPU_ISA: \(error)") }
        }
        if let keys = environment["SPARGE_BF16_VISIT_KEYS"] {
            if let count = Int(keys), count > 0 { TileProducts.bf16VisitKeys = count }
            else { problem = problem ?? BackendError("SPARGE_BF16_VISIT_KEYS: \(keys) is not a positive number of keys") }
        }
        if environment["SPARGE_CPU_WHOLE_CALL"] == "0" { BlockSparseAttention.finishesWholeCalls = false }
        if environment["SPARGE_PROFILE_VISITS"] == "1" { VisitProfile.enabled = true }
        if environment["SPARGE_PROFILE_PHASES"] == "1" { PhaseTrace.enabled = true }
        ctx.agree(problem)
        return CPUAttentionEngine(isa: isa, precision: precision)
    }

    /// Collective (every rank has the same kind of engine): on rank 0, `CUDABlockSparseAttention.slowShapeHint`
    /// on stderr when the GPU computes the tiles, and a hint to start MPS when ranks share a GPU without it.
    static func hint(_ engine: any AttentionEngine, config: SpargeConfig, ctx: CommandContext) {
        guard let cuda = engine as? CUDAAttentionEngine else { return }
        let sharing = ranksSharingAGPU(cuda, ctx: ctx)
        guard ctx.isRoot else { return }
        printHint(config: config, device: cuda.device, options: cuda.options)
        if let sharing {
            FileHandle.standardError.write(Data(("sparge: hint: ranks \(sharing.ranks.map(String.init).joined(separator: ", ")) "
                + "share \(sharing.gpu) and no MPS server runs: their kernels take turns in time slices and each "
                + "waits for the other's (at 32K tokens 5× one rank's time). Start `nvidia-cuda-mps-control -d` "
                + "on the node before mpirun so that they run side by side.\n").utf8))
        }
    }

    /// Collective: the ranks of the first GPU that several ranks use, where some of them run without an MPS
    /// server (no pipe directory of one: `CUDA_MPS_PIPE_DIRECTORY`, else /tmp/nvidia-mps); else nil.
    private static func ranksSharingAGPU(_ cuda: CUDAAttentionEngine, ctx: CommandContext) -> (gpu: String, ranks: [Int])? {
        let pipes = ProcessInfo.processInfo.environment["CUDA_MPS_PIPE_DIRECTORY"] ?? "/tmp/nvidia-mps"
        let mps = FileManager.default.fileExists(atPath: pipes + "/control")
        let keys = gpuOfEveryRank(cuda, ctx: ctx)
        guard ctx.comm.anyRank(!mps) else { return nil }
        for gpu in keys {
            let ranks = keys.indices.filter { keys[$0] == gpu }
            if ranks.count > 1 { return (gpu, ranks) }
        }
        return nil
    }

    /// Collective: per rank, the GPU it uses (`GPU <ordinal> of <host>`), equal where ranks share one.
    private static func gpuOfEveryRank(_ cuda: CUDAAttentionEngine, ctx: CommandContext) -> [String] {
        var host = [CChar](repeating: 0, count: 256)
        gethostname(&host, host.count)
        let key = "GPU \(cuda.device.ordinal) of \(String(cString: host))"
        return ctx.comm.allgather(bytes: Array(key.utf8)).map { String(decoding: $0, as: UTF8.self) }
    }

    /// `CUDABlockSparseAttention.slowShapeHint` on stderr, if `config` has one on `device`.
    static func printHint(config: SpargeConfig, device: CUDADevice, options: CUDAOptions) {
        guard let hint = CUDABlockSparseAttention.slowShapeHint(config: config, device: device, options: options) else { return }
        FileHandle.standardError.write(Data("sparge: hint: \(hint)\n".utf8))
    }

    /// Collective: the measured peak (GFLOP/s) of what computes the tiles on all ranks together — for the CPU
    /// the peak of every rank's threads on what its tiles multiply with at head dimension `headDim` (the
    /// FMA, int8's int16 multiply-adds, or the bf16 products' instruction), the tensor cores' `mma.sync` rate
    /// of every GPU in use for CUDA (each GPU counted once however many ranks share it; the lowest of its
    /// ranks measures it).
    static func peakGFLOPs(_ engine: any AttentionEngine, threads: Int, headDim: Int, ctx: CommandContext) throws -> Double {
        guard let cuda = engine as? CUDAAttentionEngine else {
            let cpu = engine as? CPUAttentionEngine
            let isa = cpu?.isa ?? .detected
            let products = TileProducts.chosen(precision: cpu?.precision ?? .fp32, isa: isa, headDim: headDim)
            var peak = [PeakFlops.measure(threads: threads, seconds: 0.3, isa: isa, products: products)]
            ctx.comm.allreduceSum(&peak)
            return peak[0]
        }
        let keys = gpuOfEveryRank(cuda, ctx: ctx)
        var measured: Double?
        do {
            if keys.firstIndex(of: keys[ctx.comm.rank]) == ctx.comm.rank {
                measured = try TensorCorePeak.measure(device: cuda.device, precision: cuda.precision) * 1e3
            }
        } catch {
            measured = nil
        }
        var peak = [measured ?? 0]
        ctx.comm.allreduceSum(&peak)
        return peak[0]
    }

    /// A one-line description for table headers: `cpu avx2`, or `cuda bf16 on <device>`.
    static func describe(_ engine: any AttentionEngine) -> String {
        if let cuda = engine as? CUDAAttentionEngine {
            return "cuda \(cuda.precision.rawValue), \(cuda.device.name)"
        }
        if let cpu = engine as? CPUAttentionEngine { return "cpu \(cpu.isa.rawValue) \(cpu.precision.rawValue)" }
        return engine.name
    }

    /// The precision the tiles compute in (`precision` in JSON).
    static func precision(_ engine: any AttentionEngine) -> String {
        (engine as? CPUAttentionEngine)?.precision.rawValue ?? (engine as? CUDAAttentionEngine)?.precision.rawValue ?? "fp32"
    }

    /// The instruction set of the tiles' kernels (`isa` in JSON): the CPU's kernel set, or `cuda`.
    static func isa(_ engine: any AttentionEngine) -> String { (engine as? CPUAttentionEngine)?.isa.rawValue ?? engine.name }
}

/// A backend that cannot be used on some rank.
struct BackendError: Error, CustomStringConvertible {
    let description: String
    init(_ message: String) { description = message }
}
