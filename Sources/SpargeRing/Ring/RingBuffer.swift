/// A payload buffer of the ring: floats at a stable address (MPI reads or writes it while workers compute).
final class RingBuffer {
    let capacity: Int
    let floats: UnsafeMutablePointer<Float>

    init(capacity: Int) {
        self.capacity = capacity
        floats = .allocate(capacity: max(1, capacity))
    }

    deinit { floats.deallocate() }

    func bytes(count floats: Int) -> UnsafeMutableRawBufferPointer {
        precondition(floats <= capacity, "ring payload of \(floats) floats exceeds the buffer's \(capacity)")
        return UnsafeMutableRawBufferPointer(start: self.floats, count: floats * MemoryLayout<Float>.stride)
    }
}
