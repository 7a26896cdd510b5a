import Foundation
@testable import SpargeKernels
import SpargeTestSupport
import XCTest

final class HostParallelismTests: XCTestCase {
    /// Every index runs once, and a bound width is kept: no more distinct threads than it allows (with width
    /// 1, only the calling thread). Unbound, the loop may use every core.
    func testEveryIndexRunsOnceOnAtMostTheBoundThreads() {
        for width in [1, 2, 3, nil] as [Int?] {
            for count in [0, 1, 5, 64, 1000] {
                let lock = NSLock()
                var runs = [Int](repeating: 0, count: count), threads = Set<ObjectIdentifier>()
                HostParallelism.$threads.withValue(width) {
                    HostParallelism.forEach(count) { i in
                        usleep(count <= 64 ? 200 : 0)  // long enough for the pool to hand out many threads
                        lock.lock()
                        runs[i] += 1
                        threads.insert(ObjectIdentifier(Thread.current))
                        lock.unlock()
                    }
                }
                XCTAssertEqual(runs, [Int](repeating: 1, count: count), "width \(String(describing: width)), \(count) items")
                if let width { XCTAssertLessThanOrEqual(threads.count, width, "\(count) items") }
            }
        }
    }

    /// At width 1 every phase stays on the calling thread: the process spends no more CPU time than the thread
    /// (within 20% and 5 ms of scheduling noise), where a phase run on two cores would spend up to twice it.
    /// Each phase is repeated so that it takes tens of milliseconds. (On one core this cannot fail.)
    func testPhasesStayOnTheCallingThreadAtWidthOne() throws {
        var g = SeededGenerator(seed: UInt64.random(in: 0...UInt64.max))
        let t = Tensor3.random(heads: 8, rows: 16384, dim: 64, using: &g)
        var rowsFirst = [Float](repeating: 0, count: t.data.count)  // [rows, heads, dim]: read as a strided view
        for h in 0..<t.heads { for r in 0..<t.rows { for i in 0..<t.dim { rowsFirst[(r * t.heads + h) * t.dim + i] = t[h, r, i] } } }
        let view = try Tensor(rowsFirst, shape: [t.rows, t.heads, t.dim]).permuted([1, 0, 2])
        let config = SpargeConfig(simThreshold: 0.3, selection: .cdf(0.9))
        let mean = KeyMean(summing: t, rows: 0..<t.rows).mean()
        let qs = BlockSummaries.summarize(t, rows: 0..<t.rows, firstBlock: 0, blockSize: 128, threshold: 0.3)
        let ks = BlockSummaries.summarize(t, rows: 0..<t.rows, firstBlock: 0, blockSize: 64, threshold: 0.3,
                                          subtracting: mean)
        let phases: [(String, () throws -> Void)] = [
            ("converting", { _ = Tensor.converting(t, to: .bf16) }),
            ("hostFloats of a strided view", { _ = try view.hostFloats() }),
            ("K mean", { _ = KeyMean(summing: t, rows: 0..<t.rows) }),
            ("summaries", { _ = BlockSummaries.summarize(t, rows: 0..<t.rows, firstBlock: 0, blockSize: 64,
                                                         threshold: 0.3, subtracting: mean) }),
            ("mask rows", { _ = try MaskPredictor.predictRows(querySummaries: qs, queryBlocks: Array(0..<qs.count),
                                                              keySummaries: ks, config: config, headDim: 64,
                                                              queryHeads: 8, kvHeads: 8, seqLen: t.rows) }),
        ]
        for (name, phase) in phases {
            let spent = try HostParallelism.$threads.withValue(1) { try cpuSeconds { for _ in 0..<5 { try phase() } } }
            XCTAssertLessThanOrEqual(spent.process, 1.2 * spent.thread + 0.005,
                                     "\(name): \(spent.process) s of CPU for \(spent.thread) s on this thread")
        }
    }

    /// The K mean, the summaries and the mask rows are the same bits on one thread as on every core: the
    /// width only decides which thread computes an item.
    func testMaskPhasesGiveTheSameBitsAtAnyWidth() throws {
        var g = SeededGenerator(seed: UInt64.random(in: 0...UInt64.max))
        let q = Tensor3.blockStructured(heads: 2, rows: 777, dim: 64, using: &g)
        let k = Tensor3.blockStructured(heads: 1, rows: 777, dim: 64, using: &g)
        let config = SpargeConfig(simThreshold: 0.3, selection: .cdf(0.9))
        func phases() throws -> (mean: [Float], queries: BlockSummaries, keys: BlockSummaries, mask: BlockMask) {
            let mean = KeyMean(summing: k, rows: 0..<k.rows).mean()
            let qs = BlockSummaries.summarize(q, rows: 0..<q.rows, firstBlock: 0, blockSize: config.blockQ,
                                              threshold: config.simThreshold)
            let ks = BlockSummaries.summarize(k, rows: 0..<k.rows, firstBlock: 0, blockSize: config.blockK,
                                              threshold: config.simThreshold, subtracting: mean)
            let mask = try MaskPredictor.predictRows(querySummaries: qs, queryBlocks: Array(0..<qs.count), keySummaries: ks,
                                                     config: config, headDim: 64, queryHeads: 2, kvHeads: 1, seqLen: q.rows)
            return (mean, qs, ks, mask)
        }
        let everyCore = try phases()
        let one = try HostParallelism.$threads.withValue(1) { try phases() }
        XCTAssertEqual(one.mean.map(\.bitPattern), everyCore.mean.map(\.bitPattern))
        XCTAssertEqual(one.queries, everyCore.queries)
        XCTAssertEqual(one.keys, everyCore.keys)
        XCTAssertEqual(one.mask, everyCore.mask)
        XCTAssertTrue(everyCore.mask.computedCount > 0, "an empty mask would say nothing")
    }
}
