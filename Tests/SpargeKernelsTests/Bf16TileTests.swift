import Foundation
import CSpargeKernels
import SpargeKernels
import SpargeTestSupport
import XCTest

/// `AttentionPrecision.bf16` on bf16 products (AMX tiles, AVX512-BF16 dot products): the kernels' C twin, the
/// tile on both sets' kernels with their instructions emulated in C (their loops, tails and layouts, on any
/// x86-64 with AVX2), the scalar twin against Double, and the real instructions where this CPU has them.
final class Bf16TileTests: XCTestCase {
    struct Shape: CustomStringConvertible {
        var seed: UInt64
        var dim: Int
        var keys: Int
        var rows: Int
        var queryStart: Int
        var causal: Bool
        var blockK: Int
        var tileQ: Int
        var description: String {
            "seed \(seed) D \(dim) keys \(keys) rows \(rows) from \(queryStart) causal \(causal) blockK \(blockK) tile \(tileQ)"
        }
    }

    /// Fresh shapes: D a multiple of 32 (what the tiles take), key counts with every tail of the 32-key
    /// padding, partial query tiles, causal diagonals inside the tile.
    func randomShapes(_ count: Int) -> [Shape] {
        var system = SystemRandomNumberGenerator()
        return (0..<count).map { _ in
            let blockK = Bool.random(using: &system) ? 64 : 128, tileQ = Bool.random(using: &system) ? 64 : 128
            let keys = Int.random(in: 1...300, using: &system)
            return Shape(seed: UInt64.random(in: 1...UInt64.max, using: &system), dim: [32, 64, 128].randomElement(using: &system)!,
                         keys: keys, rows: Int.random(in: 1...tileQ, using: &system),
                         queryStart: Int.random(in: 0..<keys, using: &system), causal: Bool.random(using: &system),
                         blockK: blockK, tileQ: tileQ)
        }
    }

    /// One tile over every key block of `shape`, on `kernels` (the bf16 tile kernels), and its scalar twin on
    /// the same rounded inputs: (vector output, twin output).
    func tileAndTwin(_ shape: Shape, isa: CPUISA, kernels: sparge_bf16_tile_kernels?) -> ([Float], [Float]) {
        var g = SeededGenerator(seed: shape.seed)
        let d = shape.dim, bf16 = StorageFormat.bf16
        let q = (0..<(shape.rows * d)).map { _ in bf16.rounded(g.normal()) }
        let k = (0..<(shape.keys * d)).map { _ in bf16.rounded(g.normal()) }
        let v = (0..<(shape.keys * d)).map { _ in bf16.rounded(g.normal()) }
        let config = SpargeConfig(blockQ: shape.tileQ, blockK: shape.blockK, causal: shape.causal, computeTileQ: shape.tileQ)
        let arena = AttentionTileArena(tiles: 1, headDim: d, config: config, isa: isa, products: .bf16Tiles,
                                       bf16Kernels: kernels)
        let tile = arena[0]
        let twin = ScalarAttentionTile(headDim: d, config: config, precision: .bf16, products: .bf16Tiles)
        let block = Bf16KeyValueBlock(blockK: shape.blockK, headDim: d)
        var out = [Float](repeating: 0, count: shape.rows * d), twinOut = out
        var lse = [Float](repeating: 0, count: shape.rows), twinLSE = lse
        tile.begin(queries: q, rowCount: shape.rows, queryStart: shape.queryStart)
        twin.begin(queries: q, rowCount: shape.rows, queryStart: shape.queryStart)
        for start in stride(from: 0, to: shape.keys, by: shape.blockK) {
            let n = min(shape.blockK, shape.keys - start)
            k.withUnsafeBufferPointer { kb in
                v.withUnsafeBufferPointer { vb in
                    let (kr, vr) = (kb.baseAddress! + start * d, vb.baseAddress! + start * d)
                    block.fill(keys: kr, values: vr, rows: n)
                    tile.visit(bf16: block, keyStart: start)
                    twin.visit(keys: kr, values: vr, keyCount: n, keyStart: start)
                }
            }
        }
        tile.finish(output: &out, lse: &lse)
        twin.finish(output: &twinOut, lse: &twinLSE)
        return (out, twinOut)
    }

    /// The tile on emulated instructions against its twin: the twin computes the kernels' definition in their
    /// order (scores summed along D on the unscaled queries, the kernels' exp2 recipe), so P is the same bits
    /// and only α (the C library's exp2 in the twin) and fused vs separate roundings of the sums differ:
    /// measured ≤ 4e-8 relative L1 over 300 shapes; 1e-6. A wrong lane, key, layout or mask costs O(1).
    static let emulatedTolerance = 1e-6
    /// The real instructions may sum a product pair in another order than the emulation (VDPBF16PS adds the
    /// high pair first): a score's last bit can then move a p across a bf16 rounding boundary, one bf16 step
    /// (≤ 2⁻⁸ for p ≤ 1) on that p, which in a tile of a few rows dominated by that key is up to ~1e-3 of its
    /// output; 5e-3. Measured on Zen 5's VDPBF16PS: ≤ 2.3e-5 over 300 shapes (median 4.5e-8); the loops
    /// themselves are held to 1e-6 by the emulated test, so this bound only has to catch the instruction
    /// wrappers' operand mistakes, which cost O(1).
    static let hardwareTolerance = 5e-3

    #if arch(x86_64)
    /// Both bf16 sets with their instructions emulated: AMX's tiles, AVX512-BF16's dot products.
    static let emulatedSets = [("AMX tiles", sparge_bf16_emulated()), ("AVX512-BF16 dot products", sparge_bf16_dot_emulated())]
    #endif

    func testTileOnEmulatedInstructionsAgainstScalarTwin() throws {
        #if arch(x86_64)
        guard CPUISA.avx2.isSupported else { throw XCTSkip("the emulated bf16 kernels are compiled for AVX2") }
        for (name, kernels) in Self.emulatedSets {
            for shape in randomShapes(30) {
                let (out, twin) = tileAndTwin(shape, isa: .portable, kernels: kernels)
                XCTAssertLessThanOrEqual(relativeL1(out, twin), Self.emulatedTolerance, "\(name): \(shape)")
            }
        }
        #else
        throw XCTSkip("the emulated bf16 kernels are x86-64 only")
        #endif
    }

    /// Every bf16 set this CPU runs (AVX512-BF16, AMX), on its real instructions.
    func testTileOnBf16InstructionsAgainstScalarTwin() throws {
        let sets = CPUISA.allCases.filter { $0.hasBf16Tiles && $0.isSupported }
        guard !sets.isEmpty else {
            throw XCTSkip("this CPU has neither AVX512-BF16 nor AMX (it runs \(CPUISA.detected.rawValue)): those kernels are checked on one (benchmarks/amx-check.c, cpu-amx-device.sh)")
        }
        for isa in sets {
            for shape in randomShapes(12) {
                let (out, twin) = tileAndTwin(shape, isa: isa, kernels: nil)
                XCTAssertLessThanOrEqual(relativeL1(out, twin), Self.hardwareTolerance, "\(isa): \(shape)")
            }
        }
    }

    /// P's exponential (vexp2_probability, what `sparge_bf16_exp2` runs) against Double's exp2 on fresh x
    /// over the softmax's range and at its edges: relative error ≤ 1.05e-4 wherever 2^x is a normal float
    /// (the polynomial's minimax bound is 1.015e-4; float rounding adds a few ulps, 1e-7 each). bf16's own
    /// rounding of P is up to 2⁻⁹ ≈ 2e-3, so this is what the cheaper polynomial may cost; a degree-2 one
    /// errs 1.7e-3 and fails. A row's maximum (x = 0) is exactly 1, and x ≤ −127 (−∞ included: masked
    /// keys) exactly +0, as with the full recipe.
    func testProbabilityExponentialAgainstDouble() {
        var system = SystemRandomNumberGenerator()
        let seed = UInt64.random(in: 1...UInt64.max, using: &system)
        var g = SeededGenerator(seed: seed)
        var worst = 0.0
        for i in 0..<20000 {
            let x = i < 10000 ? Float.random(in: -126...0, using: &g) : Float.random(in: -1...0, using: &g)
            let exact = Foundation.exp2(Double(x)), got = Double(sparge_bf16_exp2(x))
            worst = max(worst, abs(got - exact) / exact)
        }
        XCTAssertLessThanOrEqual(worst, 1.05e-4, "seed \(seed)")
        for x: Float in [-0.5, 0.5, -1.5, -20.5, -125.5] {
            XCTAssertLessThanOrEqual(abs(Double(sparge_bf16_exp2(x)) - Foundation.exp2(Double(x))) / Foundation.exp2(Double(x)), 1.05e-4, "x \(x)")
        }
        XCTAssertEqual(sparge_bf16_exp2(0), 1)
        XCTAssertEqual(sparge_bf16_exp2(-3), 0.125)
        for x: Float in [-127, -127.4, -200, -.infinity] {
            XCTAssertEqual(sparge_bf16_exp2(x).bitPattern, 0, "x \(x)")
        }
    }

    /// The kernels alone, both emulated sets against the C twin, chained (scores, softmax, P·V) on random
    /// operands of one block or two (a visit the driver grouped): the emulations sum in the twin's order, so only the ulps of fused vs separate rounding in the
    /// exponent's argument could differ — none measured; 1e-6 of the largest output.
    func testEmulatedKernelsAgainstTheirTwin() throws {
        #if arch(x86_64)
        guard CPUISA.avx2.isSupported else { throw XCTSkip("the emulated bf16 kernels are compiled for AVX2") }
        var system = SystemRandomNumberGenerator()
        for (name, emulated) in Self.emulatedSets {
        for _ in 0..<6 {
            let seed = UInt64.random(in: 1...UInt64.max, using: &system)
            var g = SeededGenerator(seed: seed)
            let lanes = 64, stride = lanes + 16, dim = [32, 64, 128].randomElement(using: &g)!
            let keys = Int.random(in: 1...128, using: &g), kp = sparge_bf16_padded_keys(keys)
            // One block, or (as the driver groups whole blocks) a first block of a multiple of 32 keys and the rest.
            let first = keys > 32 && Bool.random(using: &g) ? 32 * Int.random(in: 1...((keys - 1) / 32), using: &g) : keys
            let q = (0..<(lanes * dim)).map { _ in g.normal() }
            let k = (0..<(keys * dim)).map { _ in g.normal() }, v = (0..<(keys * dim)).map { _ in g.normal() }
            var qT = [UInt32](repeating: 0, count: dim / 2 * stride)
            sparge_pack_bf16_queries(q, lanes, dim, stride, lanes, &qT)
            let counts = first == keys ? [keys] : [first, keys - first]
            var packed: [(keys: [UInt16], valuesT: [UInt16])] = []
            var start = 0
            for count in counts {
                let bp = sparge_bf16_padded_keys(count)
                var (packedK, valuesT) = ([UInt16](repeating: 1, count: bp * dim), [UInt16](repeating: 1, count: bp * dim))
                sparge_pack_bf16_block(Array(k[(start * dim)...]), Array(v[(start * dim)...]), count, dim, &packedK, &valuesT)
                packed.append((packedK, valuesT))
                start += count
            }
            var outputs: [[Float]] = []
            for kernels in [emulated, sparge_bf16_twin()] {
                var scores = [Float](repeating: .nan, count: kp * stride)
                var blockMax = [Float](repeating: -.infinity, count: lanes), runningMax = blockMax
                var sums = [Float](repeating: 0, count: lanes)
                var output = (0..<(dim * lanes)).map { Float($0 % 7) - 3 }
                withBlocks(packed, counts) { blocks in
                    kernels.scores(qT, stride, lanes, blocks, counts.count, dim, 0.1, &scores, &blockMax, blocks, counts.count)
                    kernels.softmax(&scores, stride, lanes, keys, 0.1, &blockMax, &runningMax, &sums)
                    scores.withUnsafeBytes { p in
                        kernels.pv(p.bindMemory(to: UInt32.self).baseAddress!, stride, lanes, blocks, counts.count, dim,
                                   blockMax, &output)
                    }
                }
                outputs.append(output + sums)
            }
            XCTAssertFalse(outputs[0].contains { !$0.isFinite }, "seed \(seed)")
            let largest = outputs[1].map(abs).max()!
            let error = zip(outputs[0], outputs[1]).map { abs($0 - $1) }.max()!
            XCTAssertLessThanOrEqual(error, 1e-6 * largest, "\(name): seed \(seed) D \(dim) keys \(counts)")
        }
        }
        #else
        throw XCTSkip("the emulated bf16 tile kernels are x86-64 only")
        #endif
    }

    /// The packing of queries and key/value blocks for the tiles is StorageFormat.bf16's rounding of every
    /// value, bit for bit, in the layouts of CSpargeKernels.h (Q̂ᵀ pairs, K rows, Vᵀ, zeros past the rows and
    /// keys), on fresh shapes with every tail of the 32-key padding and values that test the rounding: NaNs
    /// with payloads (which plain rounding would carry to ±∞ or −0), ±∞, the largest finite floats (which round to ±∞), halfway points between bf16 values, denormals.
    func testPackingRoundsEveryValueAsStorageFormatDoes() {
        var system = SystemRandomNumberGenerator()
        let special: [Float] = [.nan, Float(bitPattern: 0x7F80_0001), Float(bitPattern: 0xFFFF_FFFF), .infinity, -.infinity,
                                .greatestFiniteMagnitude, -.greatestFiniteMagnitude,
                                Float(bitPattern: 0x3F80_8000), Float(bitPattern: 0x3F81_8000), Float(bitPattern: 0x0000_8001),
                                -Float(bitPattern: 0x0040_0000), 0, -0.0]
        // Every D at least once: multiples of 32 (what the tiles take), 40 (8 × 8 squares that do not make a
        // 32), 20 (the value-at-a-time path for D not a multiple of 8).
        let dims = [20, 32, 40, 64, 96, 128]
        for trial in 0..<20 {
            let seed = UInt64.random(in: 1...UInt64.max, using: &system)
            var g = SeededGenerator(seed: seed)
            let dim = trial < dims.count ? dims[trial] : dims.randomElement(using: &g)!, keys = Int.random(in: 1...128, using: &g)
            let lanes = [64, 128].randomElement(using: &g)!, rows = Int.random(in: 1...lanes, using: &g)
            let stride = lanes + 16, kp = sparge_bf16_padded_keys(keys)
            func value() -> Float { Int.random(in: 0..<4, using: &g) == 0 ? special.randomElement(using: &g)! : g.normal() * 100 }
            let q = (0..<(rows * dim)).map { _ in value() }, k = (0..<(keys * dim)).map { _ in value() }
            let v = (0..<(keys * dim)).map { _ in value() }
            var qT = [UInt32](repeating: 0xDEAD_BEEF, count: dim / 2 * stride)
            var packedK = [UInt16](repeating: 0xBEEF, count: kp * dim), valuesT = packedK
            sparge_pack_bf16_queries(q, rows, dim, stride, lanes, &qT)
            sparge_pack_bf16_block(k, v, keys, dim, &packedK, &valuesT)
            let bits = StorageFormat.bf16Bits
            var wrong = 0
            for j in 0..<(dim / 2) {
                for r in 0..<lanes {
                    let expected = r < rows ? UInt32(bits(q[r * dim + 2 * j])) | UInt32(bits(q[r * dim + 2 * j + 1])) << 16 : 0
                    wrong += qT[j * stride + r] == expected ? 0 : 1
                }
            }
            for c in 0..<kp {
                for i in 0..<dim {
                    wrong += packedK[c * dim + i] == (c < keys ? bits(k[c * dim + i]) : 0) ? 0 : 1
                    wrong += valuesT[i * kp + c] == (c < keys ? bits(v[c * dim + i]) : 0) ? 0 : 1
                }
            }
            XCTAssertEqual(wrong, 0, "seed \(seed) D \(dim) keys \(keys) rows \(rows) of \(lanes) lanes")
            // The same block already stored in bf16 (as the ring holds it, and as a caller's bf16 tensors may
            // come, with NaN payloads and signs that bf16(x) would not make) packs to the same bits; and the
            // vector rounding that stores it is bf16Bits.
            var storedK = [UInt16](repeating: 0, count: keys * dim), storedV = storedK
            sparge_bf16_round(k, keys * dim, &storedK)
            sparge_bf16_round(v, keys * dim, &storedV)
            XCTAssertEqual(storedK, k.map(bits), "seed \(seed): sparge_bf16_round against bf16Bits")
            for i in 0..<(keys * dim) where Int.random(in: 0..<16, using: &g) == 0 {
                let nan: UInt16 = [0xFFC1, 0x7F81, 0xFF81, 0x7FFF].randomElement(using: &g)!
                storedK[i] = nan; storedV[i] = nan
            }
            let widenedK = storedK.map { Float(bitPattern: UInt32($0) << 16) }
            let widenedV = storedV.map { Float(bitPattern: UInt32($0) << 16) }
            var fromFloatsK = packedK, fromFloatsV = valuesT
            sparge_pack_bf16_block(widenedK, widenedV, keys, dim, &fromFloatsK, &fromFloatsV)
            var fromStoredK = [UInt16](repeating: 0xBEEF, count: kp * dim), fromStoredV = fromStoredK
            sparge_pack_bf16_block_stored(storedK, storedV, keys, dim, &fromStoredK, &fromStoredV)
            XCTAssertEqual(fromStoredK, fromFloatsK, "seed \(seed) D \(dim) keys \(keys): K packed from bf16")
            XCTAssertEqual(fromStoredV, fromFloatsV, "seed \(seed) D \(dim) keys \(keys): Vᵀ packed from bf16")
        }
    }

    /// The twin of the bf16 tiles against Double attention on the same rounded inputs: what bf16 on AMX costs
    /// beyond the rounding of Q, K, V is P's rounding to bf16 (2⁻⁹ relative per p at most). It does not
    /// average out in relative terms, since the output is itself an average of the values: measured
    /// 1.1–1.4e-3 relative L1 on these random inputs (8 draws); 3e-3 bounds it, and fp32 products on the same
    /// inputs (no P rounding) stay below 1e-5.
    func testTwinAgainstDoubleOnRoundedInputs() throws {
        var system = SystemRandomNumberGenerator()
        for _ in 0..<3 {
            let seed = UInt64.random(in: 1...UInt64.max, using: &system)
            var g = SeededGenerator(seed: seed)
            let n = Int.random(in: 60...300, using: &g), d = [32, 64, 128].randomElement(using: &g)!
            let q = AttentionPrecision.bf16.rounded(Tensor3.random(heads: 2, rows: n, dim: d, using: &g))
            let k = AttentionPrecision.bf16.rounded(Tensor3.random(heads: 1, rows: n, dim: d, using: &g))
            let v = AttentionPrecision.bf16.rounded(Tensor3.random(heads: 1, rows: n, dim: d, using: &g))
            let config = SpargeConfig(causal: Bool.random(using: &g))
            let reference = doubleAttention(q: q, k: k, v: v, mask: nil, config: config).output.map(Float.init)
            let twin = try SparseAttention.forward(q: q, k: k, v: v, mask: nil, config: config, backend: .scalarTwin(.amx),
                                                   precision: .bf16)
            let plain = try SparseAttention.forward(q: q, k: k, v: v, mask: nil, config: config, backend: .scalar,
                                                    precision: .bf16)
            let label = "seed \(seed) N \(n) D \(d) causal \(config.causal)"
            let error = relativeL1(twin.output.data, reference)
            XCTAssertLessThanOrEqual(error, 3e-3, label)
            XCTAssertGreaterThan(error, 0, "P rounded to bf16 must show: \(label)")
            XCTAssertLessThanOrEqual(relativeL1(plain.output.data, reference), 1e-5, label)
        }
    }

    /// The kernels' block list for packed blocks (`counts` keys each), valid inside `body`.
    func withBlocks(_ packed: [(keys: [UInt16], valuesT: [UInt16])], _ counts: [Int],
                    _ body: (UnsafePointer<sparge_bf16_block>) -> Void) {
        let keys = packed.map { block in
            let p = UnsafeMutablePointer<UInt16>.allocate(capacity: block.keys.count)
            p.initialize(from: block.keys, count: block.keys.count)
            return p
        }
        let values = packed.map { block in
            let p = UnsafeMutablePointer<UInt16>.allocate(capacity: block.valuesT.count)
            p.initialize(from: block.valuesT, count: block.valuesT.count)
            return p
        }
        defer { (keys + values).forEach { $0.deallocate() } }
        let blocks = (0..<counts.count).map { sparge_bf16_block(keys: keys[$0], valuesT: values[$0], keyCount: counts[$0]) }
        blocks.withUnsafeBufferPointer { body($0.baseAddress!) }
    }
}
