import Foundation
import SpargeRing

/// `sparge <command> [options]`: parses, calls SpargeRing, prints.
let commands: [(name: String, summary: String, run: ([String]) -> Int32)] = [
    ("run", "attention over Q/K/V files (.npy or .safetensors), output to a file", RunCommand.main),
    ("bench", "time a generated workload; table of density, time, GFLOP/s, error, bytes moved", BenchCommand.main),
    ("verify", "check the distributed result against one process and against dense attention", VerifyCommand.main),
    ("bench-kernel", "time the CUDA attention kernel alone on one GPU (device events)", KernelBenchCommand.main),
]

let topHelp = """
    usage: sparge <command> [options]        (under mpirun: mpirun -np P sparge <command> …)

    SpargeRing: training-free sparse attention (SpargeAttn) over sequences sharded across MPI ranks.

    commands:
    \(commands.map { "  \($0.name.padding(toLength: 13, withPad: " ", startingAt: 0))\($0.summary)" }.joined(separator: "\n"))

    `sparge <command> --help` lists a command's options.

    environment (the CPU backend):
      SPARGE_CPU_ISA=portable|avx2|avx512|avx512bf16|amx  the attention kernels' instruction set (default: the best this CPU has)
      SPARGE_BF16_VISIT_KEYS=N      keys one visit of bf16 tiles takes, whole blocks grouped (default 256;
                                    measurement only)
      SPARGE_CPU_WHOLE_CALL=0       tiles keep their state in the output even where one call holds every
                                    block (one rank); the same bits, for comparison
      SPARGE_PROFILE_VISITS=1       bench: where the bf16 tiles' visits spend their time (scores, softmax, P·V)
      SPARGE_PROFILE_PHASES=1       every step of a pass on stderr with its milliseconds (measurement only)

    environment (the CUDA backend):
      SPARGE_LIBCUDA, SPARGE_NVRTC  paths of libcuda.so.1 and libnvrtc when not on the loader's path
      SPARGE_CUDA_DEVICE            the GPU ordinal (default: the node-local rank modulo the GPUs)
      SPARGE_CUDA_MASK=cpu          predict the mask on the host (the same bits; for comparison)
      SPARGE_CUDA_TRACE=1           print where a GPU run spends its host time (each phase waits for the
                                    device); =host: nothing waits, each line says when its phase ended
      SPARGE_CUDA_KERNEL=mma        the mma.sync attention kernel also on Hopper (default there: wgmma/TMA)
      SPARGE_CUDA_TOPK=heap         TopK over long mask rows by the heap kernel (default: the radix
                                    select; the same bits, for comparison)
      SPARGE_CUDA_WORK_LIST=host    one rank's attention work list built by the host's plan (default: on
                                    the device from the mask's lists; the same tiles, for comparison)
      SPARGE_CUDA_TAIL_SPLIT=0      one rank's Hopper kernel keeps whole lists in its last, partly filled
                                    wave of CTAs (default: split into parts and merged; for comparison)
      SPARGE_CUDA_TURNS=0           the Hopper kernel's two consumer warpgroups issue their matrix products
                                    whenever ready (default: in turns, one's softmax beside the other's
                                    products; the same bits, for comparison)
      SPARGE_MPI_DEVICE_BUFFERS=0   send GPU ring payloads through pinned host memory even where MPI
                                    is CUDA-aware (MPIX_Query_cuda_support)
      SPARGE_MPI_DEVICE_BUFFERS=1   hand MPI device memory even where it does not say it takes it (an
                                    MPI that is CUDA-aware without MPIX_Query_cuda_support); elsewhere
                                    it fails
    """

keepFreedMemoryForTheNextPass()
let arguments = Array(CommandLine.arguments.dropFirst())
let first = arguments.first ?? ""
if first == "selftest-communicator" {
    exit(runCommunicatorSelfTest(arguments: Array(arguments.dropFirst())))
}
if first == "selftest-cuda" {
    exit(runCUDASelfTest(arguments: Array(arguments.dropFirst())))
}
guard let command = commands.first(where: { $0.name == first }) else {
    // No command, help, or an unknown one. Under a launcher this still goes through `Command.start`, so
    // that every rank learns what the others were asked to do before any of them exits.
    // A usage error like any other goes to stderr, so that a script's output holds no help text.
    let invocation = first.isEmpty ? Invocation(command: "", usageError: "no command given\n\n\(topHelp)")
        : ["-h", "--help", "help"].contains(first) ? Invocation(command: "", help: true)
        : Invocation(command: first, usageError: "unknown command '\(first)'\n\n\(topHelp)")
    Command.start(invocation, help: topHelp).exit(0)
}
exit(command.run(Array(arguments.dropFirst())))
