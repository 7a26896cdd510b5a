import Foundation
import SpargeFormats
import SpargeKernels
import SpargeRing
import SpargeWorkloads
import SpargeTestSupport
import XCTest

// Files and launches shared by the `sparge` command-line tests.

/// How a test launches `sparge`.
enum Launch: CustomStringConvertible {
    case single
    case ranks(Int)

    var description: String {
        switch self {
        case .single: "single process"
        case .ranks(let n): "mpirun -np \(n)"
        }
    }

    /// Runs `sparge args…` this way. A hang is a failure: `timeout` seconds, then the group is killed.
    func run(_ args: [String], timeout: TimeInterval = 60) throws -> MPIRunResult {
        switch self {
        case .single: try spargeSingle(args, timeout: timeout)
        case .ranks(let n): try mpirun(np: n, args, timeout: timeout)
        }
    }
}

/// A fresh folder for one test's files, removed when the test ends.
func scratchFolder(_ test: XCTestCase) throws -> String {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("sparge-cli-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    test.addTeardownBlock { try? FileManager.default.removeItem(at: url) }
    return url.path
}

/// The stdout and stderr of a run, for failure messages.
func transcript(_ r: MPIRunResult) -> String {
    "status \(r.status)\n--- stdout\n\(r.stdout)\n--- stderr\n\(r.stderr)"
}

/// The lines `sparge` printed as errors (mpirun's own banner is not counted).
func errorLines(_ r: MPIRunResult) -> [Substring] {
    r.stderr.split(separator: "\n").filter { $0.hasPrefix("sparge: error:") }
}

// MARK: - Input files

/// Q, K and V of a small `llm` workload (local band, sinks, far recurring topics), so that the predicted
/// mask is neither empty nor full. GQA: 2 query heads share 1 key/value head. N = 600 leaves a partial last
/// block (blocks of 128 and 64 rows).
struct SmallInputs {
    static let shape = WorkloadShape(queryHeads: 2, kvHeads: 1, seqLen: 600, headDim: 16)
    let q: Tensor3, k: Tensor3, v: Tensor3

    init(shape: WorkloadShape = SmallInputs.shape, seed: UInt64 = 7) throws {
        let generator = try WorkloadGenerator(.llm, shape: shape, seed: seed)
        (q, k, v) = generator.generate(rows: [0..<shape.seqLen])
    }

    /// Writes `q.npy`, `k.npy`, `v.npy` (float32, hnd) into `folder`; returns the `--q --k --v` arguments.
    func writeNPY(to folder: String, prefix: String = "") throws -> [String] {
        var args: [String] = []
        for (name, t) in [("q", q), ("k", k), ("v", v)] {
            let path = "\(folder)/\(prefix)\(name).npy"
            try NPYWriter.write(path: path, shape: [t.heads, t.rows, t.dim], values: t.data)
            args += ["--\(name)", path]
        }
        return args
    }
}

/// The rows of `t` in `[N, H, D]` order.
func toNHD(_ t: Tensor3) -> [Float] {
    var out = [Float](repeating: 0, count: t.data.count)
    for h in 0..<t.heads {
        for n in 0..<t.rows {
            for c in 0..<t.dim { out[(n * t.heads + h) * t.dim + c] = t.data[(h * t.rows + n) * t.dim + c] }
        }
    }
    return out
}

/// An `.npy` file written byte by byte: the header NumPy would write for `descr`, then `data`.
func writeRawNPY(_ path: String, descr: String, shape: [Int], data: [UInt8]) throws {
    // Encode a float32 header and swap the descr in place: '<f4', '<f2' and '<i8' have the same length.
    var header = NPYHeader(elementType: .float32, shape: shape).encoded()
    let old = Array("'<f4'".utf8), new = Array("'\(descr)'".utf8)
    precondition(new.count == old.count, "writeRawNPY: descr '\(descr)' must have 3 characters")
    let at = (0...(header.count - old.count)).first { Array(header[$0..<($0 + old.count)]) == old }!
    header.replaceSubrange(at..<(at + old.count), with: new)
    try Data(header + data).write(to: URL(fileURLWithPath: path))
}

/// Little-endian float16 bytes of `values`.
func float16Bytes(_ values: [Float]) -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(values.count * 2)
    for v in values { withUnsafeBytes(of: Float16(v).bitPattern.littleEndian) { out += $0 } }
    return out
}

/// A `.safetensors` file holding float32 tensors under the given names.
func writeSafetensors(_ path: String, _ tensors: [(name: String, tensor: Tensor3)]) throws {
    var entries: [String] = []
    var data: [UInt8] = []
    for (name, t) in tensors {
        let bytes = t.data.withUnsafeBytes { Array($0) }
        entries.append("\"\(name)\":{\"dtype\":\"F32\",\"shape\":[\(t.heads),\(t.rows),\(t.dim)],"
            + "\"data_offsets\":[\(data.count),\(data.count + bytes.count)]}")
        data += bytes
    }
    var header = Array(("{" + entries.joined(separator: ",") + "}").utf8)
    while header.count % 8 != 0 { header.append(UInt8(ascii: " ")) }
    let length = UInt64(header.count)
    let prefix = (0..<8).map { UInt8((length >> (8 * UInt64($0))) & 0xff) }
    try Data(prefix + header + data).write(to: URL(fileURLWithPath: path))
}

// MARK: - Reading outputs back

/// A float32 `.npy` output: its shape and values.
func readFloatNPY(_ path: String) throws -> (shape: [Int], values: [Float]) {
    let file = try InputFile(path: path)
    let header = try NPYHeader(reading: file)
    XCTAssertEqual(header.elementType, .float32, path)
    let bytes = try file.readBytes(count: header.elementCount * 4, at: header.dataOffset)
    let values = bytes.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    return (header.shape, values)
}

/// A uint8 `.npy` output (the block mask): its shape and bytes.
func readByteNPY(_ path: String) throws -> (shape: [Int], bytes: [UInt8]) {
    let file = try InputFile(path: path)
    let header = try NPYHeader(reading: file)
    XCTAssertEqual(header.elementType, .uint8, path)
    return (header.shape, try file.readBytes(count: header.elementCount, at: header.dataOffset))
}

/// The one JSON object a `--json` run printed on stdout (exactly one non-empty line).
func jsonObject(_ r: MPIRunResult, file: StaticString = #filePath, line: UInt = #line) throws -> [String: Any] {
    let lines = r.stdout.split(separator: "\n").filter { !$0.trimmingCharacters(in: .whitespaces).isEmpty }
    XCTAssertEqual(lines.count, 1, "expected one JSON line\n\(transcript(r))", file: file, line: line)
    let object = try JSONSerialization.jsonObject(with: Data((lines.first ?? "").utf8))
    return try XCTUnwrap(object as? [String: Any], "not a JSON object\n\(transcript(r))", file: file, line: line)
}

// MARK: - Failure contract

/// Asserts that a run failed the way the CLI promises: non-zero status, exactly one `sparge: error:` line
/// holding every string of `mentions`, no trap (a Swift runtime error prints "Fatal error" and a stack dump
/// instead of a message), and nothing left at `outputs` nor any `*.partial-*` or `*.previous-*` in `folder`.
func assertFailsCleanly(_ r: MPIRunResult, status expected: Int32? = nil, mentions: [String], outputs: [String],
                        folder: String, _ label: String, file: StaticString = #filePath, line: UInt = #line) {
    let context = "\(label)\n\(transcript(r))"
    XCTAssertNotEqual(r.status, 0, "should fail: \(context)", file: file, line: line)
    if let expected { XCTAssertEqual(r.status, expected, "exit status: \(context)", file: file, line: line) }
    let errors = errorLines(r)
    XCTAssertEqual(errors.count, 1, "one error message expected: \(context)", file: file, line: line)
    for trap in trapSigns where r.stderr.contains(trap) || r.stdout.contains(trap) {
        XCTFail("a trap instead of a message ('\(trap)'): \(context)", file: file, line: line)
    }
    for text in mentions where !errors.contains(where: { $0.contains(text) }) {
        XCTFail("the message does not mention '\(text)': \(context)", file: file, line: line)
    }
    for path in outputs where FileManager.default.fileExists(atPath: path) {
        XCTFail("\(path) exists after a failed run: \(context)", file: file, line: line)
    }
    let leftovers = ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? [])
        .filter { $0.contains(".partial-") || $0.contains(".previous-") }
    XCTAssertEqual(leftovers, [], "temporary files left behind: \(context)", file: file, line: line)
}

/// What a Swift trap or a crash prints.
let trapSigns = ["Fatal error", "Swift runtime failure", "Backtracing", "Stack dump", "💣", "failed to allocate", "Illegal instruction", "Segmentation fault"]
