import CSparge
import SpargeKernels
import SpargeRing
import XCTest
@testable import SpargeC

/// The C interface called as C would call it: statuses and messages for bad input (never a trap), the
/// caller's own problem carried through, the shard ranges of the library's layout, and one forward pass
/// against `ShardedAttention` on the same tensors.
final class CInterfaceTests: XCTestCase {
    private var error = [CChar](repeating: 0, count: 512)
    private var message: String { String(cString: error) }

    private func context() throws -> OpaquePointer {
        var made: OpaquePointer?
        XCTAssertEqual(spargeContextCreate(0, 1, 0, 0, 0, &made, &error, error.count), SPARGE_OK, message)
        return try XCTUnwrap(made)
    }

    private func params(_ selection: sparge_selection = SPARGE_SELECT_CDF) -> sparge_params {
        sparge_params(selection: Int32(selection.rawValue), cdf_threshold: 0.9, topk: 0, sim_threshold: 0.6,
                      pv_threshold: 50, scale: 0, causal: 0, sink: 0, block_q: 0, block_k: 0, kv_dtype: -1, keep_mask: 1,
                      precision: Int32(SPARGE_PRECISION_DEFAULT.rawValue))
    }

    private func descriptor(_ data: UnsafeMutablePointer<Float>, _ shape: [Int64], dtype: sparge_dtype = SPARGE_DTYPE_F32,
                            device: sparge_device = SPARGE_DEVICE_CPU) -> sparge_tensor {
        let s = Tensor.contiguousStrides(shape.map { Int($0) }).map { Int64($0) }
        return sparge_tensor(data: UnsafeMutableRawPointer(data), shape: (shape[0], shape[1], shape[2], shape[3]),
                             strides: (s[0], s[1], s[2], s[3]), dtype: Int32(dtype.rawValue),
                             device_type: Int32(device.rawValue), device_id: 0, reserved: 0)
    }

    /// `spargeForward` on Q, K, V (`values`, each of `shape`) into a new output filled with NaN first.
    private func forward(_ ctx: OpaquePointer, _ p: inout sparge_params, _ values: [[Float]], shape: [Int64],
                         lse: UnsafeMutablePointer<Float>? = nil,
                         statistics: UnsafeMutablePointer<sparge_statistics>? = nil) -> (sparge_status, [Float]) {
        var (q, k, v, out) = (values[0], values[1], values[2], [Float](repeating: .nan, count: values[0].count))
        let status = q.withUnsafeMutableBufferPointer { q in k.withUnsafeMutableBufferPointer { k in
            v.withUnsafeMutableBufferPointer { v in out.withUnsafeMutableBufferPointer { o in
                var (dq, dk, dv, dout) = (descriptor(q.baseAddress!, shape), descriptor(k.baseAddress!, shape),
                                          descriptor(v.baseAddress!, shape), descriptor(o.baseAddress!, shape))
                return spargeForward(ctx, &p, &dq, &dk, &dv, &dout, lse, statistics, nil, &error, error.count)
            } } } }
        return (status, out)
    }

    /// Fresh random Q, K and V of `count` values each, in [−2, 2].
    private func randomQKV(count: Int) -> [[Float]] {
        var rng = SystemRandomNumberGenerator()
        return (0..<3).map { _ in (0..<count).map { _ in Float.random(in: -2...2, using: &rng) } }
    }

    func testForwardMatchesTheLibraryOnTheSameTensors() throws {
        let ctx = try context()
        defer { spargeContextDestroy(ctx) }
        let (h, n, d) = (2, 300, 16)
        let values = randomQKV(count: h * n * d)
        var lse = [Float](repeating: .nan, count: h * n)
        var stats = sparge_statistics()
        var p = params()
        let (status, out) = forward(ctx, &p, values, shape: [1, Int64(h), Int64(n), Int64(d)], lse: &lse, statistics: &stats)
        XCTAssertEqual(status, SPARGE_OK, message)
        let config = try p.configuration()
        let tensors = try values.map { try Tensor($0, shape: [h, n, d]) }
        let expected = try ShardedAttention.forward(
            q: tensors[0], k: tensors[1], v: tensors[2], layout: ShardLayout(seqLen: n, ranks: 1, config: config),
            config: config, communicator: SingleProcessCommunicator())
        // The same pass on the same values: bit for bit.
        XCTAssertEqual(out, expected.output.data)
        XCTAssertEqual(lse, expected.lse)
        XCTAssertEqual(stats.seq_len, 300)
        XCTAssertEqual(stats.computed_blocks, Int64(expected.statistics.mask.computed))
        var (batch, heads, rows, keys) = (Int64(0), Int64(0), Int64(0), Int64(0))
        var mask = [UInt8](repeating: 9, count: 2 * 3 * 5)
        XCTAssertEqual(spargeContextMask(ctx, &batch, &heads, &rows, &keys, &mask, mask.count, &error, error.count), SPARGE_OK)
        XCTAssertEqual([batch, heads, rows, keys], [1, 2, 3, 5])
        XCTAssertEqual(mask, expected.mask.denseBits())
    }

    /// `precision` picks the CPU engine's products, with K/V stored in the type it rounds to unless
    /// `kv_dtype` says otherwise: the same bits as the library's pass in that precision (bf16, fp16 and int8
    /// each differ from fp32, so a precision that was not applied fails), on fresh random inputs.
    func testPrecisionPicksTheProductsAndTheStorage() throws {
        let ctx = try context()
        defer { spargeContextDestroy(ctx) }
        let (h, n, d) = (2, 260, 32)
        let values = randomQKV(count: h * n * d)
        let tensors = try values.map { try Tensor($0, shape: [h, n, d]) }
        let cases: [(sparge_precision, Int32, AttentionPrecision, StorageFormat)] = [
            (SPARGE_PRECISION_FP32, -1, .fp32, .f32), (SPARGE_PRECISION_BF16, -1, .bf16, .bf16),
            (SPARGE_PRECISION_FP16, -1, .fp16, .f16), (SPARGE_PRECISION_INT8, -1, .int8, .f32),
            (SPARGE_PRECISION_BF16, Int32(SPARGE_DTYPE_F32.rawValue), .bf16, .f32),
        ]
        var outputs: [[Float]] = []
        for (asked, kv, precision, format) in cases {
            var p = params()
            (p.precision, p.kv_dtype) = (Int32(asked.rawValue), kv)
            let (status, out) = forward(ctx, &p, values, shape: [1, Int64(h), Int64(n), Int64(d)])
            XCTAssertEqual(status, SPARGE_OK, "\(precision): \(message)")
            XCTAssertEqual(try p.kvFormat(engine: CPUAttentionEngine(precision: precision)), format, "\(precision): K/V storage")
            let config = try p.configuration()
            let expected = try ShardedAttention.forward(
                q: tensors[0], k: tensors[1], v: tensors[2], layout: ShardLayout(seqLen: n, ranks: 1, config: config),
                config: config, communicator: SingleProcessCommunicator(), engine: CPUAttentionEngine(precision: precision),
                kvFormat: format)
            XCTAssertEqual(out, expected.output.data, "\(precision), K/V in \(format): the library's pass bit for bit")
            outputs.append(out)
        }
        for i in 1..<4 { XCTAssertNotEqual(outputs[i], outputs[0], "\(cases[i].2) computed as fp32") }
        var data = [Float](repeating: 1, count: 64)
        var p = params()
        p.precision = 7
        let status = data.withUnsafeMutableBufferPointer { buffer in
            var t = descriptor(buffer.baseAddress!, [1, 1, 4, 16])
            var (k, v, out) = (t, t, t)
            return spargeForward(ctx, &p, &t, &k, &v, &out, nil, nil, nil, &error, error.count)
        }
        XCTAssertEqual(status, SPARGE_ERROR_INVALID_ARGUMENT)
        XCTAssertTrue(message.contains("precision 7 is none of"), message)
    }

    func testBadInputIsAStatusAndAMessageNamingTheTensor() throws {
        let ctx = try context()
        defer { spargeContextDestroy(ctx) }
        var data = [Float](repeating: 1, count: 64)
        var p = params()
        data.withUnsafeMutableBufferPointer { buffer in
            let good = descriptor(buffer.baseAddress!, [1, 1, 4, 16])
            let cases: [(String, sparge_tensor?, sparge_status, String)] = [
                ("NULL q", nil, SPARGE_ERROR_INVALID_ARGUMENT, "q: no tensor (NULL)"),
                ("dtype 7", { var t = good; t.dtype = 7; return t }(), SPARGE_ERROR_INVALID_ARGUMENT, "q [1, 1, 4, 16]: dtype code 7"),
                ("cuda on the cpu engine", descriptor(buffer.baseAddress!, [1, 1, 4, 16], device: SPARGE_DEVICE_CUDA),
                 SPARGE_ERROR_INVALID_ARGUMENT, "q [1, 1, 4, 16] is on cuda:0: tensors in GPU memory need the CUDA engine"),
                ("too long", descriptor(buffer.baseAddress!, [1, 1, 8, 16]), SPARGE_ERROR_INVALID_ARGUMENT, "q, k and v must agree"),
            ]
            // An output whose rows overlap (stride 0 over 4 rows) would be written by several threads at once.
            var (q0, k0, v0) = (good, good, good)
            var overlapping = good
            overlapping.strides.2 = 0
            XCTAssertEqual(spargeForward(ctx, &p, &q0, &k0, &v0, &overlapping, nil, nil, nil, &error, error.count),
                           SPARGE_ERROR_INVALID_ARGUMENT)
            XCTAssertTrue(message.contains("out [1, 1, 4, 16] has stride 0 on axis 2"), message)
            for i in cases.indices {
                var (k, v, out) = (good, good, good)
                let status: sparge_status
                if var q = cases[i].1 {
                    status = spargeForward(ctx, &p, &q, &k, &v, &out, nil, nil, nil, &error, error.count)
                } else {
                    status = spargeForward(ctx, &p, nil, &k, &v, &out, nil, nil, nil, &error, error.count)
                }
                XCTAssertEqual(status, cases[i].2, cases[i].0)
                XCTAssertTrue(message.contains(cases[i].3), "\(cases[i].0): \(message)")
            }
            var (q, k, v, out) = (good, good, good, good)
            XCTAssertEqual(spargeForward(ctx, &p, &q, &k, &v, &out, nil, nil, "q: a list", &error, error.count),
                           SPARGE_ERROR_INVALID_ARGUMENT)
            XCTAssertEqual(message, "q: a list", "the caller's problem is the message")
            p.cdf_threshold = 2
            XCTAssertEqual(spargeForward(ctx, &p, &q, &k, &v, &out, nil, nil, nil, &error, error.count), SPARGE_ERROR_INVALID_ARGUMENT)
            XCTAssertTrue(message.contains("τ 2.0"), message)
        }
        var none: OpaquePointer?
        XCTAssertEqual(spargeContextCreate(0, 0, 0, 0, 0, &none, &error, error.count), SPARGE_ERROR_INVALID_ARGUMENT)
        XCTAssertNil(none)
    }

    func testMessagesAreCutAtACharacterBoundary() {
        var small = [CChar](repeating: 1, count: 6)
        copy("abcdθθ", into: &small, size: small.count)  // θ is two bytes: "abcd" + half a θ would not fit
        XCTAssertEqual(String(cString: small), "abcd")
        copy("ab", into: &small, size: small.count)
        XCTAssertEqual(String(cString: small), "ab")
    }

    func testShardRangesAreTheLayoutsOwn() throws {
        for (n, ranks, causal) in [(1000, 3, true), (777, 2, false), (100, 4, true)] {
            var p = params()
            p.causal = causal ? 1 : 0
            let layout = try ShardLayout(seqLen: n, ranks: ranks, config: p.configuration())
            for rank in 0..<ranks {
                var pairs = [Int64](repeating: -1, count: 4)
                var count: Int32 = -1
                XCTAssertEqual(spargeShardRanges(Int64(n), Int32(ranks), Int32(rank), &p, &pairs, 2, &count, &error, error.count), SPARGE_OK)
                let ranges = (0..<Int(count)).map { Int(pairs[2 * $0])..<Int(pairs[2 * $0 + 1]) }
                XCTAssertEqual(ranges, layout.tokenRanges[rank], "N=\(n), \(ranks) ranks, rank \(rank)")
            }
        }
        var p = params()
        var count: Int32 = 0
        var pairs = [Int64](repeating: 0, count: 4)
        XCTAssertEqual(spargeShardRanges(10, 2, 5, &p, &pairs, 2, &count, &error, error.count), SPARGE_ERROR_INVALID_ARGUMENT)
        XCTAssertTrue(message.contains("rank 5 is outside 0..<2"), message)
    }
}
