import Foundation
import SpargeFormats
import SpargeKernels
import SpargeRing
import SpargeTestSupport
import XCTest

/// `sparge run` on valid inputs: every file kind and layout, on 1, 2 and 3 ranks, gives the single-process
/// output and exactly the single-process mask.
final class RunTests: XCTestCase {
    /// Distributed against single-process output. The mask is identical (asserted bit for bit), so the same
    /// blocks are computed; only the order of the online-softmax merges differs (ring steps vs one pass), which
    /// changes float32 rounding at ~1e-7 relative. 1e-5 leaves a wide margin for that, while one block
    /// computed wrongly or skipped moves the output by far more.
    let tolerance = 1e-5

    /// Sparse enough that the mask is neither empty nor full on the `llm` workload.
    let config = ["--theta", "0.3", "--cdf", "0.9"]

    func testEveryInputKindOnOneTwoAndThreeRanks() throws {
        let folder = try scratchFolder(self)
        let inputs = try SmallInputs()
        let shape = SmallInputs.shape
        let (hq, n, d) = (shape.queryHeads, shape.seqLen, shape.headDim)

        // float32 hnd, the reference run.
        let f32 = try inputs.writeNPY(to: folder)
        // float32 nhd.
        var nhd: [String] = []
        for (name, t) in [("q", inputs.q), ("k", inputs.k), ("v", inputs.v)] {
            let path = "\(folder)/\(name)-nhd.npy"
            try NPYWriter.write(path: path, shape: [n, t.heads, d], values: toNHD(t))
            nhd += ["--\(name)", path]
        }
        // float16 hnd, written by hand (NPYWriter writes float32 and uint8 only).
        var f16: [String] = []
        for (name, t) in [("q", inputs.q), ("k", inputs.k), ("v", inputs.v)] {
            let path = "\(folder)/\(name)-f16.npy"
            try writeRawNPY(path, descr: "<f2", shape: [t.heads, n, d], data: float16Bytes(t.data))
            f16 += ["--\(name)", path]
        }
        // One .safetensors file holding all three, named.
        let st = "\(folder)/qkv.safetensors"
        try writeSafetensors(st, [("q", inputs.q), ("k", inputs.k), ("v", inputs.v)])
        let safetensors = ["--q", "\(st):q", "--k", "\(st):k", "--v", "\(st):v"]

        func run(_ launch: Launch, _ files: [String], _ name: String, extra: [String] = []) throws -> (out: [Float], mask: [UInt8], shape: [Int]) {
            let out = "\(folder)/\(name).npy", mask = "\(folder)/\(name)-mask.npy"
            let result = try launch.run(["run"] + files + config + extra + ["--output", out, "--mask-output", mask])
            XCTAssertEqual(result.status, 0, "\(name), \(launch)\n\(transcript(result))")
            XCTAssertEqual(errorLines(result), [], "\(name), \(launch)")
            let (outShape, values) = try readFloatNPY(out)
            let (maskShape, bits) = try readByteNPY(mask)
            XCTAssertEqual(maskShape, [hq, (n + 127) / 128, (n + 63) / 64], "\(name), \(launch): mask shape")
            return (values, bits, outShape)
        }

        let reference = try run(.single, f32, "single-f32", extra: ["--json"])
        XCTAssertEqual(reference.shape, [hq, n, d])
        let density = Double(reference.mask.reduce(0) { $0 + Int($1) }) / Double(reference.mask.count)
        XCTAssertTrue(density > 0.2 && density < 0.95, "the mask should be sparse but not empty: density \(density)")

        let f16Reference = try run(.single, f16, "single-f16")
        // float16 rounding of the inputs moves the output, but not far.
        XCTAssertLessThan(relativeL1(f16Reference.out, reference.out), 1e-2, "float16 against float32")

        let distributed: [(String, Launch, [String], reference: (out: [Float], mask: [UInt8], shape: [Int]), nhd: Bool)] = [
            ("f32 hnd", .ranks(2), f32, reference, false),
            ("f32 hnd", .ranks(3), f32, reference, false),
            ("f32 nhd", .ranks(3), nhd + ["--layout", "nhd"], reference, true),
            ("safetensors", .ranks(2), safetensors, reference, false),
            ("f16 hnd", .ranks(2), f16, f16Reference, false),
        ]
        for (i, (label, launch, files, expected, isNHD)) in distributed.enumerated() {
            let got = try run(launch, files, "run\(i)")
            let label = "\(label), \(launch)"
            XCTAssertEqual(got.mask, expected.mask, "\(label): mask bits differ from the single-process mask")
            if isNHD {
                XCTAssertEqual(got.shape, [n, hq, d], label)
                let back = Tensor3(heads: n, rows: hq, dim: d, data: got.out)  // [N, H, D] read as [H', N', D]
                XCTAssertLessThanOrEqual(relativeL1(toNHD(back), expected.out), tolerance, label)
            } else {
                XCTAssertEqual(got.shape, [hq, n, d], label)
                XCTAssertLessThanOrEqual(relativeL1(got.out, expected.out), tolerance, label)
            }
        }
    }

    /// `--json` prints one JSON object with the run's numbers, once (rank 0), single-process and on 2 ranks.
    func testJSONReport() throws {
        let folder = try scratchFolder(self)
        let files = try SmallInputs().writeNPY(to: folder)
        let keys = ["seq", "ranks", "threads", "heads", "kv_heads", "head_dim", "causal", "density", "seconds",
                    "gflops_dense_equiv", "bytes_sent", "bytes_dense_ring"]
        for (i, (launch, ranks)) in [(Launch.single, 1), (.ranks(2), 2)].enumerated() {
            let result = try launch.run(["run"] + files + config + ["--causal", "--json", "--output", "\(folder)/o\(i).npy"])
            XCTAssertEqual(result.status, 0, transcript(result))
            let json = try jsonObject(result)
            for key in keys where json[key] == nil { XCTFail("\(launch): no '\(key)' in \(result.stdout)") }
            XCTAssertEqual(json["seq"] as? Int, SmallInputs.shape.seqLen)
            XCTAssertEqual(json["ranks"] as? Int, ranks)
            XCTAssertEqual(json["heads"] as? Int, 2)
            XCTAssertEqual(json["kv_heads"] as? Int, 1)
            XCTAssertEqual(json["head_dim"] as? Int, SmallInputs.shape.headDim)
            XCTAssertEqual(json["causal"] as? Bool, true)
            let density = try XCTUnwrap((json["density"] as? NSNumber)?.doubleValue)
            XCTAssertTrue(density > 0 && density <= 1, "density \(density)")
        }
    }
}
