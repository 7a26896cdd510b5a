import SpargeKernels
import SpargeTestSupport
import XCTest
@testable import SpargeCUDA

/// How K/V blocks are turned into the kernels' 16-bit types on the host, for every storage format.
final class StagingTests: XCTestCase {
    /// The integer bf16 → fp16 conversion is Swift's correctly rounded `Float16(Float)` for all 65536
    /// patterns (normals exactly, fp16 subnormals rounded to nearest even, zeros, ±∞, NaN as NaN), and says
    /// overflow exactly where a finite value becomes ±∞.
    func testBF16ToFP16EqualsFloat16ForEveryPattern() {
        var mismatches = 0, overflows = 0
        for b in 0...UInt16.max {
            let x = Float(bitPattern: UInt32(b) << 16)
            let expected = Float16(x)
            let got = HalfPrecision.fp16Bits(fromBF16: b)
            if x.isNaN {
                if !Float16(bitPattern: got.bits).isNaN { mismatches += 1 }
            } else if got.bits != expected.bitPattern {
                mismatches += 1
                if mismatches < 5 { XCTFail("bf16 0x\(String(b, radix: 16)) = \(x): got 0x\(String(got.bits, radix: 16)), Float16 gives 0x\(String(expected.bitPattern, radix: 16))") }
            }
            XCTAssertEqual(got.overflow, x.isFinite && expected.isInfinite, "overflow flag of \(x)")
            if got.overflow { overflows += 1 }
        }
        XCTAssertEqual(mismatches, 0)
        XCTAssertGreaterThan(overflows, 0, "some finite bf16 values must overflow fp16")
    }

    /// A block stored as bf16 or f16 stages to exactly what the same values stored as f32 stage to; a bf16
    /// block for the bf16 kernel is its own bits for K. Values beyond fp16's range are reported whatever the
    /// storage, and stage as bf16 when asked.
    func testEveryStorageFormatStagesLikeFloat32() {
        var g = SeededGenerator(seed: UInt64.random(in: 1...1_000_000))
        let count = 64 * 40 + 7
        for scale: Float in [1, 30000] {  // 30000·N(0,1) is past 65504 in about 3% of 2567 values
            let keys = (0..<count).map { _ in g.normal() * scale }
            let values = (0..<count).map { _ in g.normal() * scale }
            for precision in CUDAPrecision.allCases {
                for inBF16 in precision == .bf16 ? [false, true] : [false] {
                    for format in StorageFormat.allCases {
                        // The stored block, and the same values rounded to the format as f32.
                        let stored = storedBlock(keys, values, format)
                        let (k32, v32) = (keys.map(format.rounded), values.map(format.rounded))
                        var (ka, va) = ([UInt16](repeating: 0, count: count), [UInt16](repeating: 0, count: count))
                        var (kb, vb) = (ka, va)
                        let fitsStored = stored.withUnsafeBytes { raw in
                            HalfPrecision.stage(keys: raw.baseAddress!, values: raw.baseAddress! + count * format.byteSize,
                                                count: count, format: format, precision: precision, valuesInBF16: inBF16,
                                                keysTo: &ka, valuesTo: &va)
                        }
                        let fitsF32 = HalfPrecision.stage(keys: k32, values: v32, count: count, format: .f32,
                                                          precision: precision, valuesInBF16: inBF16, keysTo: &kb, valuesTo: &vb)
                        let label = "\(format) storage, \(precision) kernel, values in bf16: \(inBF16), scale \(scale)"
                        XCTAssertEqual(fitsStored, fitsF32, label)
                        XCTAssertEqual(ka, kb, label)
                        if fitsF32 || inBF16 { XCTAssertEqual(va, vb, label) }
                        if scale == 1 { XCTAssertTrue(fitsStored, label) }
                        if format == .bf16 && precision == .bf16 {
                            XCTAssertEqual(ka, Array(stored[0..<(count * 2)]).withUnsafeBytes { Array($0.bindMemory(to: UInt16.self)) },
                                           "\(label): K is copied as it is")
                        }
                    }
                }
            }
            if scale > 1 {
                var (k, v) = ([UInt16](repeating: 0, count: count), [UInt16](repeating: 0, count: count))
                XCTAssertFalse(HalfPrecision.stage(keys: keys, values: values, count: count, format: .f32, precision: .bf16,
                                                   valuesInBF16: false, keysTo: &k, valuesTo: &v),
                               "values beyond ±65504 must be reported")
            }
        }
    }

    /// Keys then values, each `count` elements in `format`, as bytes.
    func storedBlock(_ keys: [Float], _ values: [Float], _ format: StorageFormat) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: 2 * keys.count * format.byteSize)
        bytes.withUnsafeMutableBytes { raw in
            keys.withUnsafeBufferPointer { format.convert($0.baseAddress!, count: keys.count, to: raw.baseAddress!) }
            values.withUnsafeBufferPointer {
                format.convert($0.baseAddress!, count: values.count, to: raw.baseAddress! + keys.count * format.byteSize)
            }
        }
        return bytes
    }
}
