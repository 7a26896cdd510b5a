import Foundation
import SpargeKernels
import SpargeTestSupport
import XCTest
@testable import SpargeCUDA

/// The resident pass's kernels (`ResidentKernelSource`) compiled as C++ for the host and compared with the
/// host code they stand in for, exactly: the K sums with `KeyMean`, the mask compaction with
/// `BlockMask(dense:)`, the conversions with `StorageFormat`, the block placement with the blocks it copies.
/// Exact because each kernel repeats the host's operations in the host's order (the sums) or is pure
/// integer and bit work (the rest): one differing bit is a failure.
final class ResidentKernelEmulationTests: XCTestCase {
    func testKeySumsEqualKeyMean() throws {
        let seed = UInt64.random(in: 0...UInt64.max)
        var rng = SeededGenerator(seed: seed)
        // Rows past several chunks with a partial last one, and a run shorter than one chunk.
        // K in f32, and in bf16 as a model hands it (the kernel widens each value; KeyMean sums the same Floats).
        for (heads, rows, dim, inBF16) in [(2, KeyMean.chunkRows * 3 + 77, 64, false), (3, 100, 40, false),
                                           (2, KeyMean.chunkRows + 5, 48, true)] {
            var k = Tensor3.random(heads: heads, rows: rows, dim: dim, scale: 2, shift: 0.7, using: &rng)
            if inBF16 { k.data = k.data.map { StorageFormat.bf16.rounded($0) } }
            var input = Data()
            input.append(ints: [heads, rows, dim, KeyMean.chunkRows, inBF16 ? 1 : 0])
            if inBF16 {
                k.data.map { StorageFormat.bf16Bits($0) }.withUnsafeBytes { input.append(contentsOf: $0) }
            } else {
                input.append(floats: k.data)
            }
            let out = try program().run("keysums", input)
            let sums = out.values(Double.self, count: heads * dim)
            let expected = KeyMean(summing: k, rows: 0..<rows).sums
            XCTAssertEqual(sums.map(\.bitPattern), expected.map(\.bitPattern), "H=\(heads) N=\(rows) D=\(dim) seed \(seed)")
        }
    }

    /// The grids the host launches depend on rows a thread block and a segment: the Swift constants must be
    /// the kernels' defines.
    func testLaunchShapesMatchTheKernelsDefines() {
        func define(_ name: String) -> Int? {
            ResidentKernelSource.source.split(separator: "\n").lazy
                .compactMap { line -> Int? in
                    let words = line.split(separator: " ")
                    return words.count >= 3 && words[0] == "#define" && words[1] == name ? Int(words[2]) : nil
                }.first
        }
        XCTAssertEqual(define("QUANT_ROWS"), ResidentKernelSource.quantizationRows)
        XCTAssertEqual(define("SEGMENT_ROWS"), ResidentKernelSource.segmentRows)
    }

    func testCompactionEqualsTheSparseMask() throws {
        let seed = UInt64.random(in: 0...UInt64.max)
        var rng = SeededGenerator(seed: seed)
        // Rows shorter and longer than a 64-block chunk, empty rows, full rows; row counts within one
        // 64-row segment of the device scan, across several, and ending on a segment's end.
        for (rows, nk) in [(37, 200), (5, 64), (9, 3), (12, 129), (130, 70), (128, 9), (193, 1)] {
            var bits = [UInt8](repeating: 0, count: rows * nk)
            for r in 0..<rows {
                let p = r % 4 == 0 ? 0.0 : (r % 4 == 1 ? 1.0 : Double.random(in: 0.01...0.5, using: &rng))
                for j in 0..<nk where Double.random(in: 0..<1, using: &rng) < p { bits[r * nk + j] = 1 }
            }
            var input = Data()
            input.append(ints: [rows, nk])
            input.append(contentsOf: bits)
            let out = try program().run("compact", input)
            let starts = out.values(Int64.self, count: rows + 1).map(Int.init)
            let keys = out.values(Int32.self, at: (rows + 1) * 8, count: starts.last!)
            let expected = BlockMask(heads: 1, keyBlocks: nk, queryBlocks: Array(0..<rows), dense: bits)
            XCTAssertEqual(starts, expected.rowStarts, "rows \(rows) × \(nk), seed \(seed)")
            XCTAssertEqual(keys, expected.keys, "rows \(rows) × \(nk), seed \(seed)")
        }
    }

    /// One rank's work list built on the device (`DeviceWorkList`) lays out the tiles the host's
    /// `AttentionPlan` does, each visiting the same part of the mask: every tile in exactly one CTA, a CTA's
    /// tiles consecutive ones of one query block, the tile table's rows the plan's, and CTAs in the order
    /// `arrange` puts them (longest list first; within one length the order is the atomics', so it is not
    /// compared). Masks are random (empty and full rows included), causal and not, with partial last blocks.
    func testDeviceWorkListLaysOutThePlansTiles() throws {
        let seed = UInt64.random(in: 0...UInt64.max)
        var rng = SeededGenerator(seed: seed)
        // (heads, seqLen, blockQ, tileQ, blockK, causal, tiles a CTA, scan threads)
        let cases = [(2, 1000, 128, 64, 64, false, 2, 8), (3, 1000, 128, 64, 128, true, 2, 4),
                     (1, 777, 64, 32, 64, true, 1, 16), (4, 2048, 128, 32, 128, true, 2, 3),
                     (2, 129, 128, 64, 64, false, 1, 1), (2, 300, 128, 64, 32, true, 2, 32),
                     (2, 720, 128, 32, 64, true, 2, 5)]  // a last block of 3 tiles: a CTA of 2, then one alone
        for (heads, seqLen, blockQ, tileQ, blockK, causal, perCTA, scanThreads) in cases {
            let config = SpargeConfig(blockQ: blockQ, blockK: blockK, causal: causal, computeTileQ: tileQ)
            let (nq, nk) = ((seqLen + blockQ - 1) / blockQ, (seqLen + blockK - 1) / blockK)
            var bits = [UInt8](repeating: 0, count: heads * nq * nk)
            for h in 0..<heads {
                for r in 0..<nq {
                    let p = r % 5 == 0 ? 0.0 : (r % 5 == 1 ? 1.0 : Double.random(in: 0.05...0.6, using: &rng))
                    let last = causal ? min(nk - 1, (min(seqLen, (r + 1) * blockQ) - 1) / blockK) : nk - 1
                    for j in 0...last where Double.random(in: 0..<1, using: &rng) < p { bits[(h * nq + r) * nk + j] = 1 }
                }
            }
            let mask = BlockMask(heads: heads, keyBlocks: nk, queryBlocks: Array(0..<nq), dense: bits)
            let plan = try AttentionPlan(mask: mask, queryHeads: heads, queryRows: seqLen, kvHeads: 1, config: config,
                                         seqLen: seqLen)
            let shape = DeviceWorkList.Shape(heads: Int32(heads), queryBlocks: Int32(nq), blockQ: Int32(blockQ),
                                             tileQ: Int32(tileQ), blockK: Int32(blockK), seqLen: Int32(seqLen),
                                             causal: causal ? 1 : 0, perCTA: Int32(perCTA), keyBlocks: Int32(nk))
            let (tiles, ctas) = DeviceWorkList.counts(shape)
            let context = "H=\(heads) N=\(seqLen) \(blockQ)/\(tileQ)×\(blockK) causal \(causal) \(perCTA) a CTA, seed \(seed)"
            XCTAssertEqual(tiles, plan.tiles.count, context)
            var input = Data()
            input.append(ints: [heads, nq, blockQ, tileQ, blockK, seqLen, causal ? 1 : 0, perCTA, nk, tiles, ctas, scanThreads,
                                0, 0, 0, 1])
            input.append(ints: mask.rowStarts)
            mask.keys.withUnsafeBytes { input.append(contentsOf: $0) }
            let out = try program().run("worklist", input)
            let table = out.values(Int32.self, count: tiles * 4)
            let work = out.values(Int32.self, at: tiles * 16, count: ctas * perCTA * 4)

            // The plan's tiles by the device's numbering: head by head, block by block.
            let perBlock = blockQ / tileQ, tilesPerHead = tiles / heads
            var expected: [Int: AttentionPlan.Tile] = [:]
            for tile in plan.tiles {
                expected[tile.head * tilesPerHead + tile.localRow / blockQ * perBlock + tile.localRow % blockQ / tileQ] = tile
            }
            XCTAssertEqual(expected.count, tiles, context)
            for (i, tile) in expected {
                XCTAssertEqual(Array(table[(4 * i)..<(4 * i + 4)]), [tile.head, tile.localRow, tile.rowCount, tile.queryStart].map(Int32.init),
                               "table row \(i), " + context)
            }
            var seen = Set<Int32>()
            var previousLongest = Int32.max
            for c in 0..<ctas {
                let entries = (0..<perCTA).map { Array(work[(4 * (c * perCTA + $0))..<(4 * (c * perCTA + $0) + 4)]) }
                let present = entries.filter { $0[0] >= 0 }
                // A CTA's missing partner (past a partial last block) is an empty entry after its tiles.
                XCTAssertEqual(Array(entries.dropFirst(present.count)), [[Int32]](repeating: [-1, 0, 0, 0], count: perCTA - present.count),
                               "CTA \(c)'s entries, " + context)
                guard !present.isEmpty else { XCTFail("CTA \(c) has no tile, " + context); continue }
                XCTAssertEqual(present.map { $0[0] }, (0..<Int32(present.count)).map { present[0][0] + $0 }, "CTA \(c), " + context)
                let blocks = Set(present.compactMap { expected[Int($0[0])].map { [$0.head, $0.localRow / blockQ] } })
                XCTAssertEqual(blocks.count, 1, "CTA \(c)'s tiles are of one block of one head, " + context)
                for e in present {
                    XCTAssertTrue(seen.insert(e[0]).inserted, "tile \(e[0]) twice, " + context)
                    let visits = try XCTUnwrap(expected[Int(e[0])], "tile \(e[0]) is not the plan's, " + context).visits
                    XCTAssertEqual([e[1], e[2], e[3]], [Int32(visits.lowerBound), Int32(visits.count), 0], "tile \(e[0])'s list, " + context)
                }
                let longest = present.map { $0[2] }.max()!
                XCTAssertLessThanOrEqual(longest, previousLongest, "CTA \(c) is out of the longest-first order, " + context)
                previousLongest = longest
            }
            XCTAssertEqual(seen.count, tiles, context)
        }
    }

    func testConversionsEqualTheStorageFormats() throws {
        let seed = UInt64.random(in: 0...UInt64.max)
        var rng = SeededGenerator(seed: seed)
        // Ordinary values, halfway cases of both 16-bit types, f16 subnormals, f16's edge (65504 fits,
        // 65520 rounds to ∞), zeros of both signs, infinities.
        var values = (0..<4000).map { _ in Float.random(in: -3...3, using: &rng) * Float(pow(2.0, Double(Int.random(in: -30...17, using: &rng)))) }
        values += [0, -0, 1 + 1.0 / 256, 1 + 3.0 / 512, 1 + 1.0 / 2048, 65504, 65519.9, 65520, -70000, 6e-8, 3e-5,
                   .infinity, -.infinity, Float(bitPattern: 0x3380_0000), Float(bitPattern: 0x3880_1000)]
        for format in [StorageFormat.bf16, .f16, .f32] {
            var input = Data()
            input.append(ints: [values.count, Int(ResidentKernelSource.code(of: format))])
            input.append(floats: values)
            let out = try program().run("convert", input)
            var expected = [UInt8](repeating: 0, count: values.count * format.byteSize)
            let fits = values.withUnsafeBufferPointer { format.convert($0.baseAddress!, count: values.count, to: &expected) }
            XCTAssertEqual(Array(out.prefix(expected.count)), expected, "\(format.rawValue), seed \(seed)")
            XCTAssertEqual(out.last == 1, !fits, "overflow flag, \(format.rawValue)")
            // Back to f32: the host's widening, bit for bit.
            var back = Data()
            back.append(ints: [values.count, Int(ResidentKernelSource.code(of: format))])
            back.append(contentsOf: expected)
            let widened = try program().run("widen", back).values(Float.self, count: values.count)
            var hostWidened = [Float](repeating: 0, count: values.count)
            format.widen(expected, count: values.count, to: &hostWidened)
            XCTAssertEqual(widened.map(\.bitPattern), hostWidened.map(\.bitPattern), "widen \(format.rawValue)")
        }
    }

    /// The packed entry (four elements a thread, wide accesses where aligned) converts as the host does, on
    /// an aligned and a misaligned source and a count that is not a multiple of four, and its range flag says
    /// what `sparge_exceeds_half` says of the stored values.
    func testPackedEntryEqualsTheStorageFormats() throws {
        let seed = UInt64.random(in: 0...UInt64.max)
        var rng = SeededGenerator(seed: seed)
        let ordinary = (0..<4001).map { _ in Float.random(in: -3...3, using: &rng) * Float(pow(2.0, Double(Int.random(in: -30...12, using: &rng)))) }
        for (values, label) in [(ordinary, "in range"), (ordinary + [65520, 1e6], "two beyond fp16")] {
            for format in [StorageFormat.bf16, .f16, .f32] {
                var expected = [UInt8](repeating: 0, count: values.count * format.byteSize)
                let fits = values.withUnsafeBufferPointer { format.convert($0.baseAddress!, count: values.count, to: &expected) }
                var stored = [Float](repeating: 0, count: values.count)
                format.widen(expected, count: values.count, to: &stored)
                let beyond = stored.contains { $0.isFinite && abs($0) >= 65520 }
                XCTAssertEqual(beyond, format != .f16 && label != "in range", "the inputs must test the flag both ways")
                for misaligned in [0, 1] {
                    var input = Data()
                    input.append(ints: [values.count, Int(ResidentKernelSource.code(of: format)), misaligned])
                    input.append(floats: values)
                    let out = try program().run("packed", input)
                    let context = "\(format.rawValue), \(label), misaligned \(misaligned), seed \(seed)"
                    XCTAssertEqual(Array(out.prefix(expected.count)), expected, context)
                    XCTAssertEqual(out[expected.count] == 1, !fits, "overflow flag, " + context)
                    XCTAssertEqual(out[expected.count + 1] == 1, beyond, "range flag, " + context)
                }
            }
        }
    }

    func testOutputLeavesIntoAStridedTensor() throws {
        let seed = UInt64.random(in: 0...UInt64.max)
        var rng = SeededGenerator(seed: seed)
        let (heads, rows, dim) = (3, 7, 5)
        let values = (0..<(heads * rows * dim)).map { _ in Float.random(in: -3...3, using: &rng) }
        // The destination is an [rows, heads, dim] bf16 array seen as [heads, rows, dim] (NHD), so the
        // kernel's strided path writes it.
        var input = Data()
        input.append(ints: [heads, rows, dim])
        input.append(floats: values)
        let out = try program().run("leave", input).values(UInt16.self, count: values.count)
        for h in 0..<heads {
            for r in 0..<rows {
                for d in 0..<dim {
                    let expected = StorageFormat.bf16Bits(values[(h * rows + r) * dim + d])
                    XCTAssertEqual(out[(r * heads + h) * dim + d], expected, "[\(h), \(r), \(d)], seed \(seed)")
                }
            }
        }
    }

    func testPlacementPutsEveryBlockAtItsRows() throws {
        let seed = UInt64.random(in: 0...UInt64.max)
        var rng = SeededGenerator(seed: seed)
        let (kvHeads, blockK, dim, keyBlocks) = (2, 8, 16, 5)
        let kvRows = keyBlocks * blockK
        // A payload of bf16 blocks (the last one partial, 3 rows), placed as bf16 K and fp16 V.
        let blocks = [(0, 4, 3), (1, 0, 8), (1, 2, 8), (0, 1, 8)]  // (kv head, block, rows)
        var payload: [UInt16] = []
        var offsets: [Int] = []
        for (_, _, rows) in blocks {
            offsets.append(payload.count * 2)
            for _ in 0..<(2 * rows * dim) { payload.append(Float.random(in: -4...4, using: &rng).bitPattern.bf16Rounded) }
        }
        func placed(keys: Bool) throws -> (k: [UInt16], v: [UInt16]) {
            var input = Data()
            input.append(ints: [kvHeads, kvRows, dim, blocks.count, keys ? 1 : 0])
            for (i, (g, j, rows)) in blocks.enumerated() { input.append(ints: [g, j * blockK, rows, offsets[i]]) }
            input.append(ints: [payload.count])
            payload.withUnsafeBytes { input.append(contentsOf: $0) }
            let out = try program().run("place", input)
            let k = out.values(UInt16.self, count: kvHeads * kvRows * dim)
            return (k, out.values(UInt16.self, at: k.count * 2, count: kvHeads * kvRows * dim))
        }
        let (k, v) = try placed(keys: true)
        var expectedK = [UInt16](repeating: 0, count: k.count), expectedV = expectedK
        for (i, (g, j, rows)) in blocks.enumerated() {
            let base = offsets[i] / 2
            for e in 0..<(rows * dim) {
                let at = (g * kvRows + j * blockK) * dim + e
                expectedK[at] = payload[base + e]
                expectedV[at] = Float16(Float(bitPattern: UInt32(payload[base + rows * dim + e]) << 16)).bitPattern
            }
        }
        XCTAssertEqual(k, expectedK, "keys, seed \(seed)")
        XCTAssertEqual(v, expectedV, "values (bf16 payload to fp16), seed \(seed)")
        // With no K buffer (the kernel reads K in place) only V is placed.
        let valuesOnly = try placed(keys: false)
        XCTAssertEqual(valuesOnly.v, expectedV, "values without keys, seed \(seed)")
        XCTAssertEqual(valuesOnly.k, [UInt16](repeating: 0, count: k.count), "nothing written for keys, seed \(seed)")
    }

    private func program() throws -> HostKernelProgram {
        try HostKernelProgram.build(name: "resident",
                                    source: HostKernelProgram.prelude + ResidentKernelSource.source + Self.harness, defines: [:])
    }

    static let harness = #"""


int main(int argc, char** argv) {
    if (argc != 4) return 2;
    in_file = fopen(argv[2], "rb");
    FILE* out = fopen(argv[3], "wb");
    if (!in_file || !out) return 2;
    if (strcmp(argv[1], "keysums") == 0) {
        int heads = (int)take_int(), rows = (int)take_int(), dim = (int)take_int(), chunkRows = (int)take_int();
        int kType = (int)take_int();
        void* k = malloc((size_t)heads * rows * dim * 4); take(k, (size_t)heads * rows * dim * (kType ? 2 : 4));
        int chunks = (rows + chunkRows - 1) / chunkRows;
        double* partials = (double*)malloc((size_t)heads * chunks * dim * 8);
        double* sums = (double*)malloc((size_t)heads * dim * 8);
        LAUNCH((heads * chunks * dim + 63) / 64, 64, sparge_key_partials(k, kType, heads, rows, dim, chunkRows, partials));
        LAUNCH((heads * dim + 63) / 64, 64, sparge_key_total(partials, heads, chunks, dim, sums));
        fwrite(sums, 8, (size_t)heads * dim, out);
    } else if (strcmp(argv[1], "compact") == 0) {
        long long rows = take_int(); int nk = (int)take_int();
        unsigned char* bits = (unsigned char*)malloc(rows * nk + 1); take(bits, rows * nk);
        int chunks = (nk + 63) / 64;
        int* offsets = (int*)malloc(rows * chunks * 4 + 4);
        int* totals = (int*)malloc(rows * 4 + 4);
        LAUNCH((rows * chunks + 31) / 32, 32, sparge_chunk_counts(bits, rows, nk, offsets));
        LAUNCH((rows + 31) / 32, 32, sparge_row_offsets(offsets, rows, nk, totals));
        long long* segments = (long long*)malloc(((rows + 63) / 64) * 8 + 8);
        long long* starts = (long long*)malloc((rows + 1) * 8);
        LAUNCH(((rows + 63) / 64 + 31) / 32, 32, sparge_segment_sums(totals, rows, segments));
        LAUNCH(1, 1, sparge_segment_starts(segments, (rows + 63) / 64));
        LAUNCH((rows + 1 + 31) / 32, 32, sparge_row_starts(totals, segments, rows, starts));
        int* keys = (int*)malloc(starts[rows] * 4 + 4);
        LAUNCH((rows * chunks + 31) / 32, 32, sparge_compact(bits, rows, nk, offsets, starts, keys));
        fwrite(starts, 8, rows + 1, out);
        fwrite(keys, 4, starts[rows], out);
    } else if (strcmp(argv[1], "worklist") == 0) {
        WorkShape s;
        int* fields = &s.heads;
        for (int i = 0; i < 9; ++i) fields[i] = (int)take_int();
        int tiles = (int)take_int(), ctas = (int)take_int(), scanThreads = (int)take_int();
        int kept = (int)take_int(), split = (int)take_int(), parts = (int)take_int(), stepEntries = (int)take_int();
        long long rows = (long long)s.heads * s.queryBlocks;
        long long* starts = (long long*)malloc((rows + 1) * 8); take(starts, (rows + 1) * 8);
        int* keys = (int*)malloc(starts[rows] * 4 + 4); take(keys, starts[rows] * 4);
        int entryInts = ctas * s.perCTA * 4, splitInts = (kept + split * parts) * s.perCTA * 4;
        int* entries = (int*)malloc(entryInts * 4 + 4);
        int* work = (int*)malloc((entryInts > splitInts ? entryInts : splitInts) * 4 + 4);
        int* table = (int*)malloc(tiles * 16 + 4);
        memset(table, 0xff, tiles * 16);  // a tile the kernel does not write stays −1
        int* longest = (int*)malloc(ctas * 4 + 4);
        int* counts = (int*)calloc(s.keyBlocks + 1, 4);
        LAUNCH((ctas + 31) / 32, 32, sparge_work_items(s, starts, keys, entries, table, longest, counts));
        LAUNCH_THREADS(1, scanThreads, sparge_work_starts(counts, s.keyBlocks + 1));
        LAUNCH((ctas + 31) / 32, 32, sparge_work_place(entries, longest, ctas, s.perCTA, s.keyBlocks, counts, work));
        fwrite(table, 4, tiles * 4, out);
        fwrite(work, 4, entryInts, out);
        if (parts > 0) {
            LAUNCH_THREADS(1, (split + 31) / 32 * 32, sparge_work_split(work, kept, split, parts, s.perCTA, stepEntries));
            fwrite(work, 4, splitInts, out);
        }
    } else if (strcmp(argv[1], "merge") == 0) {
        // Split tiles' parts: the work list's split CTAs (kept + split·parts CTAs), the tile table, the parts'
        // states; out and lse over every row of the table's heads.
        int kept = (int)take_int(), split = (int)take_int(), parts = (int)take_int(), perCTA = (int)take_int();
        int tiles = (int)take_int(), rows = (int)take_int(), dim = (int)take_int(), tileRows = (int)take_int();
        int heads = (int)take_int(), shifted = (int)take_int();
        int workInts = (kept + split * parts) * perCTA * 4;
        int* work = (int*)malloc(workInts * 4 + 4); take(work, workInts * 4);
        int* table = (int*)malloc(tiles * 16 + 4); take(table, tiles * 16);
        long long slots = (long long)split * parts * perCTA;
        float* partialO = (float*)malloc(slots * tileRows * dim * 4 + 4); take(partialO, slots * tileRows * dim * 4);
        float* partialML = (float*)malloc(slots * tileRows * 8 + 4); take(partialML, slots * tileRows * 8);
        float* shifts = (float*)malloc((long long)heads * rows * 4 + 4); take(shifts, (long long)heads * rows * 4);
        float* o = (float*)malloc((long long)heads * rows * dim * 4 + 4);
        float* lse = (float*)malloc((long long)heads * rows * 4 + 4);
        for (long long i = 0; i < (long long)heads * rows * dim; ++i) o[i] = 1e30f;  // a row left unwritten shows
        for (long long i = 0; i < (long long)heads * rows; ++i) lse[i] = 1e30f;
        LAUNCH(split * perCTA, 4 * tileRows, sparge_merge_parts(work, kept, parts, perCTA, table, rows, dim, tileRows,
                                                                partialO, partialML, o, lse, shifted ? shifts : 0, 0.f));
        fwrite(o, 4, (long long)heads * rows * dim, out);
        fwrite(lse, 4, (long long)heads * rows, out);
    } else if (strcmp(argv[1], "convert") == 0 || strcmp(argv[1], "widen") == 0) {
        int widen = strcmp(argv[1], "widen") == 0;
        long long count = take_int(); int type = (int)take_int();
        int size = type == 0 ? 4 : 2;
        void* src = malloc(count * (widen ? size : 4) + 4); take(src, count * (widen ? size : 4));
        void* dst = malloc(count * (widen ? 4 : size) + 4);
        int overflow = 0;
        // One head of `count` rows of one element: packed strides when widening (the kernel's direct path),
        // a zero head stride when converting (its strided path), so that both paths are checked.
        if (widen) LAUNCH((count + 63) / 64, 64, sparge_enter(src, type, count, 1, 1, 1, (int)count, 1, dst, 0, &overflow));
        else LAUNCH((count + 63) / 64, 64, sparge_enter(src, 0, 0, 1, 1, 1, (int)count, 1, dst, type, &overflow));
        fwrite(dst, widen ? 4 : size, count, out);
        if (!widen) { unsigned char flag = overflow != 0; fwrite(&flag, 1, 1, out); }
    } else if (strcmp(argv[1], "packed") == 0) {
        long long count = take_int(); int type = (int)take_int(); int shift = (int)take_int();
        float* src = (float*)malloc(count * 4 + 32); take(src + shift, count * 4);
        int size = type == 0 ? 4 : 2;
        unsigned char* dst = (unsigned char*)malloc(count * size + 64);
        int overflow = 0, range = 0;
        LAUNCH(((count + 3) / 4 + 63) / 64, 64, sparge_enter_packed(src + shift, 0, count, dst + shift * size, type, &overflow, &range));
        fwrite(dst + shift * size, size, count, out);
        unsigned char flags[2] = { (unsigned char)(overflow != 0), (unsigned char)(range != 0) };
        fwrite(flags, 1, 2, out);
    } else if (strcmp(argv[1], "leave") == 0) {
        int heads = (int)take_int(), rows = (int)take_int(), dim = (int)take_int();
        long long count = (long long)heads * rows * dim;
        float* src = (float*)malloc(count * 4 + 4); take(src, count * 4);
        unsigned short* dst = (unsigned short*)calloc(count + 1, 2);
        int overflow = 0;
        LAUNCH((count + 63) / 64, 64, sparge_leave(src, heads, rows, dim, dst, 1, dim, (long long)heads * dim, 1, &overflow));
        fwrite(dst, 2, count, out);
    } else if (strcmp(argv[1], "place") == 0) {
        int kvHeads = (int)take_int(), kvRows = (int)take_int(), dim = (int)take_int(), n = (int)take_int();
        int withKeys = (int)take_int();
        long long meta[64][4];
        for (int i = 0; i < n; ++i) for (int f = 0; f < 4; ++f) meta[i][f] = take_int();
        long long words = take_int();
        unsigned short* payload = (unsigned short*)malloc(words * 2 + 2); take(payload, words * 2);
        size_t elements = (size_t)kvHeads * kvRows * dim;
        unsigned short* k = (unsigned short*)calloc(elements + 1, 2);
        unsigned short* v = (unsigned short*)calloc(elements + 1, 2);
        BlockPlacement* table = (BlockPlacement*)malloc(sizeof(BlockPlacement) * n);
        for (int i = 0; i < n; ++i) {
            unsigned short* keys = payload + meta[i][3] / 2;
            table[i].keys = (u64)keys;
            table[i].values = (u64)(keys + meta[i][2] * dim);
            table[i].kvHead = (int)meta[i][0]; table[i].firstRow = (int)meta[i][1]; table[i].rows = (int)meta[i][2];
        }
        int overflow = 0;
        LAUNCH(n, 32, sparge_place_blocks(table, 1, dim, kvRows, withKeys ? k : 0, 1, v, 2, &overflow));
        fwrite(k, 2, elements, out);
        fwrite(v, 2, elements, out);
    } else if (strcmp(argv[1], "qrows") == 0) {
        long long rows = take_int(); int heads = (int)take_int(), dim = (int)take_int(), group = (int)take_int();
        int qType = (int)take_int();
        float softmaxScale; take(&softmaxScale, 4);
        void* q = malloc(heads * rows * dim * 4 + 16); take(q, heads * rows * dim * (qType ? 2 : 4));
        float* mean = (float*)malloc((size_t)(heads / group) * dim * 4 + 4); take(mean, (size_t)(heads / group) * dim * 4);
        signed char* n = (signed char*)malloc(heads * rows * dim + 1);
        float* scales = (float*)malloc(heads * rows * 4 + 4);
        float* shifts = (float*)malloc(heads * rows * 4 + 4);
        // One thread a block (the kernel meets at barriers: its strided loops then do every thread's part).
        LAUNCH((heads * rows + 31) / 32, 1, sparge_query_row_scales(q, qType, rows, heads, dim, group, mean, softmaxScale, scales, shifts));
        long long quads = heads * rows * dim / 4;
        LAUNCH((quads + 255) / 256, 256, sparge_query_quantize(q, qType, quads, dim, scales, n));
        fwrite(n, 1, heads * rows * dim, out);
        fwrite(scales, 4, heads * rows, out);
        fwrite(shifts, 4, heads * rows, out);
    } else if (strcmp(argv[1], "qkeys") == 0) {
        // K [heads][rows][dim] in srcType (0 f32, 1 bf16), every block placed from where it lies.
        int heads = (int)take_int(), rows = (int)take_int(), kvRows = (int)take_int(), dim = (int)take_int(), blockK = (int)take_int();
        int srcType = (int)take_int();
        size_t elementBytes = srcType == 0 ? 4 : 2;
        unsigned char* k = (unsigned char*)malloc((size_t)heads * rows * dim * elementBytes + 4);
        take(k, (size_t)heads * rows * dim * elementBytes);
        float* mean = (float*)malloc((size_t)heads * dim * 4); take(mean, (size_t)heads * dim * 4);
        int blocks = kvRows / blockK, count = heads * ((rows + blockK - 1) / blockK);
        BlockPlacement* table = (BlockPlacement*)malloc((size_t)count * sizeof(BlockPlacement));
        int p = 0;
        for (int h = 0; h < heads; ++h)
            for (int first = 0; first < rows; first += blockK, ++p) {
                table[p].keys = (u64)(k + ((size_t)h * rows + first) * dim * elementBytes);
                table[p].values = 0;
                table[p].kvHead = h; table[p].firstRow = first; table[p].rows = min(blockK, rows - first); table[p].unused = 0;
            }
        signed char* n = (signed char*)malloc((size_t)heads * kvRows * dim + 1);
        memset(n, 0x55, (size_t)heads * kvRows * dim);  // blocks past the rows are not placed: left as they were
        float* scales = (float*)malloc((size_t)heads * blocks * 4 + 4);
        for (int i = 0; i < heads * blocks; ++i) scales[i] = -1.f;
        float* rowMax = (float*)malloc((size_t)count * blockK * 4 + 4);
        float* blockScale = (float*)malloc((size_t)count * 4 + 4);
        LAUNCH((count * blockK + 63) / 64, 64, sparge_key_row_max(table, count, srcType, dim, blockK, mean, rowMax));
        LAUNCH((count + 31) / 32, 32, sparge_key_block_scale(table, count, blockK, kvRows, rowMax, blockScale, scales));
        long long quads = (long long)count * blockK * dim / 4;
        LAUNCH((quads + 255) / 256, 256, sparge_key_quantize(table, count, srcType, dim, blockK, kvRows, mean, blockScale, n));
        fwrite(n, 1, (size_t)heads * kvRows * dim, out);
        fwrite(scales, 4, (size_t)heads * blocks, out);
    } else if (strcmp(argv[1], "qvalues") == 0) {
        int heads = (int)take_int(), rows = (int)take_int(), kvRows = (int)take_int(), dim = (int)take_int();
        float* v = (float*)malloc((size_t)heads * rows * dim * 4 + 4); take(v, (size_t)heads * rows * dim * 4);
        unsigned char* transposed = (unsigned char*)malloc((size_t)heads * dim * kvRows + 1);
        float* scales = (float*)malloc((size_t)heads * dim * 4 + 4);
        LAUNCH((heads * dim + 31) / 32, 32, sparge_quantize_values_e4m3(v, heads, rows, kvRows, dim, transposed, scales));
        fwrite(transposed, 1, (size_t)heads * dim * kvRows, out);
        fwrite(scales, 4, (size_t)heads * dim, out);
    }
    fclose(out);
    return 0;
}
"""#
}

private extension UInt32 {
    /// The bf16 word nearest this f32 bit pattern (ties to even; inputs here are finite).
    var bf16Rounded: UInt16 { UInt16(truncatingIfNeeded: (self &+ 0x7fff &+ ((self >> 16) & 1)) >> 16) }
}
