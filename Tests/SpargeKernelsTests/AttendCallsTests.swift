import CSpargeKernels
@testable import SpargeKernels
import SpargeTestSupport
import XCTest

/// `BlockSparseAttention` fed as a ring feeds it: key blocks spread over several `attend` calls, in tables
/// that hold only some of them, with random masks, causal cuts, GQA and partial blocks — the one CPU driver
/// against Double and against its scalar twin driven the same way.
final class AttendCallsTests: XCTestCase {
    struct Case: CustomStringConvertible {
        var seed: UInt64
        var tokens: Int
        var dim: Int
        var queryHeads: Int
        var kvHeads: Int
        var causal: Bool
        var density: Double
        var calls: Int
        var description: String {
            "seed \(seed) N=\(tokens) D=\(dim) Hq=\(queryHeads) Hkv=\(kvHeads) causal=\(causal) density=\(density) calls=\(calls)"
        }
    }

    /// Shapes drawn afresh on every run (the seed is in the failure message, to replay it), with small blocks
    /// (32 × 16, tiles of 16) so that a few hundred tokens make many blocks, and a partial last block.
    static func freshCases() -> [Case] {
        var system = SystemRandomNumberGenerator()
        return (0..<6).map { _ in
            let hkv = Int.random(in: 1...2, using: &system)
            return Case(seed: UInt64.random(in: 1...UInt64.max, using: &system), tokens: Int.random(in: 1...300, using: &system),
                        dim: Int.random(in: 1...40, using: &system), queryHeads: hkv * Int.random(in: 1...3, using: &system),
                        kvHeads: hkv, causal: Bool.random(using: &system), density: Double.random(in: 0.1...0.9, using: &system),
                        calls: Int.random(in: 1...3, using: &system))
        }
    }

    func testPartialTablesOverSeveralCallsMatchDoubleAndTheScalarTwin() throws {
        for c in Self.freshCases() {
            let (q, k, v, config, mask, callOf) = inputs(c)
            let vector = try attendInCalls(q: q, k: k, v: v, mask: mask, config: config, callOf: callOf, calls: c.calls,
                                           backend: .vector)
            let scalar = try attendInCalls(q: q, k: k, v: v, mask: mask, config: config, callOf: callOf, calls: c.calls,
                                           backend: .scalar)
            let reference = doubleAttention(q: q, k: k, v: v, mask: mask, config: config)
            // Float products and an online softmax over at most 300 keys against Double: a few ulps per element
            // (the same bound as the vector tile against its twin); a block visited by the wrong tile, twice or
            // not at all changes whole rows, far above it.
            XCTAssertLessThanOrEqual(relativeL1(vector.output.data, reference.output.map(Float.init)), 1e-5, "\(c)")
            XCTAssertLessThanOrEqual(relativeL1(vector.output.data, scalar.output.data), 1e-5, "vector vs scalar \(c)")
            // Both banks are driven alike: every tile visits the same blocks.
            XCTAssertEqual(vector.stats, scalar.stats, "statistics \(c)")
            let unmasked = zip(vector.lse, reference.lse).filter { $0.1.isFinite }
            XCTAssertLessThanOrEqual(relativeL1(unmasked.map(\.0), unmasked.map { Float($0.1) }), 1e-5, "LSE \(c)")
        }
    }

    /// The driver on bf16 tiles (AMX's kernels with the tiles emulated in C) against its scalar twin driven
    /// the same way, on unrounded inputs: the driver's own work for bf16 tiles — K/V converted once per call
    /// (`PackedBlockTable`), the queries left for the tiles to round as they pack them, the tiles released
    /// by each worker — with the visits of the fp32 test above. The twin computes the tiles' definition, so
    /// they differ by fused vs separate roundings only (≤ 4e-8 in `Bf16TileTests`); 1e-6. Unrounded queries
    /// or keys on one side cost ~1e-3, a wrong visit O(1).
    func testEmulatedBf16TilesOverSeveralCallsMatchTheirScalarTwin() throws {
        for var c in Self.freshCases().prefix(4) {
            c.dim = [32, 64].randomElement()!
            try assertEmulatedBf16TilesMatchTheTwin(c)
        }
    }

    /// The blocks of a call are converted by the first worker that needs them (`PackedBlockTable`), the others
    /// waiting for it or asking for the next ones: the same bits on 1 and 7 threads (more threads than cores,
    /// so that workers are preempted while converting), on int8 tiles and on bf16 tiles (the AMX kernels,
    /// emulated), with every block on (each worker wants the same blocks at once) and with random masks, over
    /// several calls, K/V given as f32 and as bf16 words. A block used before it is filled, filled twice at
    /// once, or never, changes the bits or traps.
    func testBlocksConvertedByTheirFirstWorkerGiveTheSameBitsOnAnyThreads() throws {
        #if arch(x86_64)
        guard CPUISA.avx2.isSupported else { throw XCTSkip("the emulated bf16 tile kernels are compiled for AVX2") }
        for var c in Self.freshCases().prefix(3) {
            c.dim = [32, 64].randomElement()!
            c.tokens = max(c.tokens, 100)
            for density in [1.0, c.density] {
                c.density = density
                let (q, k, v, config, mask, callOf) = inputs(c)
                for tiles in ["int8", "bf16 emulated"] {
                    for format in [StorageFormat.f32, .bf16] {
                        func run(threads: Int) throws -> (output: Tensor3, lse: [Float], stats: AttentionStatistics) {
                            let attention = tiles == "int8"
                                ? try BlockSparseAttention(queries: q, mask: mask, kvHeads: k.heads, config: config,
                                                           seqLen: q.rows, threads: threads, precision: .int8)
                                : try BlockSparseAttention(queries: q, mask: mask, kvHeads: k.heads, config: config,
                                                           seqLen: q.rows, threads: threads,
                                                           bf16Kernels: sparge_bf16_emulated())
                            return feed(attention, k: k, v: v, config: config, callOf: callOf, calls: c.calls,
                                        format: format, threads: threads)
                        }
                        let (one, many) = (try run(threads: 1), try run(threads: 7))
                        let label = "\(c), \(tiles), K/V \(format)"
                        XCTAssertEqual(many.output.data.map(\.bitPattern), one.output.data.map(\.bitPattern), label)
                        XCTAssertEqual(many.lse.map(\.bitPattern), one.lse.map(\.bitPattern), label)
                        XCTAssertEqual(many.stats, one.stats, label)
                    }
                }
            }
        }
        #else
        throw XCTSkip("the emulated bf16 tile kernels are x86-64 code")
        #endif
    }

    /// One call holding every block ends each tile in its worker's slot (`TileBank.begin`/`end`): the same
    /// bits as the tiles that keep their state in the output and are finished in a pass of their own
    /// (`finishesWholeCalls` off), and the same counters — on this CPU's vector tiles, on the emulated bf16
    /// tiles with full 64-row tiles (whose accumulators otherwise live in the output's rows), and on the
    /// scalar twin; random masks with empty rows, causal cuts, GQA and partial blocks.
    func testOneCallThatHoldsEveryBlockEndsItsTilesWithTheSameBits() throws {
        defer { BlockSparseAttention.finishesWholeCalls = true }
        for var c in Self.freshCases().prefix(4) {
            c.calls = 1
            c.dim = [32, 64].randomElement()!
            let (q, k, v, config, mask, callOf) = inputs(c)
            let full = inputs(c, blockQ: 64, blockK: 32, tileQ: 64)
            let makers: [(String, () throws -> BlockSparseAttention)] = [
                ("vector", { try BlockSparseAttention(queries: q, mask: mask, kvHeads: k.heads, config: config,
                                                      seqLen: q.rows, threads: 2) }),
                ("scalar", { try BlockSparseAttention(queries: q, mask: mask, kvHeads: k.heads, config: config,
                                                      seqLen: q.rows, threads: 2, backend: .scalar) }),
                ("bf16 tiles", { try BlockSparseAttention(queries: full.q, mask: full.mask, kvHeads: k.heads, config: full.config,
                                                          seqLen: q.rows, threads: 2, bf16Kernels: sparge_bf16_emulated()) }),
            ]
            for (name, make) in makers {
                let isFull = name == "bf16 tiles"
                let (kk, vv, cfg, calls) = isFull ? (full.k, full.v, full.config, full.callOf) : (k, v, config, callOf)
                var results: [(output: Tensor3, lse: [Float], stats: AttentionStatistics)] = []
                for whole in [true, false] {
                    BlockSparseAttention.finishesWholeCalls = whole
                    results.append(feed(try make(), k: kk, v: vv, config: cfg, callOf: calls, calls: 1))
                }
                let differing = zip(results[0].output.data, results[1].output.data).filter { $0.bitPattern != $1.bitPattern }.count
                let differingLSE = zip(results[0].lse, results[1].lse).filter { $0.bitPattern != $1.bitPattern }.count
                XCTAssertEqual(differing, 0, "\(name): output elements differing, \(c)")
                XCTAssertEqual(differingLSE, 0, "\(name): LSE rows differing, \(c)")
                XCTAssertEqual(results[0].stats, results[1].stats, "\(name) statistics \(c)")
            }
        }
    }

    /// The same with full tiles of 64 rows (blocks 64 × 32, several hundred tokens, three calls), whose
    /// accumulator lives in the output's own rows between calls and in the worker's aligned copy while a
    /// worker visits (the 16-row tiles above keep theirs in a side buffer), and whose visits take several
    /// 32-key blocks at once: the twin within 1e-6, as above.
    func testEmulatedBf16FullTilesOverSeveralCallsMatchTheirScalarTwin() throws {
        XCTAssertGreaterThan(TileProducts.bf16Tiles.visitBlocks(config: SpargeConfig(blockQ: 64, blockK: 32, computeTileQ: 64)), 1)
        for var c in Self.freshCases().prefix(3) {
            (c.dim, c.tokens, c.calls) = ([32, 64].randomElement()!, Int.random(in: 200...400), 3)
            try assertEmulatedBf16TilesMatchTheTwin(c, blockQ: 64, blockK: 32, tileQ: 64)
        }
    }

    /// Visits that group several blocks, with several tiles to a query block (64 × 32 blocks, tiles of 16) and
    /// causal cuts, row by row against Double on inputs already rounded to bf16, where only P's rounding to bf16
    /// and fp32 sums remain: the twin groups as the tiles do, so this is what sees a grouping that takes in a
    /// block the tile's diagonal cuts (its later keys would then count for the earlier rows: those rows off by a
    /// share of their mass) or that loses one. Also the same visits, block for block, as the ungrouped fp32 driver.
    /// The worst row read 2.2e-3–3.8e-3 over six cases; with cut blocks grouped, 0.87 and more wherever a group
    /// then had a gap before a cut block (four of six cases; elsewhere the keys happened to be contiguous and the
    /// result right).
    func testGroupedBf16VisitsAgainstDoubleRowByRow() throws {
        #if arch(x86_64)
        guard CPUISA.avx2.isSupported else { throw XCTSkip("the emulated bf16 tile kernels are compiled for AVX2") }
        for var c in Self.freshCases().prefix(3) {
            (c.dim, c.tokens, c.causal) = ([32, 64].randomElement()!, Int.random(in: 150...400), true)
            var (q, k, v, config, mask, callOf) = inputs(c, blockQ: 64, blockK: 32, tileQ: 16)
            XCTAssertGreaterThan(TileProducts.bf16Tiles.visitBlocks(config: config), 1)
            for i in q.data.indices { q.data[i] = StorageFormat.bf16.rounded(q.data[i]) }
            for i in k.data.indices { (k.data[i], v.data[i]) = (StorageFormat.bf16.rounded(k.data[i]), StorageFormat.bf16.rounded(v.data[i])) }
            let tiles = try BlockSparseAttention(queries: q, mask: mask, kvHeads: k.heads, config: config, seqLen: q.rows,
                                                 threads: 2, bf16Kernels: sparge_bf16_emulated())
            let out = feed(tiles, k: k, v: v, config: config, callOf: callOf, calls: c.calls)
            let ungrouped = try attendInCalls(q: q, k: k, v: v, mask: mask, config: config, callOf: callOf, calls: c.calls,
                                              backend: .scalar)
            XCTAssertEqual(out.stats, ungrouped.stats, "visits \(c)")
            let reference = doubleAttention(q: q, k: k, v: v, mask: mask, config: config).output
            var worst = 0.0
            for row in 0..<(q.heads * q.rows) {
                let range = (row * q.dim)..<((row + 1) * q.dim)
                let scale = range.reduce(0.0) { $0 + abs(reference[$1]) }
                guard scale > 0 else { continue }
                worst = max(worst, range.reduce(0.0) { $0 + abs(Double(out.output.data[$1]) - reference[$1]) } / scale)
            }
            XCTAssertLessThanOrEqual(worst, 1e-2, "worst row against Double: \(c)")
        }
        #else
        throw XCTSkip("the emulated bf16 tile kernels are x86-64 only")
        #endif
    }

    /// Case `c` on the emulated bf16 tiles and on their scalar twin, both fed in the case's calls: outputs within
    /// 1e-6 (see the first emulated test), the same statistics.
    func assertEmulatedBf16TilesMatchTheTwin(_ c: Case, blockQ: Int = 32, blockK: Int = 16, tileQ: Int = 16) throws {
        #if arch(x86_64)
        guard CPUISA.avx2.isSupported else { throw XCTSkip("the emulated bf16 tile kernels are compiled for AVX2") }
        let (q, k, v, config, mask, callOf) = inputs(c, blockQ: blockQ, blockK: blockK, tileQ: tileQ)
        let tiles = try BlockSparseAttention(queries: q, mask: mask, kvHeads: k.heads, config: config, seqLen: q.rows,
                                             threads: 2, bf16Kernels: sparge_bf16_emulated())
        let twin = try BlockSparseAttention(queries: q, mask: mask, kvHeads: k.heads, config: config, seqLen: q.rows,
                                            threads: 2, backend: .scalarTwin(.amx), precision: .bf16)
        let out = feed(tiles, k: k, v: v, config: config, callOf: callOf, calls: c.calls)
        let expected = feed(twin, k: k, v: v, config: config, callOf: callOf, calls: c.calls)
        XCTAssertLessThanOrEqual(relativeL1(out.output.data, expected.output.data), 1e-6, "\(c)")
        XCTAssertEqual(out.stats, expected.stats, "statistics \(c)")
        // Both sides group the same blocks into one visit (the driver's choice), so the twin cannot see a
        // grouping that loses or repeats a block: Double can. bf16 inputs and P cost 2.6e-3–3.3e-3 here; a
        // group's last block dropped cost 1.3e-2–6.2e-1 over six cases.
        let reference = doubleAttention(q: q, k: k, v: v, mask: mask, config: config)
        XCTAssertLessThanOrEqual(relativeL1(out.output.data, reference.output.map(Float.init)), 1e-2, "against Double: \(c)")
        #else
        throw XCTSkip("the emulated bf16 tile kernels are x86-64 only")
        #endif
    }

    /// K/V stored in bf16 words (the ring's format, packed for the tiles straight from the words) give the bf16
    /// tiles the same bits as K/V stored in f32 (packed by rounding each float): both lay out bf16(x). On both
    /// bf16 sets' kernels with their instructions emulated, and on this CPU's own where it has them.
    func testBf16StoredBlocksPackAsFloatBlocks() throws {
        #if arch(x86_64)
        guard CPUISA.avx2.isSupported else { throw XCTSkip("the emulated bf16 kernels are compiled for AVX2") }
        var sets = [("AMX tiles emulated", sparge_bf16_emulated()), ("dot products emulated", sparge_bf16_dot_emulated())]
        for isa in CPUISA.allCases where isa.hasBf16Tiles && isa.isSupported { sets.append((isa.rawValue, isa.kernels.bf16)) }
        for var c in Self.freshCases().prefix(3) {
            c.dim = [32, 64].randomElement()!
            let (q, k, v, config, mask, callOf) = inputs(c, blockQ: 64, blockK: 32, tileQ: 64)
            for (name, kernels) in sets {
                func pass(_ format: StorageFormat) throws -> (output: Tensor3, lse: [Float], stats: AttentionStatistics) {
                    let attention = try BlockSparseAttention(queries: q, mask: mask, kvHeads: k.heads, config: config,
                                                             seqLen: q.rows, threads: 2, bf16Kernels: kernels)
                    return feed(attention, k: k, v: v, config: config, callOf: callOf, calls: c.calls, format: format)
                }
                let (fromFloats, fromWords) = (try pass(.f32), try pass(.bf16))
                XCTAssertEqual(fromWords.output.data.map(\.bitPattern), fromFloats.output.data.map(\.bitPattern), "\(name): \(c)")
                XCTAssertEqual(fromWords.lse.map(\.bitPattern), fromFloats.lse.map(\.bitPattern), "\(name): \(c)")
            }
        }
        #else
        throw XCTSkip("the emulated bf16 kernels are x86-64 only")
        #endif
    }

    /// The measurement stand-in (`Bf16TileStandIn.bookkeeping`, what `bench-kernel` times with
    /// SPARGE_BF16_TILES) on passes without causal cuts, where it is meant to be used: the driver visits
    /// exactly the blocks the scalar twin visits, the λ rule skips nothing (every block maximum 0, every p 1),
    /// and every row's LSE is finite (its sum counts the keys). A stand-in that lost visits, or a driver path
    /// it did not exercise, would show here before a device run.
    func testBookkeepingStandInVisitsWhatTheTwinVisits() throws {
        #if arch(x86_64)
        guard CPUISA.avx2.isSupported else { throw XCTSkip("the bf16 tile stand-ins are compiled for AVX2") }
        for (n, var c) in Self.freshCases().prefix(4).enumerated() {
            (c.dim, c.causal) = ([32, 64].randomElement()!, false)
            // Half the cases with 32-key blocks, which the driver groups into visits of several.
            let (q, k, v, config, mask, callOf) = n % 2 == 0 ? inputs(c) : inputs(c, blockQ: 64, blockK: 32, tileQ: 16)
            let standIn = try BlockSparseAttention(queries: q, mask: mask, kvHeads: k.heads, config: config, seqLen: q.rows,
                                                   threads: 2, bf16StandIn: .bookkeeping)
            let twin = try BlockSparseAttention(queries: q, mask: mask, kvHeads: k.heads, config: config, seqLen: q.rows,
                                                threads: 2, backend: .scalarTwin(.amx), precision: .bf16)
            let out = feed(standIn, k: k, v: v, config: config, callOf: callOf, calls: c.calls)
            let expected = feed(twin, k: k, v: v, config: config, callOf: callOf, calls: c.calls)
            XCTAssertEqual(out.stats.keyBlocksVisited, expected.stats.keyBlocksVisited, "visits \(c)")
            XCTAssertGreaterThan(out.stats.keyBlocksVisited, 0, "\(c)")
            XCTAssertEqual(out.stats.pvBlocksSkipped, 0, "\(c)")
            for (row, lse) in out.lse.enumerated() where expected.lse[row].isFinite {
                XCTAssertTrue(lse.isFinite, "row \(row) of \(c)")
            }
        }
        #else
        throw XCTSkip("the bf16 tile stand-ins are x86-64 only")
        #endif
    }

    /// The case's Q, K, V, configuration (blocks 32 × 16, tiles of 16), random mask, and the call that holds
    /// each key block (at random: a ring step holds an arbitrary subset).
    func inputs(_ c: Case, blockQ: Int = 32, blockK: Int = 16, tileQ: Int = 16)
        -> (q: Tensor3, k: Tensor3, v: Tensor3, config: SpargeConfig, mask: BlockMask, callOf: [Int]) {
        var g = SeededGenerator(seed: c.seed)
        let q = Tensor3.random(heads: c.queryHeads, rows: c.tokens, dim: c.dim, using: &g)
        let k = Tensor3.random(heads: c.kvHeads, rows: c.tokens, dim: c.dim, using: &g)
        let v = Tensor3.random(heads: c.kvHeads, rows: c.tokens, dim: c.dim, using: &g)
        let config = SpargeConfig(blockQ: blockQ, blockK: blockK, causal: c.causal, computeTileQ: tileQ)
        let mask = randomMask(heads: c.queryHeads, tokens: c.tokens, config: config, density: c.density, using: &g)
        let callOf = (0..<((c.tokens + blockK - 1) / blockK)).map { _ in Int.random(in: 0..<c.calls, using: &g) }
        return (q, k, v, config, mask, callOf)
    }

    /// A driver fed in `calls` calls, call `i` with the key blocks `b` where `callOf[b] == i`.
    func attendInCalls(q: Tensor3, k: Tensor3, v: Tensor3, mask: BlockMask, config: SpargeConfig, callOf: [Int],
                       calls: Int, backend: AttentionBackend) throws -> (output: Tensor3, lse: [Float], stats: AttentionStatistics) {
        let attention = try BlockSparseAttention(queries: q, mask: mask, kvHeads: k.heads, config: config, seqLen: q.rows,
                                                 threads: 2, backend: backend)
        return feed(attention, k: k, v: v, config: config, callOf: callOf, calls: calls)
    }

    /// Feeds `attention` in `calls` calls as `attendInCalls` does, and finishes it.
    /// Feeds `attention` the case's calls, K/V stored in `format` (f32 as given, or bf16 words as the ring
    /// holds them).
    func feed(_ attention: BlockSparseAttention, k: Tensor3, v: Tensor3, config: SpargeConfig, callOf: [Int],
              calls: Int, format: StorageFormat = .f32, threads: Int = 2)
        -> (output: Tensor3, lse: [Float], stats: AttentionStatistics) {
        let dim = k.dim, rows = k.rows
        var kBits = [UInt16](repeating: 0, count: format == .bf16 ? k.data.count : 0), vBits = kBits
        if format == .bf16 {  // the ring's own conversion
            _ = kBits.withUnsafeMutableBytes { format.convert(k.data, count: k.data.count, to: $0.baseAddress!) }
            _ = vBits.withUnsafeMutableBytes { format.convert(v.data, count: v.data.count, to: $0.baseAddress!) }
        }
        k.data.withUnsafeBytes { kf in
            v.data.withUnsafeBytes { vf in
                kBits.withUnsafeBytes { kb in
                    vBits.withUnsafeBytes { vb in
                        let (kp, vp) = format == .bf16 ? (kb.baseAddress!, vb.baseAddress!) : (kf.baseAddress!, vf.baseAddress!)
                        for call in 0..<calls {
                            var table = KeyValueBlockTable(kvHeads: k.heads, keyBlocks: callOf.count, blockK: config.blockK,
                                                           seqLen: rows, format: format)
                            for h in 0..<k.heads {
                                for (b, i) in callOf.enumerated() where i == call {
                                    let offset = ((h * rows + b * config.blockK) * dim) * format.byteSize
                                    table.set(kvHead: h, block: b, keys: kp + offset, values: vp + offset)
                                }
                            }
                            attention.attend(table, threads: threads)
                        }
                    }
                }
            }
        }
        let statistics = attention.attendStatistics
        let (output, lse) = attention.finish(threads: threads)
        return (output, lse, statistics)
    }
}
