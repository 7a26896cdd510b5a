// swift-tools-version:6.0
// SpargeRing: training-free sparse attention (SpargeAttn) over sequences sharded across MPI ranks.
//
// The targets are the layers, bottom to top:
//   CMPI, _CMPIShim   OpenMPI as Swift sees it (system library + getters for its macros)
//   SpargeKernels     tiles, SIMD micro-kernels, online softmax, mask prediction; no MPI, no I/O
//   CSpargeKernels    the tiles' micro-kernels in C, compiled once per x86 ISA and picked at run time
//   SpargeFormats     .npy / .safetensors / .png readers and writers; no MPI
//   SpargeCUDA        the GPU backend: libcuda and NVRTC opened at run time, kernels in .cu files
//   SpargeRing        the runtime: communicators, sharding, summaries exchange, ring, forward()
//   SpargeWorkloads   generated inputs (llm, video, random): pure functions of (seed, position)
//   SpargeC           the C interface (sparge.h, libSpargeC.so) that the Python package `spargering` loads
//   sparge            the command-line tool: parses, calls SpargeRing, reads and writes files, prints
//
// The hot code is C, compiled for every x86 ISA and picked at run time (CSpargeKernels), so a release build
// for `-Xswiftc -target-cpu -Xswiftc x86-64` (what `launch/setup.sh` does on x86-64) runs well on every
// x86-64 CPU; see README.md.
import PackageDescription

let package = Package(
    name: "SpargeRing",
    products: [
        .library(name: "SpargeRing", targets: ["SpargeRing"]),
        .library(name: "SpargeKernels", targets: ["SpargeKernels"]),
        .library(name: "SpargeCUDA", targets: ["SpargeCUDA"]),
        .library(name: "SpargeWorkloads", targets: ["SpargeWorkloads"]),
        .executable(name: "sparge", targets: ["sparge"]),
        // libSpargeC.so: the C interface (Sources/CSparge/include/sparge.h) that the Python package loads.
        .library(name: "SpargeC", type: .dynamic, targets: ["SpargeC"]),
    ],
    targets: [
        // MARK: - Public API
        .target(
            name: "SpargeKernels",
            dependencies: ["CSpargeKernels"],
            // sqrtf/fmaf/expf come from libm, which Swift does not link on its own without Foundation.
            linkerSettings: [.linkedLibrary("m")]),
        .target(name: "SpargeFormats"),
        .target(
            name: "SpargeRing",
            dependencies: ["SpargeKernels", "CMPIShim"]),
        .target(name: "SpargeWorkloads", dependencies: ["SpargeKernels"]),
        // No CUDA header or library at build time: libcuda and NVRTC are opened with dlopen when asked for.
        // The kernels are .cu files, compiled by NVRTC at run time for the GPU found; they are embedded in
        // the binary (no resource bundle to carry beside a static build).
        .target(
            name: "SpargeCUDA",
            dependencies: ["SpargeKernels"],
            resources: ["sparge_attention_common", "sparge_attention", "sparge_attention_sm90", "sparge_mask",
                        "sparge_topk", "sparge_resident", "sparge_peak"].map {
                .embedInCode("Kernels/\($0).cu")
            }),
        // The C interface: `@_cdecl` functions over SpargeRing, declared in CSparge's sparge.h.
        .target(name: "SpargeC", dependencies: ["SpargeRing", "SpargeCUDA", "CSparge"]),
        .executableTarget(name: "sparge", dependencies: ["SpargeRing", "SpargeWorkloads", "SpargeFormats", "SpargeCUDA"]),

        // MARK: - Implementation details
        .systemLibrary(
            name: "CMPI",
            pkgConfig: "ompi-c",
            providers: [.apt(["libopenmpi-dev"])]),
        .target(name: "CMPIShim", dependencies: ["CMPI"]),
        // sparge.h, the C interface's header, so that SpargeC reads its structs with C's layout; no code.
        .target(name: "CSparge"),
        // The same kernel source is compiled for AVX-512, AVX2 and any CPU by target attributes, so no
        // `-target-cpu` is needed. Debug builds (the tests) optimise it anyway: at -O0 the vector code runs
        // from the stack, many times slower than the Swift code around it (`@_optimize(speed)` there).
        .target(
            name: "CSpargeKernels",
            cSettings: [.unsafeFlags(["-O2"], .when(configuration: .debug))]),

        // MARK: - Tests
        // Fixture loading and random inputs shared by the test targets; no product.
        .target(
            name: "SpargeTestSupport",
            dependencies: ["SpargeKernels", "SpargeFormats"],
            path: "Tests/SpargeTestSupport"),
        .testTarget(name: "SpargeKernelsTests", dependencies: ["SpargeKernels", "SpargeTestSupport"]),
        .testTarget(name: "SpargeFormatsTests", dependencies: ["SpargeFormats", "SpargeTestSupport"]),
        .testTarget(name: "SpargeRingTests", dependencies: ["SpargeRing", "SpargeWorkloads", "SpargeTestSupport"]),
        .testTarget(name: "SpargeCTests", dependencies: ["SpargeC", "CSparge", "SpargeRing"]),
        .testTarget(name: "SpargeCUDATests", dependencies: ["SpargeCUDA", "SpargeTestSupport"]),
        .testTarget(name: "spargeTests", dependencies: ["SpargeRing", "SpargeWorkloads", "SpargeFormats", "SpargeTestSupport"]),
    ],
    // Language mode 5: the hot loops hand unsafe pointers to `concurrentPerform` workers, which strict
    // Sendable checking would reject without adding any safety the kernel structure does not already give.
    swiftLanguageModes: [.v5]
)
