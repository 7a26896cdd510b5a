import SpargeKernels
import SpargeTestSupport
import XCTest
@testable import SpargeCUDA

/// int8's K on the ring (`QuantizedKeys`): a block quantized by its owner is packed into a payload and taken
/// out of it by the copy tables the ring store runs (`sparge_copy_blocks`: a plain copy of 4-byte words,
/// done here on host memory), and arrives as the receiver's own quantization of the block's storage format
/// would have made it — bit for bit, since it is the same bytes. The quantization is the twin
/// (`SageQuantization.keyBlocks`) that the kernels equal bit for bit (SageQuantizationTests).
final class QuantizedKeyPayloadTests: XCTestCase {
    func testBlocksArriveAsTheOwnerQuantizedThem() throws {
        let seed = UInt64.random(in: 0...UInt64.max)
        var rng = SeededGenerator(seed: seed)
        // Two kv heads of 200 rows in 64-row blocks (the last partial, 8 rows), D 128 (int8's), bf16 storage.
        let (heads, rows, dim, blockK) = (2, 200, 128, 64)
        let kvRows = (rows + blockK - 1) / blockK * blockK, blocks = kvRows / blockK
        let k = (0..<(heads * rows * dim)).map { i -> Float in
            let x = Float.random(in: -3...3, using: &rng) + Float(i % dim) * 0.02
            return Float(bitPattern: UInt32(StorageFormat.bf16Bits(x)) << 16)
        }
        let mean = (0..<(heads * dim)).map { i in Float(i % dim) * 0.02 + Float.random(in: -0.1...0.1, using: &rng) }
        let owner = SageQuantizationTests.SageQuantization.keyBlocks(k, mean: mean, heads: heads, rows: rows, kvRows: kvRows,
                                                                     dim: dim, blockK: blockK)
        XCTAssertTrue(owner.n.contains { $0 != 0 } && owner.scales.allSatisfy { $0 > 0 }, "seed \(seed)")

        // A payload of three blocks laid out as the ring lays them: the partial block, then two whole ones.
        let format = QuantizedKeys.payloadFormat(kvFormat: .bf16, headDim: dim)
        XCTAssertEqual(format, PayloadFormat(keyBytesPerRow: 128, keyExtraBytes: 16, valueBytesPerRow: 256))
        let moved = [(kvHead: 1, block: 3, rows: 8), (kvHead: 0, block: 1, rows: 64), (kvHead: 1, block: 0, rows: 64)]
        var offsets: [Int] = [], end = 0
        for b in moved {
            offsets.append(end)
            end += format.blockBytes(rows: b.rows)
            // Every block's K, scale slot and V start on 16 bytes (V's wide loads; the copies' words need 4).
            XCTAssertEqual([format.keyBytes(rows: b.rows) % 16, format.blockBytes(rows: b.rows) % 16], [0, 0])
        }
        let sentinel: UInt8 = 0xA5
        var sender = HostKeys(n: owner.n, scales: owner.scales, kvRows: kvRows)
        var receiver = HostKeys(n: [Int8](repeating: 0x55, count: owner.n.count),
                                scales: [Float](repeating: -1, count: owner.scales.count), kvRows: kvRows)
        var payload = [UInt8](repeating: sentinel, count: end)
        try payload.withUnsafeMutableBytes { area in
            let base = UInt64(UInt(bitPattern: area.baseAddress!))
            for (b, offset) in zip(moved, offsets) {
                try sender.run { $0.copies(kvHead: b.kvHead, block: b.block, rows: b.rows, payloadBlock: base + UInt64(offset),
                                           intoPayload: true) }
            }
            for (b, offset) in zip(moved, offsets) {
                try receiver.run { $0.copies(kvHead: b.kvHead, block: b.block, rows: b.rows, payloadBlock: base + UInt64(offset),
                                             intoPayload: false) }
            }
        }
        // What arrives: the owner's rows and scale of each block that came; nothing else of the receiver's K
        // is written (not the blocks that did not come, not the rows past the partial block's end, which are
        // zeros in a ring store's K from the start).
        var expected = HostKeys(n: receiver.n.map { _ in 0x55 }, scales: receiver.scales.map { _ in -1 }, kvRows: kvRows)
        for (b, offset) in zip(moved, offsets) {
            let label = "kv head \(b.kvHead), block \(b.block), seed \(seed)"
            let first = (b.kvHead * kvRows + b.block * blockK) * dim
            let ownerRows = Array(owner.n[first..<(first + b.rows * dim)])
            let scale = owner.scales[b.kvHead * blocks + b.block]
            expected.n.replaceSubrange(first..<(first + b.rows * dim), with: ownerRows)
            expected.scales[b.kvHead * blocks + b.block] = scale
            // In the payload: the int8 rows, the scale, then padding and V (which the store copies itself) untouched.
            XCTAssertEqual(payload[offset..<(offset + b.rows * dim)].map { Int8(bitPattern: $0) }, ownerRows, label)
            let scaleBytes = Array(payload[(offset + b.rows * dim)..<(offset + b.rows * dim + 4)])
            XCTAssertEqual(scaleBytes.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }, scale.bitPattern, label)
            XCTAssertTrue(payload[(offset + b.rows * dim + 4)..<(offset + format.blockBytes(rows: b.rows))].allSatisfy { $0 == sentinel },
                          label)
        }
        XCTAssertEqual(receiver.n, expected.n, "int8 rows, seed \(seed)")
        XCTAssertEqual(receiver.scales.map { $0.bitPattern }, expected.scales.map { $0.bitPattern }, "scales, seed \(seed)")
    }
}

/// The int8 K and scales of one rank in host memory, with the copy tables of its `QuantizedKeys.Places`
/// run as `sparge_copy_blocks` runs them.
private struct HostKeys {
    var n: [Int8]
    var scales: [Float]
    let kvRows: Int
    let dim = 128, blockK = 64

    mutating func run(_ table: (QuantizedKeys.Places) -> [UInt64]) throws {
        try n.withUnsafeMutableBytes { keys in
            try scales.withUnsafeMutableBytes { scales in
                let places = QuantizedKeys.Places(keys: UInt64(UInt(bitPattern: keys.baseAddress!)),
                                                  scales: UInt64(UInt(bitPattern: scales.baseAddress!)),
                                                  dim: dim, blockK: blockK, kvRows: kvRows)
                let copies = table(places)
                for c in stride(from: 0, to: copies.count, by: 3) {
                    let (source, destination, bytes) = (copies[c], copies[c + 1], copies[c + 2])
                    // What the kernel takes: whole 4-byte words at 4-byte addresses.
                    guard bytes % 4 == 0, source % 4 == 0, destination % 4 == 0 else {
                        throw SpargeError.invalidArgument("copy of \(bytes) bytes from \(source) to \(destination)")
                    }
                    UnsafeMutableRawPointer(bitPattern: UInt(destination))!
                        .copyMemory(from: UnsafeRawPointer(bitPattern: UInt(source))!, byteCount: Int(bytes))
                }
            }
        }
    }
}
