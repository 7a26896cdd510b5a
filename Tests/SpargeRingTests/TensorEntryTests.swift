import SpargeTestSupport
import XCTest
@testable import SpargeRing

/// `ShardedAttention.forward` on `Tensor`s: the same pass as on `Tensor3`, whatever the layout and element
/// type the caller holds, and bad input is an error (never a trap).
final class TensorEntryTests: XCTestCase {
    let config = SpargeConfig(simThreshold: 0.3, selection: .cdf(0.9), causal: true)

    func inputs(seed: UInt64, n: Int) -> (Tensor3, Tensor3, Tensor3) {
        var g = SeededGenerator(seed: seed)
        return (Tensor3.blockStructured(heads: 2, rows: n, dim: 16, using: &g),
                Tensor3.blockStructured(heads: 1, rows: n, dim: 16, using: &g),
                Tensor3.random(heads: 1, rows: n, dim: 16, using: &g))
    }

    /// `[N, H, D]` tensors through `permuted` give exactly the `[H, N, D]` arrays' result: the conversion
    /// copies values, it does not compute with them.
    func testNHDViewsGiveTheSameResult() throws {
        let n = 500
        let (q, k, v) = inputs(seed: 3, n: n)
        let layout = try ShardLayout(seqLen: n, ranks: 1, config: config)
        let comm = SingleProcessCommunicator()
        let plain = try ShardedAttention.forward(q: q, k: k, v: v, layout: layout, config: config, communicator: comm)
        func nhd(_ t: Tensor3) throws -> Tensor {
            var values = [Float](repeating: 0, count: t.data.count)
            for h in 0..<t.heads { for r in 0..<t.rows { for i in 0..<t.dim { values[(r * t.heads + h) * t.dim + i] = t[h, r, i] } } }
            return try Tensor(values, shape: [t.rows, t.heads, t.dim]).permuted([1, 0, 2])
        }
        let viewed = try ShardedAttention.forward(q: nhd(q), k: nhd(k), v: nhd(v), layout: layout, config: config,
                                                  communicator: comm)
        XCTAssertEqual(viewed.mask, plain.mask)
        XCTAssertEqual(viewed.output.data, plain.output.data)
    }

    /// bf16 inputs with bf16 K/V storage: K and V travel from the caller's buffer as they are, and the result
    /// is the f32 pass on the same (bf16) values.
    func testBF16InputsTravelAsTheyAre() throws {
        let n = 450
        let (q, k, v) = inputs(seed: 4, n: n)
        let (qb, kb, vb) = (q.rounded(to: .bf16), k.rounded(to: .bf16), v.rounded(to: .bf16))
        let layout = try ShardLayout(seqLen: n, ranks: 1, config: config)
        let comm = SingleProcessCommunicator()
        let reference = try ShardedAttention.forward(q: qb, k: kb, v: vb, layout: layout, config: config, communicator: comm)
        let tensors = try [qb, kb, vb].map { try Tensor($0).packed(as: .bf16).tensor }
        let result = try ShardedAttention.forward(q: tensors[0], k: tensors[1], v: tensors[2], layout: layout,
                                                  config: config, communicator: comm, kvFormat: .bf16)
        XCTAssertEqual(result.mask, reference.mask)
        XCTAssertEqual(result.output.data, reference.output.data)
    }

    /// Library use: a device tensor, a layout whose blocks differ from the configuration's, and a config
    /// that cannot work are thrown errors naming the problem.
    func testBadInputThrows() throws {
        let n = 300
        let (q, k, v) = inputs(seed: 5, n: n)
        let comm = SingleProcessCommunicator()
        let layout = try ShardLayout(seqLen: n, ranks: 1, config: config)
        // A device address is never dereferenced on the host: the place is checked first.
        let device = TensorBuffer(borrowing: UnsafeMutableRawPointer(bitPattern: 0x1000)!, byteCount: 2 * n * 16 * 4,
                                  place: .device(backend: "cuda", ordinal: 0))
        let onDevice = try Tensor(buffer: device, element: .f32, shape: [2, n, 16])
        XCTAssertThrowsError(try ShardedAttention.forward(q: onDevice, k: Tensor(k), v: Tensor(v), layout: layout,
                                                          config: config, communicator: comm)) {
            XCTAssertTrue("\($0)".contains("cuda:0"), "\($0)")
        }
        let otherBlocks = ShardLayout(seqLen: n, ranks: 1, blockQ: 64, blockK: 64, causal: true)
        XCTAssertThrowsError(try ShardedAttention.forward(q: q, k: k, v: v, layout: otherBlocks, config: config,
                                                          communicator: comm)) {
            XCTAssertTrue("\($0)".contains("64×64"), "\($0)")
        }
        var bad = config
        bad.computeTileQ = 48
        XCTAssertThrowsError(try ShardedAttention.forward(q: q, k: k, v: v, layout: layout, config: bad, communicator: comm)) {
            XCTAssertTrue("\($0)".contains("computeTileQ 48"), "\($0)")
        }
        XCTAssertThrowsError(try ShardLayout(seqLen: 0, ranks: 1, config: config))
    }
}
