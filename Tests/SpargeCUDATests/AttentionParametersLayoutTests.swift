import Foundation
@testable import SpargeCUDA
import XCTest

/// The attention kernel takes one struct (`SpargeAttentionParams` in sparge_attention.cu) that Swift fills as
/// `AttentionKernel.Parameters`: the same bytes must mean the same fields on both sides. The C++ definition,
/// cut from the kernel source, is compiled on the host (the same ABI rules as the device's for these types:
/// natural alignment, declaration order) and its offsets are compared with Swift's, field by field.
final class AttentionParametersLayoutTests: XCTestCase {
    func testSwiftParametersMatchTheKernelsStruct() throws {
        let source = AttentionKernelSource.source
        guard let start = source.range(of: "struct SpargeAttentionParams {"),
              let end = source.range(of: "};", range: start.upperBound..<source.endIndex) else {
            return XCTFail("sparge_attention.cu has no SpargeAttentionParams")
        }
        let fields = ["q", "k", "v", "oacc", "ml", "out", "lse", "counters", "tiles", "work", "blocks", "rows",
                      "seqLen", "kvRows", "group", "qScale", "pvThreshold", "causal", "lambda"]
        let harness = """
            int main(int argc, char** argv) {
                long long v[] = { (long long)sizeof(SpargeAttentionParams), \(fields.map { "(long long)offsetof(SpargeAttentionParams, \($0))" }.joined(separator: ", ")) };
                FILE* out = fopen(argv[3], "wb");
                fwrite(v, sizeof v, 1, out);
                fclose(out);
                return 0;
            }
            """
        let program = try HostKernelProgram.build(
            name: "attention-params", source: HostKernelProgram.prelude + "#include <stddef.h>\n"
                + String(source[..<end.upperBound]) + "\n" + harness, defines: [:])
        let cxx = try program.run("layout", Data()).values(Int64.self, count: fields.count + 1).map(Int.init)

        typealias P = AttentionKernel.Parameters
        let swift: [Int?] = [MemoryLayout<P>.size, MemoryLayout<P>.offset(of: \.q), MemoryLayout<P>.offset(of: \.k),
                             MemoryLayout<P>.offset(of: \.v), MemoryLayout<P>.offset(of: \.oacc), MemoryLayout<P>.offset(of: \.ml),
                             MemoryLayout<P>.offset(of: \.output), MemoryLayout<P>.offset(of: \.lse),
                             MemoryLayout<P>.offset(of: \.counters), MemoryLayout<P>.offset(of: \.tiles),
                             MemoryLayout<P>.offset(of: \.work), MemoryLayout<P>.offset(of: \.blocks),
                             MemoryLayout<P>.offset(of: \.rows), MemoryLayout<P>.offset(of: \.seqLen),
                             MemoryLayout<P>.offset(of: \.kvRows), MemoryLayout<P>.offset(of: \.group),
                             MemoryLayout<P>.offset(of: \.qScale), MemoryLayout<P>.offset(of: \.pvThreshold),
                             MemoryLayout<P>.offset(of: \.causal), MemoryLayout<P>.offset(of: \.lambda)]
        XCTAssertEqual(swift.map { $0 ?? -1 }, cxx, "sizeof, then the offsets of \(fields)")
    }

    /// The `mma.sync` kernel's argument (`SpargeMmaParams`): the parameters, then in int8 the three scale
    /// pointers that `AttentionKernel.launch` appends (Q's row scales, K's block scales, Q's row shifts); in
    /// 16 bits the parameters alone.
    func testMmaArgumentIsTheParametersThenTheInt8Scales() throws {
        let source = AttentionKernelSource.source
        guard let start = source.range(of: "struct SpargeMmaParams {"),
              let end = source.range(of: "};", range: start.upperBound..<source.endIndex) else {
            return XCTFail("sparge_attention.cu has no SpargeMmaParams")
        }
        let harness = """
            int main(int argc, char** argv) {
            #if QK_INT8
                long long v[] = { (long long)sizeof(SpargeMmaParams), (long long)offsetof(SpargeMmaParams, p),
                                  (long long)offsetof(SpargeMmaParams, scales.qScales), (long long)offsetof(SpargeMmaParams, scales.kScales),
                                  (long long)offsetof(SpargeMmaParams, scales.rowShifts) };
            #else
                long long v[] = { (long long)sizeof(SpargeMmaParams), (long long)offsetof(SpargeMmaParams, p), 0, 0, 0 };
            #endif
                FILE* out = fopen(argv[3], "wb");
                fwrite(v, sizeof v, 1, out);
                fclose(out);
                return 0;
            }
            """
        let size = MemoryLayout<AttentionKernel.Parameters>.size
        for int8 in [true, false] {
            // (The declarations only: the PTX helpers stay out, as in the host emulation.)
            let program = try HostKernelProgram.build(
                name: "mma-params-\(int8)", source: HostKernelProgram.prelude + "#include <stddef.h>\n"
                    + String(source[..<end.upperBound]) + "\n" + harness,
                defines: ["SPARGE_HOST_EMULATION": 1, "QK_INT8": int8 ? 1 : 0, "HEAD_DIM": 128, "BLOCK_K": 64,
                          "NWARPS": 4, "MT": 1, "QK_BF16": 1, "PV_BF16": 0])
            let cxx = try program.run("layout", Data()).values(Int64.self, count: 5).map(Int.init)
            XCTAssertEqual(cxx, int8 ? [size + 24, 0, size, size + 8, size + 16] : [size, 0, 0, 0, 0],
                           "sizeof(SpargeMmaParams), then the offsets of p (and qScales, kScales, rowShifts), int8 \(int8)")
        }
    }
}
