import CSparge
import SpargeKernels

/// A caller's `sparge_tensor` `[B, H, rows, D]`, checked, with the name the messages give it (`q`, `out`…).
struct TensorDescriptor {
    let name: String
    let raw: sparge_tensor
    let element: StorageFormat
    let place: TensorPlace

    var shape: [Int] { [raw.shape.0, raw.shape.1, raw.shape.2, raw.shape.3].map { Int($0) } }
    var strides: [Int] { [raw.strides.0, raw.strides.1, raw.strides.2, raw.strides.3].map { Int($0) } }
    var batch: Int { shape[0] }
    var heads: Int { shape[1] }
    var rows: Int { shape[2] }
    var dim: Int { shape[3] }

    /// Reads and checks `pointer`; the message names the tensor, its shape and its dtype.
    init(_ name: String, _ pointer: UnsafePointer<sparge_tensor>?) throws {
        guard let pointer else { throw CError(SPARGE_ERROR_INVALID_ARGUMENT, "\(name): no tensor (NULL)") }
        self.name = name
        raw = pointer.pointee
        let shape = [raw.shape.0, raw.shape.1, raw.shape.2, raw.shape.3].map { Int($0) }
        let strides = [raw.strides.0, raw.strides.1, raw.strides.2, raw.strides.3].map { Int($0) }
        switch raw.dtype {
        case Int32(SPARGE_DTYPE_F32.rawValue): element = .f32
        case Int32(SPARGE_DTYPE_BF16.rawValue): element = .bf16
        case Int32(SPARGE_DTYPE_F16.rawValue): element = .f16
        default:
            throw CError(SPARGE_ERROR_INVALID_ARGUMENT, "\(name) \(shape): dtype code \(raw.dtype) is none of "
                + "float32, bfloat16, float16")
        }
        switch raw.device_type {
        case Int32(SPARGE_DEVICE_CPU.rawValue): place = .host
        case Int32(SPARGE_DEVICE_CUDA.rawValue):
            // Read in place by the CUDA engine's resident pass; the CPU engine refuses it with a message.
            place = .device(backend: "cuda", ordinal: Int(raw.device_id))
        default:
            throw CError(SPARGE_ERROR_UNSUPPORTED, "\(name) \(shape): device type \(raw.device_type) is neither "
                + "the CPU (1) nor CUDA (2)")
        }
        guard shape.allSatisfy({ $0 >= 0 }), strides.allSatisfy({ $0 >= 0 }) else {
            throw CError(SPARGE_ERROR_INVALID_ARGUMENT, "\(name): shape \(shape) and strides \(strides) must not be "
                + "negative (pass a copy of a flipped array)")
        }
        guard raw.data != nil || shape.contains(0) else {
            throw CError(SPARGE_ERROR_INVALID_ARGUMENT, "\(name) \(shape): data is NULL")
        }
    }

    /// The bytes from `data` to one past the last element the view reaches.
    var byteExtent: Int {
        if shape.contains(0) { return 0 }
        return (zip(shape, strides).reduce(0) { $0 + ($1.0 - 1) * $1.1 } + 1) * element.byteSize
    }

    /// Batch item `b` as an `[H, rows, D]` view of the caller's memory (no copy).
    func item(_ b: Int) throws -> Tensor {
        // An empty tensor may come with a NULL data pointer; its view reads nothing, so any non-null base does.
        let base = raw.data ?? UnsafeMutableRawPointer(bitPattern: MemoryLayout<Float>.alignment)!
        let buffer = TensorBuffer(borrowing: base, byteCount: byteExtent, place: place)
        return try Tensor(buffer: buffer, element: element, shape: Array(shape[1...]), strides: Array(strides[1...]),
                          offset: b * strides[0])
    }

    /// Writes `values` (`[H, rows, D]` fp32) into batch item `b` of this tensor, converting to its dtype.
    func write(_ values: Tensor3, item b: Int) {
        let (h, n, d) = (values.heads, values.rows, values.dim)
        let size = element.byteSize, (sh, sn, sd) = (strides[1], strides[2], strides[3])
        guard let base = raw.data, h > 0, n > 0, d > 0 else { return }
        let chunk = 256, chunks = (n + chunk - 1) / chunk
        let (element, batchStride) = (element, strides[0])
        values.data.withUnsafeBufferPointer { source in
            // On the call's threads (HostParallelism), which also take the caller's fresh pages' faults.
            HostParallelism.forEach(h * chunks) { item in
                let head = item / chunks, first = (item % chunks) * chunk
                for row in first..<min(n, first + chunk) {
                    let from = source.baseAddress! + values.offset(head: head, row: row)
                    let at = b * batchStride + head * sh + row * sn
                    if sd == 1 {
                        element.convert(from, count: d, to: base + at * size)
                    } else {
                        for i in 0..<d { element.convert(from + i, count: 1, to: base + (at + i * sd) * size) }
                    }
                }
            }
        }
    }
}
