import Dispatch
import Foundation
import SpargeCUDA
import SpargeRing
import SpargeWorkloads

/// The hidden subcommand `sparge selftest-cuda`: the GPU mask prediction against the CPU's (bit for bit, see
/// `CUDAMaskSelfTestCase`), then the GPU attention kernels against the CPU tiles and a Double reference
/// on a labelled sweep of cases, on whatever GPU this process finds (run by launch/gpu-check.sh on the
/// device machine, where there is no Swift toolchain to run the XCTest suite).
///
/// Every case rounds its inputs to the case's 16-bit type first, so that the CPU, the Double reference and
/// the GPU all see the same values; what is left is the kernel's own error. Per case it checks:
/// - rel L1 of the GPU output against the masked Double reference ≤ 2e-3 (where the reference is computed);
/// - rel L1 against the CPU tiles ≤ 2e-3, and the LSE within 2e-3 (absolute, natural log), with `-inf`
///   (rows that saw no key) exactly where the CPU has it and a zero output there;
/// - the key blocks visited equal to the CPU's; with the λ rule on, the P·V blocks skipped within 1%;
/// - a case fed in several calls (as a ring feeds it) the same as in one.
/// Before the sweep: the mask kernels (`CUDAMaskSelfTestCase`), whole resident passes against the CPU's
/// (`CUDAResidentSelfTestCase`), and on Hopper whole passes with the kernel's consumer turns against without,
/// bit for bit (`CUDATurnsSelfTestCase`).
/// Prints one line per case and `cuda self-test passed` or the failures; returns 0 or 1.
func runCUDASelfTest(arguments: [String]) -> Int32 {
    let quick = arguments.contains("--quick")
    let device: CUDADevice
    do {
        device = try CUDADevice.open(options: .fromEnvironment)
    } catch {
        FileHandle.standardError.write(Data("sparge: selftest-cuda: \(error)\n".utf8))
        return 1
    }
    print(device.summary)
    var failures = runCUDAMaskSelfTest(device: device, quick: quick)
    failures += runCUDAResidentSelfTest(device: device)
    failures += runCUDATurnsSelfTest(device: device)
    let cases = CUDASelfTestCase.sweep(quick: quick)
    // Every kernel: mma.sync at 16 and 32 rows per warp, and on Hopper the wgmma/TMA kernel (cases of other
    // tile shapes fall back to mma.sync there).
    var kernels: [(label: String, hopper: Bool, mTiles: Int)] = [("mma.sync, 16 rows/warp", false, 1), ("mma.sync, 32 rows/warp", false, 2)]
    if device.computeCapability == (9, 0) { kernels.append(("wgmma/TMA", true, 1)) }
    for kernel in kernels {
        var options = CUDAOptions.fromEnvironment
        options.mTiles = kernel.mTiles
        options.hopperKernel = kernel.hopper
        print("kernel: \(kernel.label)")
        print("case                                 N  Hq/Hkv   D  density steps  gpu-ref   cpu-ref   gpu-cpu   lse-diff  visited(g/c)  skipped(g/c)  kernel ms")
        failures += runSelfTestCases(cases, label: { "\($0.label) [\(kernel.label)]" }) {
            try $0.run(device: device, options: options)
        }
    }
    for line in device.compiledKernels { print("kernel \(line)") }
    if failures.isEmpty {
        print("cuda self-test passed (\(cases.count) cases)")
        return 0
    }
    for f in failures { print("FAILED \(f)") }
    print("cuda self-test FAILED (\(failures.count) failures in \(cases.count) cases)")
    return 1
}

/// Whether `device` runs the Hopper (wgmma/TMA) kernel under `options`: an sm_90 GPU, the kernel not turned off.
func hopperKernelRuns(on device: CUDADevice, options: CUDAOptions) -> Bool {
    device.computeCapability == (9, 0) && options.hopperKernel
}

/// Runs `cases` in order, printing each outcome's line (or its error); returns the failures, each prefixed with
/// the case's label.
func runSelfTestCases<Case>(_ cases: [Case], label: (Case) -> String,
                            run: (Case) throws -> CUDASelfTestCase.Outcome) -> [String] {
    var failures: [String] = []
    for c in cases {
        do {
            let outcome = try run(c)
            print(outcome.line)
            failures += outcome.failures.map { "\(label(c)): \($0)" }
        } catch {
            failures.append("\(label(c)): \(error)")
            print("\(label(c)): ERROR \(error)")
        }
    }
    return failures
}

/// One labelled case of the sweep.
struct CUDASelfTestCase {
    var label: String
    var workload: Workload = .llm
    var seqLen: Int
    var heads = 2, kvHeads = 1, dim = 128
    var config = SpargeConfig()
    var steps = 1
    /// Visit order across calls: ascending (as one process), or starting in the middle (as a ring).
    var rotated = false
    var precision: CUDAPrecision = .bf16
    var reference = true
    /// Clears the mask rows of query block 1 of head 0, so that those rows see no key.
    var emptyRows = false
    /// A staging budget small enough that each call goes up in many parts (`CUDAOptions.stagingBytes`).
    var stagingMiB: Int?
    /// Leans the queries and key block 0 one way (+3 a value) and every later key block the other (−3), so
    /// that the later blocks lie hundreds of log2 units below the running max: the λ rule skips them at any
    /// λ below 50 and computes them at 50 (off). The GPU's skips must then equal the CPU's exactly.
    var farBelow = false

    static func sweep(quick: Bool) -> [CUDASelfTestCase] {
        var cases: [CUDASelfTestCase] = [
            .init(label: "partial blocks, GQA 4/2, D64", seqLen: 1000, heads: 4, kvHeads: 2, dim: 64),
            .init(label: "partial blocks, causal, D64", seqLen: 1000, heads: 4, kvHeads: 2, dim: 64,
                  config: SpargeConfig(causal: true)),
            .init(label: "dense causal, 3 calls", seqLen: 2048, heads: 2, kvHeads: 2,
                  config: SpargeConfig(selection: .dense, causal: true), steps: 3),
            .init(label: "topk 0.3, 4 calls rotated", seqLen: 2048, heads: 4, kvHeads: 1,
                  config: SpargeConfig(selection: .topK(0.3)), steps: 4, rotated: true),
            .init(label: "λ rule 6, cdf 0.9", seqLen: 2048, heads: 2, kvHeads: 1,
                  config: SpargeConfig(selection: .cdf(0.9), pvThreshold: 6)),
            .init(label: "λ rule 6, causal dense", seqLen: 2048, heads: 2, kvHeads: 2,
                  config: SpargeConfig(selection: .dense, pvThreshold: 6, causal: true)),
            .init(label: "λ 50 (off), blocks far below", seqLen: 1024, heads: 2, kvHeads: 1,
                  config: SpargeConfig(selection: .dense, pvThreshold: SpargeConfig.lambdaOff), farBelow: true),
            .init(label: "λ 49.5, blocks far below", seqLen: 1024, heads: 2, kvHeads: 1,
                  config: SpargeConfig(selection: .dense, pvThreshold: SpargeConfig.lambdaOff - 0.5), farBelow: true),
            .init(label: "empty rows, sink", seqLen: 1536, heads: 2, kvHeads: 1,
                  config: SpargeConfig(sink: true), emptyRows: true),
            .init(label: "tile-q 128 (8 warps), block-k 128", seqLen: 2048, heads: 2, kvHeads: 1,
                  config: SpargeConfig(blockK: 128, causal: true, computeTileQ: 128)),
            .init(label: "block-k 128, causal, GQA 4/2", seqLen: 1500, heads: 4, kvHeads: 2,
                  config: SpargeConfig(blockK: 128, causal: true)),
            .init(label: "tile-q 32, block-k 32, D64", seqLen: 1100, heads: 2, kvHeads: 2, dim: 64,
                  config: SpargeConfig(blockK: 32, computeTileQ: 32)),
            .init(label: "fp16 inputs", seqLen: 2048, heads: 2, kvHeads: 1, config: SpargeConfig(causal: true),
                  precision: .fp16),
            .init(label: "random workload (near-uniform)", workload: .random, seqLen: 2048, heads: 2, kvHeads: 1,
                  config: SpargeConfig(selection: .dense)),
            .init(label: "video workload", workload: .video, seqLen: 4096, heads: 2, kvHeads: 2),
        ]
        if !quick {
            cases.append(.init(label: "N 16384, 8/2 heads, cdf, no ref", seqLen: 16384, heads: 8, kvHeads: 2,
                               config: SpargeConfig(causal: true), steps: 2, reference: false))
            cases.append(.init(label: "the same, staged in 1 MiB parts", seqLen: 16384, heads: 8, kvHeads: 2,
                               config: SpargeConfig(causal: true), steps: 2, reference: false, stagingMiB: 1))
        }
        return cases
    }

    struct Outcome {
        var line: String
        var failures: [String]
    }

    func run(device: CUDADevice, options: CUDAOptions) throws -> Outcome {
        var options = options
        if let stagingMiB { options.stagingBytes = stagingMiB << 20 }
        let shape = WorkloadShape(queryHeads: heads, kvHeads: kvHeads, seqLen: seqLen, headDim: dim)
        let generator = try WorkloadGenerator(workload, shape: shape, seed: 7)
        var raw = generator.generate(rows: [0..<seqLen])
        if farBelow {
            for i in raw.q.data.indices { raw.q.data[i] += 3 }
            for i in raw.k.data.indices { raw.k.data[i] += (i / dim) % seqLen < config.blockK ? 3 : -3 }
        }
        let (q, k, v) = (precision.rounded(raw.q), precision.rounded(raw.k), precision.rounded(raw.v))
        var mask = try MaskPredictor.predict(q: q, k: k, config: config)
        if emptyRows {
            var bits = mask.denseBits()
            for j in 0..<mask.keyBlocks { bits[mask.rowCount + j] = 0 }  // head 0, row 1
            mask = BlockMask(heads: mask.heads, keyBlocks: mask.keyBlocks, queryBlocks: mask.queryBlocks, dense: bits)
        }
        let threads = ProcessInfo.processInfo.activeProcessorCount
        let cpu = try SparseAttention.forward(q: q, k: k, v: v, mask: mask, config: config, threads: threads)

        let gpu = try CUDABlockSparseAttention(queries: q, mask: mask, kvHeads: kvHeads, config: config,
                                               seqLen: seqLen, device: device, precision: precision, options: options)
        let nk = mask.keyBlocks
        let order = rotated ? Array((nk / 2)..<nk) + Array(0..<(nk / 2)) : Array(0..<nk)
        try k.data.withUnsafeBufferPointer { kp in
            try v.data.withUnsafeBufferPointer { vp in
                for s in 0..<steps {
                    var table = KeyValueBlockTable(kvHeads: kvHeads, keyBlocks: nk, blockK: config.blockK, seqLen: seqLen)
                    for j in order[(s * nk / steps)..<((s + 1) * nk / steps)] {
                        for g in 0..<kvHeads {
                            let offset = (g * seqLen + j * config.blockK) * dim
                            table.set(kvHead: g, block: j, keys: kp.baseAddress! + offset, values: vp.baseAddress! + offset)
                        }
                    }
                    try gpu.attend(table, threads: threads, poll: nil)
                }
            }
        }
        let (out, lse) = try gpu.finish()

        var failures: [String] = []
        let tolerance = 2e-3
        let vsCPU = ErrorMetrics(output: out.data, reference: cpu.output.data.map(Double.init)).relativeL1
        var vsRef = Double.nan, cpuVsRef = Double.nan
        if reference {
            let ref = ReferenceAttention.compute(q: q, k: k, v: v, mask: mask, config: config)
            vsRef = ErrorMetrics(output: out.data, reference: ref.output).relativeL1
            cpuVsRef = ErrorMetrics(output: cpu.output.data, reference: ref.output).relativeL1
            if !(vsRef <= tolerance) { failures.append("rel L1 to the Double reference \(vsRef) > \(tolerance)") }
        }
        if !(vsCPU <= tolerance) { failures.append("rel L1 to the CPU tiles \(vsCPU) > \(tolerance)") }
        var lseDiff = 0.0, infMismatch = 0, nonzeroEmpty = 0
        for i in lse.indices {
            let (a, b) = (lse[i], cpu.lse[i])
            if a == -.infinity || b == -.infinity {
                if a != b { infMismatch += 1 }
                if b == -.infinity {
                    let row = out.data[(i * dim)..<((i + 1) * dim)]
                    if row.contains(where: { $0 != 0 }) { nonzeroEmpty += 1 }
                }
            } else {
                lseDiff = max(lseDiff, Double(abs(a - b)))
            }
            if a.isNaN { infMismatch += 1 }
        }
        if !(lseDiff <= tolerance) { failures.append("LSE differs from the CPU's by \(lseDiff)") }
        if infMismatch > 0 { failures.append("\(infMismatch) rows have lse -inf (or NaN) on one side only") }
        if nonzeroEmpty > 0 { failures.append("\(nonzeroEmpty) rows that saw no key have a non-zero output") }
        if emptyRows && !cpu.lse.contains(-.infinity) { failures.append("the case meant to have empty rows has none") }
        if out.data.contains(where: { !$0.isFinite }) { failures.append("the output has non-finite values") }
        let (gv, cv) = (gpu.attendStatistics.keyBlocksVisited, cpu.stats.keyBlocksVisited)
        let (gs, cs) = (gpu.attendStatistics.pvBlocksSkipped, cpu.stats.pvBlocksSkipped)
        if gv != cv { failures.append("visited \(gv) key blocks, the CPU \(cv)") }
        if abs(gs - cs) > (farBelow ? 0 : max(1, cv / 100)) { failures.append("skipped \(gs) P·V blocks by λ, the CPU \(cs)") }
        if farBelow && (cs > 0) != config.lambdaActive {
            failures.append("the CPU skipped \(cs) blocks far below the max at λ \(config.pvThreshold)")
        }
        let density = MaskStatistics(mask: mask, config: config).density
        func sci(_ x: Double) -> String { x.isNaN ? "   -     " : String(format: "%9.2e", x) }
        let line = label.padding(toLength: 34, withPad: " ", startingAt: 0)
            + String(format: " %6d  %2d/%-2d  %4d  %6.3f  %4d  ", seqLen, heads, kvHeads, dim, density, steps)
            + "\(sci(vsRef)) \(sci(cpuVsRef)) \(sci(vsCPU)) \(sci(lseDiff))  "
            + String(format: "%6d/%-6d  %5d/%-5d  %8.3f", gv, cv, gs, cs, gpu.kernelSeconds * 1e3)
            + (failures.isEmpty ? "  ok" : "  FAIL")
        return Outcome(line: line, failures: failures)
    }
}
