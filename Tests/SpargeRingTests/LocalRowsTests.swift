import SpargeTestSupport
import XCTest
@testable import SpargeRing
@testable import SpargeKernels

/// A rank whose bf16 tiles convert K/V to the ring's bf16 themselves keeps its own K/V in fp32 and converts
/// only the blocks it sends: its pass gives the bits of the pass on a converted copy, and what it sends is the
/// bytes that copy would send. (That bf16 tiles lay out the same bits from fp32 rows and from bf16 words is
/// `AttendCallsTests.testBf16StoredBlocksPackAsFloatBlocks`, on emulated tiles on any AVX2 CPU.)
final class LocalRowsTests: XCTestCase {
    /// Which engines borrow fp32 rows for which storage: bf16 storage on bf16 tiles only — the sets with
    /// them (AMX, AVX512-BF16) and D a multiple of 32. Tiles with fp32 products would round a borrowed block
    /// again at every visit (slower), f16 storage refuses values beyond ±65504, int8 quantizes what it is given.
    func testOnlyBf16TilesBorrowRowsForBf16Storage() {
        for isa in CPUISA.allCases {
            for precision in AttentionPrecision.allCases {
                for format in StorageFormat.allCases {
                    for d in [24, 32, 128] {
                        let engine = CPUAttentionEngine(isa: isa, precision: precision)
                        let expected = format == .bf16 && precision == .bf16 && isa.hasBf16Tiles && d % 32 == 0
                        XCTAssertEqual(engine.computesFromFloatRows(storedAs: format, headDim: d), expected,
                                       "\(isa), \(precision) on \(format) storage, D \(d)")
                    }
                }
            }
        }
    }

    /// The `Tensor3` entry and the `Tensor` entry on packed fp32 tensors (fp32 rows borrowed, converted by
    /// the tiles) against the `Tensor` entry on strided views of the same values (a bf16 copy made first for
    /// the ring; the summaries read fp32 in every case), bit for bit, on every set of this CPU with bf16 tiles (they pack fp32 rows with
    /// `sparge_pack_bf16_block`): fixed and fresh random shapes, a partial last block, GQA, causal and not.
    /// Values spread over 2⁻¹²…2¹² so that a rounding done differently shows.
    func testBorrowedRowsGiveTheConvertedCopysBits() throws {
        let borrowing = CPUISA.allCases.filter {
            $0.isSupported && CPUAttentionEngine(isa: $0, precision: .bf16).computesFromFloatRows(storedAs: .bf16, headDim: 32)
        }
        guard !borrowing.isEmpty else {
            throw XCTSkip("no bf16 tiles on this CPU (\(CPUISA.detected.rawValue)): no rank borrows fp32 rows here")
        }
        var system = SystemRandomNumberGenerator()
        // Fresh lengths from 600 tokens: a causal mask of a few query blocks can keep every block it may (one
        // draw of 454 tokens did; 1 draw in 150 between 400 and 900, none of 150 from 600 to 1200).
        let fresh = (seed: UInt64.random(in: 10...UInt64.max, using: &system),
                     n: Int.random(in: 600...1200, using: &system), causal: Bool.random(using: &system))
        for (seed, n, causal) in [(UInt64(1), 450, true), (2, 333, false), fresh] {
            var g = SeededGenerator(seed: seed)
            let q = Tensor3.blockStructured(heads: 4, rows: n, dim: 32, using: &g)
            var k = Tensor3.blockStructured(heads: 2, rows: n, dim: 32, using: &g)
            var v = Tensor3.random(heads: 2, rows: n, dim: 32, using: &g)
            for i in k.data.indices { k.data[i] *= pow(2, Float(Int.random(in: -12...12, using: &g))) }
            for i in v.data.indices { v.data[i] *= pow(2, Float(Int.random(in: -12...12, using: &g))) }
            // θ = −1: every block self-similar, so TopK decides (the spread values would make none self-similar).
            let config = SpargeConfig(simThreshold: -1, selection: .topK(0.5), causal: causal)
            let layout = try ShardLayout(seqLen: n, ranks: 1, config: config)
            for isa in borrowing {
                let engine = CPUAttentionEngine(isa: isa, precision: .bf16)
                let label = "\(isa), seed \(seed), N \(n), causal \(causal)"
                let borrowed = try ShardedAttention.forward(q: q, k: k, v: v, layout: layout, config: config,
                                                            communicator: SingleProcessCommunicator(), threads: 2,
                                                            engine: engine, kvFormat: .bf16)
                // Strided views are converted to a bf16 copy for the ring: what the borrowed rows must equal.
                let (ks, vs) = (try Self.stridedView(of: k), try Self.stridedView(of: v))
                let copied = try ShardedAttention.forward(q: Tensor(q), k: ks, v: vs, layout: layout,
                                                          config: config, communicator: SingleProcessCommunicator(),
                                                          threads: 2, engine: engine, kvFormat: .bf16)
                let viaTensor = try ShardedAttention.forward(q: Tensor(q), k: Tensor(k), v: Tensor(v), layout: layout,
                                                             config: config, communicator: SingleProcessCommunicator(),
                                                             threads: 2, engine: engine, kvFormat: .bf16)
                XCTAssertEqual(viaTensor.output.data.map(\.bitPattern), copied.output.data.map(\.bitPattern),
                               "\(label): the Tensor entry's borrowed rows")
                XCTAssertEqual(borrowed.mask, copied.mask, label)
                XCTAssertLessThan(borrowed.statistics.mask.density, 1, "\(label): the mask must be sparse")
                XCTAssertEqual(borrowed.output.data.map(\.bitPattern), copied.output.data.map(\.bitPattern), label)
                XCTAssertEqual(borrowed.lse.map(\.bitPattern), copied.lse.map(\.bitPattern), label)
            }
        }
    }

    /// What a rank sends from borrowed fp32 rows is byte for byte what it sends from a bf16 copy: every block
    /// of two kv heads of a sequence with a partial last block, in an order unlike the tensor's, with values
    /// at bf16's rounding ties, NaN, ±∞ and subnormals among them.
    func testPackedPayloadFromBorrowedRowsEqualsTheCopys() throws {
        let (n, d, heads) = (200, 16, 2)
        var g = SeededGenerator(seed: UInt64.random(in: 0...UInt64.max))
        var k = Tensor3.random(heads: heads, rows: n, dim: d, using: &g)
        let v = Tensor3.random(heads: heads, rows: n, dim: d, using: &g)
        let specials: [Float] = [.nan, .infinity, -.infinity, 0x1p-130, -0x1p-149, Float(bitPattern: 0x3F80_8000),
                                 Float(bitPattern: 0x3F81_8000), -0.0]
        for (i, x) in specials.enumerated() { k.data[i * 37] = x }
        let config = SpargeConfig(simThreshold: 0.3, selection: .topK(0.5))
        let layout = try ShardLayout(seqLen: n, ranks: 1, config: config)
        let payload = PayloadFormat.storage(.bf16, headDim: d)
        var entries = [PayloadEntry](), offset = 0
        for block in (0..<layout.keyBlockCount).reversed() {
            for head in 0..<heads {
                let rows = min(config.blockK, n - block * config.blockK)
                entries.append(PayloadEntry(kvHead: head, block: block, rows: rows, offset: offset))
                offset += payload.blockBytes(rows: rows)
            }
        }
        func sent(_ local: LocalBlocks) throws -> [UInt8] {
            let attention = try BlockSparseAttention(queries: Tensor3(heads: heads, rows: n, dim: d, repeating: 0),
                                                     mask: BlockMask.full(heads: heads, keyBlocks: layout.keyBlockCount,
                                                                          queryBlocks: layout.queryBlocks(rank: 0)),
                                                     kvHeads: heads, config: config, seqLen: n)
            let store = HostRingStore(local: local, tokenRanges: [0..<n], attention: attention, kvHeads: heads,
                                      layout: layout, headDim: d)
            try store.holdLocal(ownerBlocks: [0..<layout.keyBlockCount])
            return Array(try store.pack(entries, byteCount: offset))
        }
        let borrowed = try LocalBlocks(keys: k, values: v, format: .bf16, roundedByAttention: true)
        let copied = try LocalBlocks(keys: k, values: v, format: .bf16)
        XCTAssertEqual(borrowed.rowFormat, .f32)
        XCTAssertEqual(copied.rowFormat, .bf16)
        XCTAssertEqual(try HostParallelism.$threads.withValue(2) { try sent(borrowed) }, try sent(copied))
        // The Tensor entry's: packed fp32 tensors are borrowed where they lie; a strided view is converted.
        let (kt, vt) = (Tensor(k), Tensor(v))
        let tensors = try LocalBlocks(keys: kt, values: vt, format: .bf16, roundedByAttention: true)
        XCTAssertEqual(tensors.rowFormat, .f32)
        tensors.withPointers { keys, _ in XCTAssertEqual(keys, UnsafeRawPointer(kt.buffer.base + kt.offset * 4), "not borrowed") }
        XCTAssertEqual(try HostParallelism.$threads.withValue(2) { try sent(tensors) }, try sent(copied))
        // A view that starts past its buffer's first element (a batch item's): borrowed from its own start.
        let pair = try Tensor(Tensor3(heads: heads, rows: n, dim: d, repeating: .nan).data + k.data, shape: [2, heads, n, d])
        let itemOne = try Tensor(buffer: pair.buffer, element: .f32, shape: [heads, n, d], offset: heads * n * d)
        let offsetRows = try LocalBlocks(keys: itemOne, values: vt, format: .bf16, roundedByAttention: true)
        offsetRows.withPointers { keys, _ in
            XCTAssertEqual(keys, UnsafeRawPointer(pair.buffer.base + heads * n * d * 4), "borrowed from the view's start")
        }
        XCTAssertEqual(try HostParallelism.$threads.withValue(2) { try sent(offsetRows) }, try sent(copied))
        let converted = try LocalBlocks(keys: try Self.stridedView(of: k), values: vt, format: .bf16, roundedByAttention: true)
        XCTAssertEqual(converted.rowFormat, .bf16, "a strided view is converted, not borrowed")
        XCTAssertEqual(try HostParallelism.$threads.withValue(2) { try sent(converted) }, try sent(copied))
    }

    /// `t`'s values as a strided `[heads, rows, dim]` view of an `[rows, heads, dim]` array (not packed).
    static func stridedView(of t: Tensor3) throws -> Tensor {
        var nhd = [Float](repeating: 0, count: t.data.count)
        for h in 0..<t.heads { for r in 0..<t.rows { for i in 0..<t.dim { nhd[(r * t.heads + h) * t.dim + i] = t[h, r, i] } } }
        return try Tensor(nhd, shape: [t.rows, t.heads, t.dim]).permuted([1, 0, 2])
    }
}
