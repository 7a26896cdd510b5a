import Foundation
import SpargeFormats
import SpargeKernels
import XCTest

/// The reference data in `../shared/fixtures` (beside the checkout), or `SPARGE_FIXTURES` when set.
///
/// Tests that need it call `try Fixtures.directory()`, which skips the test with a clear message where the
/// folder is absent, so that a clone of the project alone still gets a green run.
public enum Fixtures {
    /// The fixtures folder, or an `XCTSkip` saying where it was looked for.
    public static func directory(file: StaticString = #filePath) throws -> URL {
        if let given = ProcessInfo.processInfo.environment["SPARGE_FIXTURES"] {
            return URL(fileURLWithPath: given)
        }
        // <checkout>/Tests/<Target>/<File>.swift → <checkout>/../shared/fixtures
        let checkout = URL(fileURLWithPath: "\(file)").deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
        let folder = checkout.deletingLastPathComponent().appendingPathComponent("shared/fixtures")
        guard FileManager.default.fileExists(atPath: folder.appendingPathComponent("README.md").path) else {
            throw XCTSkip("reference fixtures not found at \(folder.path) (set SPARGE_FIXTURES to use them)")
        }
        return folder
    }

    /// One case of `mask/index.json`.
    public struct MaskCase: Decodable, Sendable {
        public let name: String
        public let Hq: Int
        public let Hkv: Int
        public let N: Int
        public let D: Int
        public let theta: Float
        public let cdf: Float?
        public let topk: Float?
        public let causal: Bool?
        public let sink: Bool?
        public let blockQ: Int
        public let blockK: Int
        public let density: Double

        /// The configuration the case was made with: upstream's exact rule (no kept diagonal).
        public var config: SpargeConfig {
            SpargeConfig(
                blockQ: blockQ, blockK: blockK, simThreshold: theta,
                selection: topk.map { .topK($0) } ?? .cdf(cdf ?? 0.98),
                causal: causal ?? false, sink: sink ?? false, keepDiagonal: false)
        }
    }

    /// Every case of `mask/index.json`.
    public static func maskCases() throws -> [MaskCase] {
        let data = try Data(contentsOf: try directory().appendingPathComponent("mask/index.json"))
        return try JSONDecoder().decode([MaskCase].self, from: data)
    }

    /// A float tensor `[H, N, D]` from a fixture file, e.g. `mask/cdf090_q.npy`.
    public static func tensor(_ relativePath: String) throws -> Tensor3 {
        let npy = try NPYFile(path: try directory().appendingPathComponent(relativePath).path)
        let s = npy.header.shape
        XCTAssertEqual(s.count, 3, "\(relativePath): expected [H, N, D], found \(s)")
        return Tensor3(heads: s[0], rows: s[1], dim: s[2], data: try npy.readFloat32())
    }

    /// A fixture mask `[Hq, nq, nk]` as a `BlockMask` holding every row.
    public static func mask(_ relativePath: String) throws -> BlockMask {
        let npy = try NPYFile(path: try directory().appendingPathComponent(relativePath).path)
        let s = npy.header.shape
        return BlockMask(heads: s[0], keyBlocks: s[2], queryBlocks: Array(0..<s[1]), dense: try npy.readUInt8())
    }
}

/// A dense, writable mask for building test cases bit by bit; `mask` is the library's sparse `BlockMask`.
public struct DenseMaskBits {
    public let heads: Int, keyBlocks: Int, queryBlocks: [Int]
    public var bits: [UInt8]

    public init(heads: Int, keyBlocks: Int, queryBlocks: [Int]) {
        (self.heads, self.keyBlocks, self.queryBlocks) = (heads, keyBlocks, queryBlocks)
        bits = [UInt8](repeating: 0, count: heads * queryBlocks.count * keyBlocks)
    }

    public subscript(head: Int, row: Int, key: Int) -> Bool {
        get { bits[(head * queryBlocks.count + row) * keyBlocks + key] != 0 }
        set { bits[(head * queryBlocks.count + row) * keyBlocks + key] = newValue ? 1 : 0 }
    }

    public var mask: BlockMask { BlockMask(heads: heads, keyBlocks: keyBlocks, queryBlocks: queryBlocks, dense: bits) }
}
