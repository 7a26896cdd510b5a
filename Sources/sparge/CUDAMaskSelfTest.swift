import Dispatch
import Foundation
import SpargeCUDA
import SpargeRing
import SpargeWorkloads

/// The mask half of `sparge selftest-cuda`: block summaries and mask rows computed on the GPU against the
/// CPU's, bit for bit, on Float inputs from the workloads (the GPU kernels repeat the CPU's arithmetic
/// operation for operation, so any difference at all is a failure). Also prints both sides' times.
struct CUDAMaskSelfTestCase {
    var label: String
    var workload: Workload = .llm
    var seqLen: Int
    var heads = 4, kvHeads = 2, dim = 128
    var config = SpargeConfig()
    /// Predict only every other query block (as a rank holding some rows does).
    var someRows = false

    static func sweep(quick: Bool) -> [CUDAMaskSelfTestCase] {
        var theta3 = SpargeConfig(selection: .cdf(0.9))
        theta3.simThreshold = 0.3
        var sinkDiagonal = SpargeConfig(causal: true, sink: true)
        sinkDiagonal.keepDiagonal = true
        var cases: [CUDAMaskSelfTestCase] = [
            .init(label: "llm causal cdf, partial tail, D64", seqLen: 5000, dim: 64, config: SpargeConfig(causal: true)),
            .init(label: "llm topk 0.1, GQA 8/1", seqLen: 8192, heads: 8, kvHeads: 1, config: SpargeConfig(selection: .topK(0.1))),
            .init(label: "llm causal, odd rows only", seqLen: 6144, config: SpargeConfig(causal: true), someRows: true),
            .init(label: "video cdf 0.9 θ 0.3", workload: .video, seqLen: 4096, heads: 2, kvHeads: 2, config: theta3),
            .init(label: "random causal, sink, diagonal", workload: .random, seqLen: 2000, heads: 2, kvHeads: 1,
                  config: sinkDiagonal),
            .init(label: "llm dense causal, block-k 32, D96", seqLen: 1000, dim: 96,
                  config: SpargeConfig(blockK: 32, selection: .dense, causal: true, computeTileQ: 32)),
        ]
        if !quick {
            cases.append(.init(label: "llm causal cdf N 32768, 8/2", seqLen: 32768, heads: 8, kvHeads: 2,
                               config: SpargeConfig(causal: true)))
            cases.append(.init(label: "llm causal cdf N 131072, 4/1", seqLen: 131072, heads: 4, kvHeads: 1,
                               config: SpargeConfig(causal: true)))
            // Rows of 4096 and 6144 key blocks: TopK's radix select (the sort takes rows up to 3788).
            cases.append(.init(label: "llm causal topk 0.02 N 262144, 4/1", seqLen: 262144, heads: 4, kvHeads: 1,
                               config: SpargeConfig(selection: .topK(0.02), causal: true)))
            cases.append(.init(label: "llm topk 0.1 block-k 32, odd rows", seqLen: 196608, heads: 2, kvHeads: 1,
                               config: SpargeConfig(blockK: 32, selection: .topK(0.1)), someRows: true))
        }
        return cases
    }

    func run(device: CUDADevice) throws -> CUDASelfTestCase.Outcome {
        let shape = WorkloadShape(queryHeads: heads, kvHeads: kvHeads, seqLen: seqLen, headDim: dim)
        let generator = try WorkloadGenerator(workload, shape: shape, seed: 11)
        let q = generator.generate(.query, rows: [0..<seqLen]), k = generator.generate(.key, rows: [0..<seqLen])
        let predictor = CUDAMaskPredictor(device: device)
        let km = KeyMean(summing: k, rows: 0..<seqLen).mean()
        func seconds(_ work: () throws -> Void) rethrows -> Double {
            let t = DispatchTime.now().uptimeNanoseconds
            try work()
            return Double(DispatchTime.now().uptimeNanoseconds - t) * 1e-9
        }
        var cpuQ: BlockSummaries!, cpuK: BlockSummaries!, gpuQ: BlockSummaries!, gpuK: BlockSummaries!
        let cpuSummary = seconds {
            cpuQ = BlockSummaries.summarize(q, rows: 0..<seqLen, firstBlock: 0, blockSize: config.blockQ, threshold: config.simThreshold)
            cpuK = BlockSummaries.summarize(k, rows: 0..<seqLen, firstBlock: 0, blockSize: config.blockK,
                                            threshold: config.simThreshold, subtracting: km)
        }
        _ = try predictor.summarize(q, rows: 0..<min(seqLen, 256), firstBlock: 0, blockSize: config.blockQ,
                                    threshold: config.simThreshold)  // compile outside the timing
        let gpuSummary = try seconds {
            gpuQ = try predictor.summarize(q, rows: 0..<seqLen, firstBlock: 0, blockSize: config.blockQ, threshold: config.simThreshold)
            gpuK = try predictor.summarize(k, rows: 0..<seqLen, firstBlock: 0, blockSize: config.blockK,
                                           threshold: config.simThreshold, subtracting: km)
        }
        var failures: [String] = []
        func differing<T: Equatable>(_ a: [T], _ b: [T]) -> Int {
            a.count == b.count ? zip(a, b).filter { $0 != $1 }.count : max(a.count, b.count)
        }
        let meanDiff = differing(gpuQ.means.map(\.bitPattern), cpuQ.means.map(\.bitPattern))
            + differing(gpuK.means.map(\.bitPattern), cpuK.means.map(\.bitPattern))
        let flagDiff = differing(gpuQ.flags, cpuQ.flags) + differing(gpuK.flags, cpuK.flags)
        if meanDiff > 0 { failures.append("\(meanDiff) block means differ from the CPU's") }
        if flagDiff > 0 { failures.append("\(flagDiff) self-similarity flags differ from the CPU's") }

        let blocks = someRows ? Array(stride(from: 1, to: cpuQ.count, by: 2)) : Array(0..<cpuQ.count)
        let rowSummaries = someRows ? cpuQ.selecting(blocks) : cpuQ!
        var cpuMask: BlockMask!, gpuMask: BlockMask!
        let cpuRows = try seconds {
            cpuMask = try MaskPredictor.predictRows(querySummaries: rowSummaries, queryBlocks: blocks, keySummaries: cpuK,
                                                config: config, headDim: dim, queryHeads: heads, kvHeads: kvHeads, seqLen: seqLen)
        }
        _ = try predictor.predictRows(querySummaries: rowSummaries, queryBlocks: blocks, keySummaries: cpuK, config: config,
                                      headDim: dim, queryHeads: heads, kvHeads: kvHeads, seqLen: seqLen)  // compile
        let gpuRows = try seconds {
            gpuMask = try predictor.predictRows(querySummaries: rowSummaries, queryBlocks: blocks, keySummaries: cpuK,
                                                config: config, headDim: dim, queryHeads: heads, kvHeads: kvHeads, seqLen: seqLen)
        }
        let blockDiff = differing(gpuMask.denseBits(), cpuMask.denseBits())
        if blockDiff > 0 { failures.append("\(blockDiff) mask blocks differ from the CPU's") }
        let density = MaskStatistics(mask: cpuMask, config: config).density
        let line = label.padding(toLength: 36, withPad: " ", startingAt: 0)
            + String(format: " %6d  %2d/%-2d  %4d  %6.3f  %6d  %6d  %6d   %8.2f %8.2f   %8.2f %8.2f",
                     seqLen, heads, kvHeads, dim, density, meanDiff, flagDiff, blockDiff,
                     cpuSummary * 1e3, gpuSummary * 1e3, cpuRows * 1e3, gpuRows * 1e3)
            + (failures.isEmpty ? "  ok" : "  FAIL")
        return .init(line: line, failures: failures)
    }
}

/// Runs the mask sweep; returns the failures, labelled.
func runCUDAMaskSelfTest(device: CUDADevice, quick: Bool) -> [String] {
    print("mask prediction, GPU against CPU (bit for bit; times in ms, CPU on \(ProcessInfo.processInfo.activeProcessorCount) threads)")
    print("case                                      N  Hq/Hkv   D  density  means   flags  blocks   cpu-summ gpu-summ   cpu-rows gpu-rows")
    return runSelfTestCases(CUDAMaskSelfTestCase.sweep(quick: quick), label: { "mask \($0.label)" }) {
        try $0.run(device: device)
    }
}
