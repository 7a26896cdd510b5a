import Foundation
import SpargeTestSupport
import XCTest

/// A CUDA kernel source compiled as plain C++ for the host (a prelude stands in for the CUDA built-ins, a
/// harness runs each kernel over its whole grid): the emulation the kernel tests run on any machine.
struct HostKernelProgram {
    let executable: URL

    private static var built: [String: URL] = [:]

    /// `source` compiled once per test process with `defines`; skips the test where no compiler is found.
    static func build(name: String, source: String, defines: [String: Int]) throws -> HostKernelProgram {
        if let url = built[name] { return HostKernelProgram(executable: url) }
        guard let compiler = findOnPath("clang++") ?? findOnPath("g++") else {
            throw XCTSkip("no clang++ or g++ on PATH: the host emulation of the CUDA kernels is skipped")
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sparge-kernel-emulation-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let file = dir.appendingPathComponent("\(name).cpp")
        try source.write(to: file, atomically: true, encoding: .utf8)
        let executable = dir.appendingPathComponent(name)
        let process = Process()
        process.executableURL = compiler
        // No contraction and no fast math: the host must round every operation as the kernel spells it.
        // The harness uses no C++ library, so clang++ need not find one to link (a machine may lack its
        // development files).
        let noLibrary = compiler.lastPathComponent == "clang++" ? ["-nostdlib++"] : []
        process.arguments = ["-O1", "-ffp-contract=off", "-fno-fast-math", "-fno-exceptions", "-fno-rtti"]
            + defines.map { "-D\($0.key)=\($0.value)" } + [file.path, "-o", executable.path, "-lm", "-lpthread"] + noLibrary
        let errors = Pipe()
        process.standardError = errors
        try process.run()
        let log = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            XCTFail("the kernels of \(name) do not compile as C++:\n\(log)")
            throw XCTSkip("compile failed")
        }
        built[name] = executable
        return HostKernelProgram(executable: executable)
    }

    /// Host stand-ins for the CUDA built-ins the kernels use, and the harnesses' input and launch helpers.
    static let prelude = #"""
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__
#define __align__(n)
// Shared memory: the emulation runs one thread at a time, and the kernels give each thread its own part.
extern "C" { unsigned char sparge_select_smem[1 << 24]; }
struct SpargeDim3 { unsigned x, y, z; };
static __thread SpargeDim3 threadIdx, blockIdx;
static SpargeDim3 blockDim, gridDim;
static inline int min(int a, int b) { return a < b ? a : b; }
// A kernel with barriers runs in the emulation with one thread a block, whose strided loops do every part —
// or, launched by LAUNCH_THREADS, with a thread per CUDA thread of the block meeting at a real barrier.
static pthread_barrier_t sparge_barrier;
static int sparge_threads_running;
static inline void __syncthreads() { if (sparge_threads_running) pthread_barrier_wait(&sparge_barrier); }
static inline unsigned atomicAdd(unsigned* p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
static inline int atomicAdd(int* p, int v) { return __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __dsub_rn(double a, double b) { return a - b; }
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline double __ddiv_rn(double a, double b) { return a / b; }
static inline double __dsqrt_rn(double a) { return sqrt(a); }
static inline double __drcp_rn(double a) { return 1.0 / a; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __double2float_rn(double a) { return (float)a; }
static inline unsigned __float_as_uint(float f) { unsigned u; memcpy(&u, &f, 4); return u; }
static inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
static inline float __int_as_float(int u) { float f; memcpy(&f, &u, 4); return f; }
static inline double __longlong_as_double(long long u) { double f; memcpy(&f, &u, 8); return f; }
static inline int __float2int_rn(float f) { return (int)lrintf(f); }  // the default rounding: to nearest even
// What every harness uses: its input file, and a grid run as a loop over its blocks and threads.
static FILE* in_file;
static void take(void* p, size_t bytes) { if (fread(p, 1, bytes, in_file) != bytes) { fprintf(stderr, "short input\n"); exit(2); } }
static long long take_int() { long long v; take(&v, 8); return v; }
#define LAUNCH(grid, block, call) do { gridDim.x = (grid); blockDim.x = (block); \
    for (unsigned b = 0; b < gridDim.x; ++b) for (unsigned t = 0; t < blockDim.x; ++t) { blockIdx.x = b; threadIdx.x = t; call; } } while (0)
// The grid's blocks one after another, each by `block` threads at once (shared memory: the kernel's dynamic
// shared memory only, which all of them see); a block ends at a barrier. A thread that skipped a barrier that
// others wait at hangs the launch, as on a GPU; the harness's alarm then ends it.
template <typename F> struct SpargeThread { F* call; unsigned index; };
template <typename F> static void* sparge_thread_main(void* argument) {
    SpargeThread<F>* self = (SpargeThread<F>*)argument;
    threadIdx.x = self->index;
    for (unsigned b = 0; b < gridDim.x; ++b) { blockIdx.x = b; (*self->call)(); pthread_barrier_wait(&sparge_barrier); }
    return 0;
}
template <typename F> static void sparge_launch_threads(unsigned grid, unsigned block, F call) {
    enum { most = 1024 };
    if (block > most) { fprintf(stderr, "LAUNCH_THREADS: %u threads\n", block); exit(2); }
    static pthread_t threads[most];
    static SpargeThread<F> arguments[most];
    gridDim.x = grid; blockDim.x = block;
    pthread_barrier_init(&sparge_barrier, 0, block);
    sparge_threads_running = 1;
    for (unsigned t = 0; t < block; ++t) {
        arguments[t].call = &call; arguments[t].index = t;
        if (pthread_create(&threads[t], 0, sparge_thread_main<F>, &arguments[t]) != 0) { fprintf(stderr, "pthread_create\n"); exit(2); }
    }
    for (unsigned t = 0; t < block; ++t) pthread_join(threads[t], 0);
    sparge_threads_running = 0;
    pthread_barrier_destroy(&sparge_barrier);
}
#define LAUNCH_THREADS(grid, block, call) sparge_launch_threads((grid), (block), [&]() { call; })

"""#

    /// Runs `command` of the harness: `input` goes to a file, the outputs come back from another.
    func run(_ command: String, _ input: Data) throws -> Data {
        let dir = executable.deletingLastPathComponent()
        let name = executable.lastPathComponent
        let inURL = dir.appendingPathComponent("\(name).\(command).in")
        let outURL = dir.appendingPathComponent("\(name).\(command).out")
        try input.write(to: inURL)
        let process = Process()
        process.executableURL = executable
        process.arguments = [command, inURL.path, outURL.path]
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw NSError(domain: "HostKernelProgram", code: Int(process.terminationStatus),
                          userInfo: [NSLocalizedDescriptionKey: "the emulated \(command) exited with \(process.terminationStatus)"])
        }
        return try Data(contentsOf: outURL)
    }
}

extension Data {
    mutating func append(ints: [Int]) { for v in ints { Swift.withUnsafeBytes(of: Int64(v).littleEndian) { append(contentsOf: $0) } } }
    mutating func append(doubles: [Double]) { doubles.withUnsafeBytes { append(contentsOf: $0) } }
    mutating func append(floats: [Float]) { floats.withUnsafeBytes { append(contentsOf: $0) } }

    /// The bytes as values of `T`, from byte `offset` on (`count` of them).
    func values<T>(_: T.Type, at offset: Int = 0, count: Int) -> [T] {
        subdata(in: (startIndex + offset)..<(startIndex + offset + count * MemoryLayout<T>.stride))
            .withUnsafeBytes { Array($0.bindMemory(to: T.self)) }
    }
}
