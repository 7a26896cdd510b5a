import Foundation
@testable import SpargeCUDA
import XCTest

/// What of the Hopper kernel can be checked without a Hopper GPU: the argument struct's layout against the
/// bytes `AttentionKernel.launch` builds, the shared memory the launch asks for against the kernel's own
/// `SHARED_BYTES`, and the pairing of tiles into CTAs. (The kernel itself runs in `sparge selftest-cuda` and
/// benchmarks/gpu-sm90-harness.cu on the device machine, against the CPU tiles and a Double reference.)
final class HopperKernelHostTests: XCTestCase {
    /// The C++ definitions from the kernel's own source, compiled on the host with the given shape.
    private func kernelConstants(headDim: Int, blockK: Int, int8: Bool = false, tailParts: Bool = false) throws -> [Int64] {
        let source = AttentionKernelSource.hopperSource
        // The common types (up to SpargeAttentionParams), then the Hopper file's macros and structs (up to
        // SHARED_BYTES): declarations only, no device code.
        guard let commonEnd = source.range(of: "    int causal, lambda;\n};\n"),
              let hopperStart = source.range(of: "#define D HEAD_DIM"),
              let sharedLine = source.range(of: "#define SHARED_BYTES"),
              let sharedEnd = source.range(of: "\n", range: sharedLine.upperBound..<source.endIndex),
              hopperStart.lowerBound > commonEnd.upperBound else {
            XCTFail("the Hopper source lacks SpargeAttentionParams, its macros or SHARED_BYTES")
            return []
        }
        let declarations = String(source[..<commonEnd.upperBound]) + "\n"
            + String(source[hopperStart.lowerBound..<sharedEnd.upperBound])
                .components(separatedBy: "\n").filter { !$0.contains("__device__") && !$0.contains("asm") }
                .joined(separator: "\n")
        let harness = """
            int main(int argc, char** argv) {
                long long v[] = { (long long)sizeof(SpargeHopperParams), (long long)offsetof(SpargeHopperParams, kMap),
                                  (long long)offsetof(SpargeHopperParams, vMap), (long long)offsetof(SpargeHopperParams, p),
                                  (long long)(SHARED_BYTES),
            #if TAIL_PARTS
                                  (long long)offsetof(SpargeHopperParams, slots) };
            #else
                                  0 };
            #endif
                FILE* out = fopen(argv[3], "wb");
                fwrite(v, sizeof v, 1, out);
                fclose(out);
                return 0;
            }
            """
        let stages = AttentionKernelSource.hopperStages(int8: int8)
        let program = try HostKernelProgram.build(
            name: "hopper-params-\(headDim)-\(blockK)\(int8 ? "-int8" : "")\(tailParts ? "-parts" : "")",
            source: HostKernelProgram.prelude + "#include <stddef.h>\n" + declarations + "\n" + harness,
            defines: ["HEAD_DIM": headDim, "BLOCK_K": blockK, "KV_STAGES": stages, "QK_BF16": 1, "PV_BF16": 1,
                      "QK_INT8": int8 ? 1 : 0, "TAIL_PARTS": tailParts ? 1 : 0])
        return try program.run("layout", Data()).values(Int64.self, count: 6)
    }

    /// The tail parts' variant takes two more pointers where `launch` appends them: after the parameters
    /// (and int8's scales), before the padding.
    func testTailPartsSlotsFollowTheParameters() throws {
        for int8 in [false, true] {
            let c = try kernelConstants(headDim: 128, blockK: 128, int8: int8, tailParts: true)
            guard c.count == 6 else { return }
            let parameters = MemoryLayout<AttentionKernel.Parameters>.size + (int8 ? 24 : 0)
            XCTAssertEqual(Int(c[5]), 384 + parameters, "offsetof(SpargeHopperParams, slots), int8 \(int8)")
            XCTAssertEqual(Int(c[0]), (384 + parameters + 16 + 63) / 64 * 64, "sizeof(SpargeHopperParams), int8 \(int8)")
        }
    }

    func testArgumentLayoutAndSharedMemoryMatchTheKernel() throws {
        for (d, bk, int8) in [(128, 64, false), (128, 128, false), (64, 64, false), (64, 128, false), (128, 64, true),
                              (128, 128, true)] {
            let c = try kernelConstants(headDim: d, blockK: bk, int8: int8)
            guard c.count == 6 else { return }
            // Three 128-byte maps, then the parameters (and int8's three scale pointers), the whole rounded up
            // to the maps' 64-byte alignment: what `launch` concatenates and pads.
            let parameters = MemoryLayout<AttentionKernel.Parameters>.size + (int8 ? 24 : 0)
            XCTAssertEqual(c[1], 128)
            XCTAssertEqual(c[2], 256)
            XCTAssertEqual(c[3], 384)
            XCTAssertEqual(Int(c[0]), (384 + parameters + 63) / 64 * 64, "sizeof(SpargeHopperParams), int8 \(int8)")
            XCTAssertEqual(Int(c[4]), AttentionKernelSource.hopperSharedBytes(headDim: d, int8: int8),
                           "SHARED_BYTES, D \(d), BK \(bk), int8 \(int8)")
            XCTAssertLessThanOrEqual(Int(c[4]), 227 * 1024, "an H100/H200 CTA's shared memory")
        }
    }

    /// Random tiles in plan order: runs of two tiles share a mask row cut at two diagonals (prefix lists),
    /// others have lists of their own; every item must be launched once, pairs only where the lists agree
    /// on the shorter one's length and the K/V head is one, siblings paired, CTAs longest first.
    func testPairingSharesListsOnlyWhereTheyAgree() {
        var generator = SystemRandomNumberGenerator()
        for trial in 0..<200 {
            var blocks: [Int32] = []
            var items: [AttentionKernel.WorkItem] = []
            var heads: [Int] = []
            var siblings: Set<Int32> = []
            var tile: Int32 = 0
            while items.count < Int.random(in: 1...12, using: &generator) {
                let head = Int.random(in: 0..<3, using: &generator)
                let row = (0..<Int.random(in: 0...6, using: &generator)).map { _ in Int32.random(in: 0..<40, using: &generator) }
                let list = Array(Set(row)).sorted()
                let first = Int32(blocks.count)
                blocks += list
                if Bool.random(using: &generator) && !list.isEmpty {
                    // Two tiles of one row: the first cut one block shorter (or not), as causal diagonals do.
                    let short = Int32(list.count - Int.random(in: 0...1, using: &generator))
                    items.append(.init(tile: tile, first: first, count: short))
                    items.append(.init(tile: tile + 1, first: first, count: Int32(list.count)))
                    heads += [head, head]
                    siblings.insert(tile)
                    tile += 2
                } else {
                    items.append(.init(tile: tile, first: first, count: Int32(list.count)))
                    heads.append(head)
                    tile += 1
                }
            }
            let work = AttentionKernel.arrange(items, tilesPerCTA: 2, kvHead: { heads[Int($0)] }, block: { blocks[Int($0)] })
            XCTAssertEqual(work.count % 8, 0)
            let entries = stride(from: 0, to: work.count, by: 4).map {
                AttentionKernel.WorkItem(tile: work[$0], first: work[$0 + 1], count: work[$0 + 2])
            }
            XCTAssertEqual(entries.filter { $0.tile >= 0 }.map(\.tile).sorted(), items.map(\.tile), "trial \(trial): each tile once")
            var (longest, lastTile) = (Int32.max, Int32(-1))
            for cta in stride(from: 0, to: entries.count, by: 2) {
                let (a, b) = (entries[cta], entries[cta + 1])
                XCTAssertGreaterThanOrEqual(a.tile, 0, "the first entry of a CTA is a tile")
                XCTAssertLessThanOrEqual(max(a.count, b.count), longest, "longest lists first")
                // Stable: among equally long CTAs, plan order (the tiles were numbered in it).
                if max(a.count, b.count) == longest { XCTAssertGreaterThan(a.tile, lastTile, "trial \(trial): ties in plan order") }
                (longest, lastTile) = (max(a.count, b.count), a.tile)
                if b.tile >= 0 {
                    XCTAssertEqual(heads[Int(a.tile)], heads[Int(b.tile)], "one K/V head a CTA")
                    for i in 0..<min(a.count, b.count) { XCTAssertEqual(blocks[Int(a.first + i)], blocks[Int(b.first + i)]) }
                }
            }
            // Pairing is greedy in plan order: siblings share a CTA unless the first was taken by the tile
            // before it (a valid pair too).
            for s in siblings {
                let at = entries.firstIndex { $0.tile == s }!
                guard entries[at ^ 1].tile != s - 1 else { continue }
                XCTAssertEqual(entries[at ^ 1].tile, s + 1, "trial \(trial): siblings \(s), \(s + 1) share a CTA")
            }
            // One tile a CTA: the items as they are, longest first.
            let single = AttentionKernel.arrange(items, tilesPerCTA: 1, kvHead: { heads[Int($0)] }, block: { blocks[Int($0)] })
            XCTAssertEqual(single.count, 4 * items.count)
            // One tile a CTA: the items as a stable sort by length, longest first, would order them.
            let expected: [Int32] = items.enumerated().sorted { ($0.element.count, $1.offset) > ($1.element.count, $0.offset) }
                .flatMap { (_, item) -> [Int32] in [item.tile, item.first, item.count, 0] }
            XCTAssertEqual(single, expected, "trial \(trial): one tile a CTA")
        }
    }
}
