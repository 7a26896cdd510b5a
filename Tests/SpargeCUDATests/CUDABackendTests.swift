import SpargeKernels
import SpargeTestSupport
import XCTest
@testable import SpargeCUDA

/// The CUDA backend where there is no GPU (this machine, CI): it must load nothing at build time, fail with
/// a message that lists what it tried, and round to 16 bits exactly as the kernels expect. With a GPU (and
/// Swift on the same machine) the last two tests run the attention kernel against the CPU tiles and the mask
/// kernels against the CPU's mask; on the device machine without Swift, `sparge selftest-cuda`
/// (launch/gpu-check.sh) runs the same comparisons and many more.
final class CUDABackendTests: XCTestCase {
    /// The device, or a skip that says why there is none.
    private func deviceOrSkip() throws -> CUDADevice {
        do {
            return try CUDADevice.open()
        } catch {
            throw XCTSkip("no CUDA device here, so the GPU checks are skipped (run launch/gpu-check.sh on a GPU machine): \(error)")
        }
    }

    func testLoaderErrorListsEveryNameTried() throws {
        var options = CUDAOptions()
        options.libcudaPath = "/nonexistent/libcuda.so.1"
        options.toolkitFolders = ["/opt/cuda"]
        let names = DriverAPI.candidates(options: options)
        XCTAssertEqual(names.first, "/nonexistent/libcuda.so.1", "the given driver path must be tried first")
        XCTAssertTrue(names.contains("libcuda.so.1"))
        let nvrtc = NVRTC.candidates(options: options)
        for expected in ["libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12", "/opt/cuda/lib64/libnvrtc.so.13",
                         "/usr/local/cuda/lib64/libnvrtc.so"] {
            XCTAssertTrue(nvrtc.contains(expected), "NVRTC candidates lack \(expected)")
        }
        do {
            _ = try DynamicLibrary.open(["/nonexistent/a.so", "libsparge-does-not-exist.so"], what: "a test library")
            XCTFail("opening missing libraries succeeded")
        } catch let error as CUDAError {
            let text = "\(error)"
            XCTAssertTrue(text.contains("/nonexistent/a.so") && text.contains("libsparge-does-not-exist.so"),
                          "the loader error must list every name tried: \(text)")
        }
    }

    func testBF16RoundsToNearestEven() {
        let cases: [(Float, UInt16, String)] = [
            (1.0, 0x3F80, "one"), (-2.0, 0xC000, "minus two"), (0, 0, "zero"),
            (Float(bitPattern: 0x3F80_8000), 0x3F80, "tie, even below"),
            (Float(bitPattern: 0x3F81_8000), 0x3F82, "tie, even above"),
            (Float(bitPattern: 0x3F80_8001), 0x3F81, "just above a tie"),
            (.infinity, 0x7F80, "infinity"), (Float.greatestFiniteMagnitude, 0x7F80, "rounds to infinity"),
        ]
        for (x, bits, label) in cases {
            XCTAssertEqual(HalfPrecision.bf16(x), bits, "bf16(\(x)): \(label)")
        }
        XCTAssertEqual(HalfPrecision.bf16(.nan), 0x7FC0)
    }

    func testConversionReportsValuesBeyondFP16() {
        let inside: [Float] = [1, -61440, 0.5, 3.0e-5]  // (65504 itself rounds to 65536 in bf16)
        let outside: [Float] = [1, 70000]
        var out = [UInt16](repeating: 0, count: 4)
        XCTAssertTrue(HalfPrecision.convert(inside, count: 4, to: &out, precision: .bf16, fp16Storage: true))
        // A bf16 value inside fp16's normal range is exact in fp16.
        XCTAssertEqual(Float(Float16(bitPattern: out[0])), 1)
        XCTAssertFalse(HalfPrecision.convert(outside, count: 2, to: &out, precision: .bf16, fp16Storage: true))
        XCTAssertTrue(HalfPrecision.convert(outside, count: 2, to: &out, precision: .bf16, fp16Storage: false))
        XCTAssertFalse(HalfPrecision.convert(outside, count: 2, to: &out, precision: .fp16, fp16Storage: false))
    }

    func testKernelSourceNeedsNoHeaders() {
        XCTAssertFalse(AttentionKernelSource.source.contains("#include"), "NVRTC must compile the kernels without CUDA headers")
        XCTAssertFalse(MaskKernelSource.source.contains("#include"), "NVRTC must compile the mask kernels without CUDA headers")
        XCTAssertThrowsError(try CUDABlockSparseAttention.checkShape(headDim: 96, config: SpargeConfig()))
        XCTAssertThrowsError(try CUDABlockSparseAttention.checkShape(headDim: 128, config: SpargeConfig(computeTileQ: 24)))
        XCTAssertNoThrow(try CUDABlockSparseAttention.checkShape(headDim: 128, config: SpargeConfig()))
    }

    func testKernelAgreesWithCPUTiles() throws {
        let device = try deviceOrSkip()
        var rng = SystemRandomNumberGenerator()
        let (n, hq, hkv, d) = (700, 4, 2, 64)
        func random(_ heads: Int) -> Tensor3 {
            Tensor3(heads: heads, rows: n, dim: d,
                    data: (0..<heads * n * d).map { _ in StorageFormat.bf16.rounded(Float.random(in: -2...2, using: &rng)) })
        }
        let (q, k, v) = (random(hq), random(hkv), random(hkv))
        for causal in [false, true] {
            let config = SpargeConfig(causal: causal)
            let mask = try MaskPredictor.predict(q: q, k: k, config: config)
            let cpu = try SparseAttention.forward(q: q, k: k, v: v, mask: mask, config: config)
            let gpu = try CUDABlockSparseAttention(queries: q, mask: mask, kvHeads: hkv, config: config, seqLen: n,
                                                   device: device)
            var table = KeyValueBlockTable(kvHeads: hkv, keyBlocks: mask.keyBlocks, blockK: config.blockK, seqLen: n)
            try k.data.withUnsafeBufferPointer { kp in
                try v.data.withUnsafeBufferPointer { vp in
                    table.setAll(k: kp.baseAddress!, v: vp.baseAddress!, dim: d)
                    try gpu.attend(table, threads: 1, poll: nil)
                }
            }
            let (out, _) = try gpu.finish()
            let error = ErrorMetrics(output: out.data, reference: cpu.output.data.map(Double.init)).relativeL1
            XCTAssertLessThan(error, 2e-3, "causal \(causal): GPU vs CPU tiles, rel L1 \(error)")
            XCTAssertEqual(gpu.attendStatistics.keyBlocksVisited, cpu.stats.keyBlocksVisited, "causal \(causal): blocks visited")
        }
    }

    /// The GPU's summaries and mask rows against the CPU's, bit for bit (the kernels repeat the CPU's
    /// arithmetic, so there is no tolerance), on fresh structured inputs with a partial tail and GQA.
    func testMaskOnTheGPUEqualsTheCPU() throws {
        let device = try deviceOrSkip()
        let seed = UInt64.random(in: 0...UInt64.max)
        var rng = SeededGenerator(seed: seed)
        let (n, hq, hkv, d) = (3000, 4, 2, 128)
        let q = Tensor3.segmented(heads: hq, kvHeads: hkv, rows: n, dim: d, segment: 200, noise: 0.8, seed: seed, using: &rng)
        let k = Tensor3.segmented(heads: hkv, kvHeads: hkv, rows: n, dim: d, segment: 200, noise: 0.8, seed: seed, using: &rng)
        let predictor = CUDAMaskPredictor(device: device)
        for config in [SpargeConfig(causal: true), SpargeConfig(selection: .topK(0.2))] {
            let km = KeyMean(summing: k, rows: 0..<n).mean()
            let cpuQ = BlockSummaries.summarize(q, rows: 0..<n, firstBlock: 0, blockSize: config.blockQ, threshold: config.simThreshold)
            let cpuK = BlockSummaries.summarize(k, rows: 0..<n, firstBlock: 0, blockSize: config.blockK,
                                                threshold: config.simThreshold, subtracting: km)
            let gpuQ = try predictor.summarize(q, rows: 0..<n, firstBlock: 0, blockSize: config.blockQ, threshold: config.simThreshold)
            let gpuK = try predictor.summarize(k, rows: 0..<n, firstBlock: 0, blockSize: config.blockK,
                                               threshold: config.simThreshold, subtracting: km)
            XCTAssertEqual(gpuQ, cpuQ, "query summaries differ, seed \(seed)")
            XCTAssertEqual(gpuK, cpuK, "key summaries differ, seed \(seed)")
            let blocks = Array(0..<cpuQ.count)
            let cpu = try MaskPredictor.predictRows(querySummaries: cpuQ, queryBlocks: blocks, keySummaries: cpuK, config: config,
                                                headDim: d, queryHeads: hq, kvHeads: hkv, seqLen: n)
            let gpu = try predictor.predictRows(querySummaries: cpuQ, queryBlocks: blocks, keySummaries: cpuK, config: config,
                                                headDim: d, queryHeads: hq, kvHeads: hkv, seqLen: n)
            XCTAssertEqual(zip(gpu.denseBits(), cpu.denseBits()).filter { $0 != $1 }.count, 0, "mask blocks differ, seed \(seed)")
        }
    }
}
