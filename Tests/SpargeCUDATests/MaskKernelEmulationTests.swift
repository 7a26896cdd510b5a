import Foundation
import SpargeKernels
import SpargeTestSupport
import XCTest
@testable import SpargeCUDA

/// The mask kernels' CUDA source, compiled as plain C++ for the host (a prelude stands in for the CUDA
/// built-ins, one loop over the grid runs each kernel) and compared with the CPU bit for bit — block means,
/// self-similarity flags and mask bits — on fixed and fresh random inputs. This checks the kernels' logic
/// and arithmetic order on every machine, GPU or not; `sparge selftest-cuda` checks the same on a GPU.
///
/// The comparison is exact because the kernels spell out every rounding: a difference of one bit in a
/// mean or one block in a mask is a failure, not noise. Skipped where no `clang++` is found.
final class MaskKernelEmulationTests: XCTestCase {
    func testSummariesEqualTheCPU() throws {
        let seed = UInt64.random(in: 0...UInt64.max)
        var rng = SeededGenerator(seed: seed)
        // (heads, rows, dim, block size, θ, structured): partial tails, D not a multiple of 16 or 4, blocks of
        // one chunk and of several (D = 128: 64 rows a chunk; D = 300: 16, with a partial chunk at the tail),
        // and thresholds between the flags' values so that both outcomes occur.
        let cases: [(Int, Int, Int, Int, Float, Bool)] = [
            (2, 64 * 7 + 13, 64, 64, 0.3, true), (3, 128 * 4, 128, 128, 0.6, true), (1, 300, 40, 32, 0.2, true),
            (2, 200, 18, 64, 0.05, false), (1, 96, 128, 32, 0.1, false), (1, 64 * 2 + 40, 300, 64, 0.2, true),
        ]
        for (heads, rows, dim, blockSize, theta, structured) in cases {
            let x = structured ? Tensor3.blockStructured(heads: heads, rows: rows, dim: dim, run: blockSize, noise: 0.8, using: &rng)
                : Tensor3.random(heads: heads, rows: rows, dim: dim, scale: 1.5, shift: 0.3, using: &rng)
            // Also the rows as a model's bf16 tensors, which the kernel reads in place and widens as it loads
            // them: the CPU pools the same values as Floats.
            var x16 = x
            x16.data = x.data.map { StorageFormat.bf16.rounded($0) }
            for (subtract, inBF16) in [(false, false), (true, false), (false, true), (true, true)] {
                let input = inBF16 ? x16 : x
                let mean = KeyMean(summing: input, rows: 0..<rows).mean()
                let expected = BlockSummaries.summarize(input, rows: 0..<rows, firstBlock: 0, blockSize: blockSize,
                                                        threshold: theta, subtracting: subtract ? mean : nil)
                let got = try emulator(dim: dim).summarize(input, inBF16: inBF16, blockSize: blockSize, theta: theta,
                                                           mean: subtract ? mean : [Float](repeating: 0, count: heads * dim))
                let label = "H=\(heads) N=\(rows) D=\(dim) B=\(blockSize) θ=\(theta) smoothed=\(subtract) bf16=\(inBF16) seed \(seed)"
                XCTAssertEqual(mismatches(got.means.map(\.bitPattern), expected.means.map(\.bitPattern)), 0, "means differ: \(label)")
                XCTAssertEqual(mismatches(got.flags, expected.flags), 0, "flags differ: \(label)")
                if structured && !subtract {
                    XCTAssertTrue(expected.flags.contains(1) && expected.flags.contains(0) || rows % blockSize == 0,
                                  "the case should have both flags: \(label)")
                }
            }
        }
    }

    /// Rows that are not finite or are zero give the CPU's flags: a block of identical rows but one whose
    /// norm is ∞ (an ∞ value: its reciprocal is 0, and ∞ · 0 makes the similarity NaN), and one with a zero row
    /// (NaN by definition). Leaving either row out would leave identical rows, similarity 1 > θ.
    func testSummariesOfInfiniteAndZeroRowsEqualTheCPU() throws {
        let (dim, blockSize) = (16, 32)
        var x = Tensor3(heads: 1, rows: 3 * blockSize, dim: dim, repeating: 0)
        for r in 0..<x.rows { for j in 0..<dim { x[0, r, j] = Float(j % 5) - 1.5 } }
        x[0, 7, 3] = .infinity
        for j in 0..<dim { x[0, blockSize + 11, j] = 0 }
        let expected = BlockSummaries.summarize(x, rows: 0..<x.rows, firstBlock: 0, blockSize: blockSize, threshold: 0.5)
        XCTAssertEqual(expected.flags, [0, 0, 1], "the CPU's own flags (the third block is identical rows)")
        let got = try emulator(dim: dim).summarize(x, inBF16: false, blockSize: blockSize, theta: 0.5,
                                                   mean: [Float](repeating: 0, count: dim))
        XCTAssertEqual(got.flags, expected.flags)
    }

    func testMaskRowsEqualTheCPU() throws {
        let seed = UInt64.random(in: 0...UInt64.max)
        var rng = SeededGenerator(seed: seed)
        var base = SpargeConfig()
        base.simThreshold = 0.25
        var configs: [(String, SpargeConfig)] = []
        // τ = 1 runs past the positive probabilities into the zero ones (their own path in the kernel).
        for (name, selection) in [("cdf 0.9", BlockSelection.cdf(0.9)), ("cdf 0.98", .cdf(0.98)), ("cdf 1", .cdf(1)),
                                  ("topk 0.3", .topK(0.3)), ("dense", .dense)] {
            for causal in [false, true] {
                var c = base
                c.selection = selection
                c.causal = causal
                configs.append(("\(name)\(causal ? " causal" : "")", c))
            }
        }
        var sink = base
        sink.sink = true
        sink.causal = true
        sink.keepDiagonal = true
        configs.append(("cdf causal sink diagonal", sink))
        var small = base
        small.blockQ = 64
        small.blockK = 32
        small.selection = .cdf(0.5)
        configs.append(("64×32 cdf 0.5", small))

        for (label, config) in configs {
            // The third shape has queries 40× larger: scores then spread over more than 104 (log units), so
            // some in-limit probabilities underflow to 0 and are taken in index order after the heap runs dry.
            // The last has D = 37: an odd head dimension (key means read one at a time) whose tail of 5
            // crosses a quad of the query means.
            for (rows, dim, heads, kvHeads, gain) in [(1000, 64, 4, 2, Float(1)), (640, 48, 2, 2, 1), (700, 64, 2, 1, 40),
                                                      (500, 37, 2, 1, 1)] {
                var q = Tensor3.segmented(heads: heads, kvHeads: kvHeads, rows: rows, dim: dim, segment: 96,
                                          noise: 0.9, seed: seed, using: &rng)
                for i in q.data.indices { q.data[i] *= gain }
                let k = Tensor3.segmented(heads: kvHeads, kvHeads: kvHeads, rows: rows, dim: dim, segment: 96,
                                          noise: 0.9, seed: seed, using: &rng)
                let expected = try MaskPredictor.predict(q: q, k: k, config: config)
                let km = KeyMean(summing: k, rows: 0..<rows).mean()
                let qs = BlockSummaries.summarize(q, rows: 0..<rows, firstBlock: 0, blockSize: config.blockQ,
                                                  threshold: config.simThreshold)
                let ks = BlockSummaries.summarize(k, rows: 0..<rows, firstBlock: 0, blockSize: config.blockK,
                                                  threshold: config.simThreshold, subtracting: km)
                // A rank's rows: every other query block, so that rows and block indices differ.
                let blocks = stride(from: 1, to: qs.count, by: 2).map { $0 }
                let rowsOnly = qs.selecting(blocks)
                let expectedRows = try MaskPredictor.predictRows(
                    querySummaries: rowsOnly, queryBlocks: blocks, keySummaries: ks, config: config, headDim: dim,
                    queryHeads: heads, kvHeads: kvHeads, seqLen: rows)
                let emu = try emulator(dim: dim)
                let whole = try emu.predictRows(queries: qs, blocks: Array(0..<qs.count), keys: ks, config: config,
                                                heads: heads, kvHeads: kvHeads, seqLen: rows)
                let some = try emu.predictRows(queries: rowsOnly, blocks: blocks, keys: ks, config: config,
                                               heads: heads, kvHeads: kvHeads, seqLen: rows)
                // The selection by a thread block per row that sorts: the same bits.
                let sorted = try emu.predictRows(queries: qs, blocks: Array(0..<qs.count), keys: ks, config: config,
                                                 heads: heads, kvHeads: kvHeads, seqLen: rows, selection: .sorted)
                let name = "\(label), N=\(rows) D=\(dim) Hq/Hkv=\(heads)/\(kvHeads), seed \(seed)"
                let expectedBits = expected.denseBits()
                if case .topK = config.selection {
                    // TopK's radix select (5 threads a row; the rows' keys cached in shared memory): the same bits.
                    let radix = try emu.predictRows(queries: qs, blocks: Array(0..<qs.count), keys: ks, config: config,
                                                    heads: heads, kvHeads: kvHeads, seqLen: rows,
                                                    selection: .radix(threads: 5, cachedKeys: (ks.count + 3) / 4 * 4))
                    XCTAssertEqual(mismatches(radix, expectedBits), 0, "mask blocks differ with the radix select: \(name)")
                }
                XCTAssertEqual(mismatches(whole, expectedBits), 0, "mask blocks differ: \(name)")
                XCTAssertEqual(mismatches(some, expectedRows.denseBits()), 0, "mask blocks of the odd rows differ: \(name)")
                XCTAssertEqual(mismatches(sorted, expectedBits), 0, "mask blocks differ with the sorting selection: \(name)")
                let density = Double(expected.computedCount) / Double(expectedBits.count)
                if case .cdf(let tau) = config.selection, tau < 1, !config.causal {
                    XCTAssertLessThan(density, 1, "a case whose mask is all on tests only the force-on rules: \(name)")
                }
            }
        }
    }

    /// Entries that differ (every entry when the lengths differ).
    private func mismatches<T: Equatable>(_ a: [T], _ b: [T]) -> Int {
        a.count == b.count ? zip(a, b).filter { $0 != $1 }.count : max(a.count, b.count)
    }

    private func emulator(dim: Int) throws -> MaskKernelEmulator { try MaskKernelEmulator.build(dim: dim) }
}

/// Runs the emulated kernels: inputs go to a file, the harness writes the outputs to another.
struct MaskKernelEmulator {
    let program: HostKernelProgram
    let dim: Int

    /// The mask kernels for head dimension `dim`, compiled for the host (once per process).
    static func build(dim: Int) throws -> MaskKernelEmulator {
        let program = try HostKernelProgram.build(
            name: "mask-d\(dim)", source: HostKernelProgram.prelude + MaskKernelSource.source + harness,
            defines: ["HEAD_DIM": dim])
        return MaskKernelEmulator(program: program, dim: dim)
    }

    /// The kernel's summaries of `x`, handed over as f32 or (`inBF16`, values already bf16) as bf16 bits.
    func summarize(_ x: Tensor3, inBF16: Bool = false, blockSize: Int, theta: Float,
                   mean: [Float]) throws -> (means: [Float], flags: [UInt8]) {
        let count = (x.rows + blockSize - 1) / blockSize
        var input = Data()
        input.append(ints: [x.rows, x.heads, count, blockSize, inBF16 ? 1 : 0])
        input.append(doubles: [BlockSummaries.thresholdValue(theta)])
        if inBF16 {
            x.data.map { StorageFormat.bf16Bits($0) }.withUnsafeBytes { input.append(contentsOf: $0) }
        } else {
            input.append(floats: x.data)
        }
        input.append(floats: mean)
        let out = try run("summarize", input)
        let meanCount = x.heads * count * dim
        let means = out.prefix(meanCount * 4).withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        return (means, Array(out.suffix(from: out.startIndex + meanCount * 4)))
    }

    /// How the emulated rows are selected: the heap (a thread per row), the sort (a block per row, run by one
    /// thread), or TopK's radix select (`sparge_topk_rows` by `threads` threads at once, caching rows of up to
    /// `cachedKeys` key blocks in shared memory) — whatever `RowSelection` would pick for the row length.
    enum Selection {
        case heap, sorted
        case radix(threads: Int, cachedKeys: Int)
    }

    func predictRows(queries: BlockSummaries, blocks: [Int], keys: BlockSummaries, config: SpargeConfig,
                     heads: Int, kvHeads: Int, seqLen: Int, selection: Selection = .heap) throws -> [UInt8] {
        let nk = keys.count
        // The driver's own derivation of the kernels' arguments, so that it is tested too.
        let rule = CUDAMaskPredictor.RowRule(config: config, queryBlocks: blocks, keyBlocks: nk, headDim: dim)
        let (kind, threads, cachedKeys): (Int, Int, Int)
        switch selection {
        case .heap: (kind, threads, cachedKeys) = (0, 0, 0)
        case .sorted: (kind, threads, cachedKeys) = (1, 0, 0)
        case .radix(let t, let c): (kind, threads, cachedKeys) = (2, t, c)
        }
        var input = Data()
        input.append(ints: [blocks.count, nk, heads / kvHeads, heads, Int(rule.mode), Int(rule.keep),
                            config.causal ? 1 : 0, config.sink ? 1 : 0, config.keepDiagonal ? 1 : 0,
                            kind, threads, cachedKeys])
        input.append(floats: [rule.tau, rule.scale])
        input.append(floats: queries.means)
        input.append(floats: keys.means)
        input.append(contentsOf: keys.flags)
        input.append(contentsOf: queries.flags)
        input.append(ints: rule.limits.map(Int.init))
        input.append(ints: rule.diagonals.map(Int.init))
        return [UInt8](try run("select", input))
    }

    private func run(_ command: String, _ input: Data) throws -> Data { try program.run(command, input) }


    /// Reads a case, runs the kernels over their whole grid (the row selection in small batches, as the
    /// driver batches it), writes the outputs.
    static let harness = #"""

template <typename T> static T* take_array(size_t n) { T* p = (T*)malloc(n * sizeof(T) + 1); take(p, n * sizeof(T)); return p; }

int main(int argc, char** argv) {
    if (argc != 4) return 2;
    in_file = fopen(argv[2], "rb");
    FILE* out = fopen(argv[3], "wb");
    if (!in_file || !out) return 2;
    const int d = HEAD_DIM;
    if (strcmp(argv[1], "summarize") == 0) {
        int rows = (int)take_int(), heads = (int)take_int(), count = (int)take_int(), blockSize = (int)take_int();
        int inBF16 = (int)take_int();
        double theta; take(&theta, 8);
        // 16 bytes of slack: the bf16 rows are read eight at a time where they are 16-byte aligned.
        void* x = malloc((size_t)heads * rows * d * 4 + 16); take(x, (size_t)heads * rows * d * (inBF16 ? 2 : 4));
        float* mean = take_array<float>((size_t)heads * d);
        float* means = (float*)malloc((size_t)heads * count * d * 4 + 1);
        unsigned char* flags = (unsigned char*)malloc((size_t)heads * count + 1);
        long long headStride = (long long)rows * d;
        // One thread a block: its strided loops then do every thread's part in turn, and the barriers
        // between the phases hold trivially.
        LAUNCH(heads * count, 1, sparge_summarize_blocks(x, inBF16, headStride, rows, count, blockSize, mean, theta, means, flags, count));
        fwrite(means, 4, (size_t)heads * count * d, out);
        fwrite(flags, 1, (size_t)heads * count, out);
    } else {
        int rows = (int)take_int(), nk = (int)take_int(), group = (int)take_int(), heads = (int)take_int(), mode = (int)take_int();
        int keep = (int)take_int(), causal = (int)take_int(), sink = (int)take_int(), keepDiagonal = (int)take_int();
        int selection = (int)take_int(), threads = (int)take_int(), cachedKeys = (int)take_int();
        float tau, scale; take(&tau, 4); take(&scale, 4);
        float* qMeans = take_array<float>((size_t)heads * rows * d);
        float* kFloat = take_array<float>((size_t)(heads / group) * nk * d);
        double* kMeans = (double*)malloc((size_t)(heads / group) * nk * d * 8 + 8);
        for (size_t i = 0; i < (size_t)(heads / group) * nk * d; ++i) kMeans[i] = (double)kFloat[i];
        unsigned char* kFlags = take_array<unsigned char>((size_t)(heads / group) * nk);
        unsigned char* qFlags = take_array<unsigned char>((size_t)heads * rows);
        int* limits = (int*)malloc((size_t)rows * 4 + 1); for (int i = 0; i < rows; ++i) limits[i] = (int)take_int();
        int* diagonals = (int*)malloc((size_t)rows * 4 + 1); for (int i = 0; i < rows; ++i) diagonals[i] = (int)take_int();
        size_t total = (size_t)heads * rows * nk;
        unsigned char* bits = (unsigned char*)calloc(total + 1, 1);
        int items = heads * rows, perLaunch = 7;
        float* queryT = (float*)malloc((size_t)items * ((d + 3) / 4 * 4) * 4 + 4);
        LAUNCH(((size_t)items * d + 255) / 256, 256, sparge_transpose(qMeans, items, queryT));
        // Scores in whole octets for the radix select (sparge_topk.cu), a column per key block otherwise.
        int radix = selection == 2, width = radix ? (nk + 7) / 8 * 8 : nk;
        float* scores = (float*)malloc((size_t)perLaunch * width * 4 + 4);
        u64* keys = (u64*)malloc((size_t)perLaunch * nk * 8 + 8);
        float* inverses = (float*)malloc((size_t)perLaunch * 4);
        alarm(300);  // a launch whose threads miss each other at a barrier ends here instead of hanging
        for (int first = 0; first < items; first += perLaunch) {
            int count = items - first < perLaunch ? items - first : perLaunch;
            if (mode != 0) {
                LAUNCH(((count + 31) / 32) * ((nk + 7) / 8), 256, sparge_scores(queryT, items, kMeans, kFlags, limits,
                    rows, nk, group, (long long)first, count, scale, radix, scores));
            }
            // One thread a block for the sorting kernel: its strided loops then do every thread's part.
            if (selection == 1 && mode != 0) LAUNCH(count, 1, sparge_select_rows_sorted(limits, rows, nk, (long long)first,
                count, mode, tau, keep, scores, bits));
            else if (radix) {
                LAUNCH((count + 31) / 32, 32, sparge_softmax_rows(limits, rows, (long long)first, count, scores, inverses));
                LAUNCH_THREADS(count, threads, sparge_topk_rows(limits, rows, nk, (long long)first, count, keep, scores,
                    inverses, cachedKeys, bits));
            }
            else LAUNCH((count + 127) / 128, 128, sparge_select_rows(limits, rows, nk, (long long)first, count, mode, tau,
                keep, scores, keys, bits));
        }
        LAUNCH(items, 64, sparge_mask_rules(bits, kFlags, qFlags, limits, diagonals, heads, rows, nk, group, causal, sink, keepDiagonal));
        fwrite(bits, 1, total, out);
    }
    fclose(out);
    return 0;
}
"""#
}

