/// One key/value block of one kv head inside a ring payload.
public struct PayloadEntry: Sendable, Equatable {
    public let kvHead: Int
    public let block: Int
    /// Rows of this block (`blockK`, or fewer for the global last block).
    public let rows: Int
    /// Offset of the block in the payload, in bytes: its keys, then the rest as the payload's
    /// `PayloadFormat` lays it out.
    public let offset: Int

    public init(kvHead: Int, block: Int, rows: Int, offset: Int) {
        (self.kvHead, self.block, self.rows, self.offset) = (kvHead, block, rows, offset)
    }
}

/// Where a rank's key/value blocks live while a ring runs, and who computes with them: the seam between the
/// ring (which decides what travels and when) and a backend (host arrays and CPU tiles, or device memory
/// and GPU kernels).
///
/// At every step the ring makes one payload current — this rank's own blocks (`holdLocal`) or the payload
/// that arrived (`holdReceived`) — packs the blocks that travel on, posts its messages on the host buffers
/// the store hands out, and lets the store compute with the current payload while they travel. Payload
/// blocks lie at the entries' offsets as the store's `payloadFormat` lays them out, the same on both ends of
/// a message.
public protocol RingBlockStore: AnyObject {
    /// How this store lays out a block in the payloads it packs and receives; the ring sizes its messages
    /// by it (and refuses a store whose format is not its schedule's).
    var payloadFormat: PayloadFormat { get }

    /// Makes this rank's own blocks the current payload.
    ///
    /// - Parameter ownerBlocks: this rank's key blocks (ranges of global indices).
    func holdLocal(ownerBlocks: [Range<Int>]) throws

    /// Makes the payload that arrived in the last `receiveBuffer` (made of `entries`) the current one.
    ///
    /// - Parameter ownerBlocks: the key blocks of the rank the payload comes from (ranges of global
    ///   indices): every block of them that this rank's mask rows name is among `entries`.
    func holdReceived(_ entries: [PayloadEntry], ownerBlocks: [Range<Int>]) throws

    /// Writes the current payload's blocks `entries` (`byteCount` bytes in all) into host memory that MPI
    /// may read until the next `pack`, and returns it.
    func pack(_ entries: [PayloadEntry], byteCount: Int) throws -> UnsafeRawBufferPointer

    /// Host memory of `byteCount` bytes for the next payload to arrive in; it stays untouched by the store
    /// until `holdReceived`.
    func receiveBuffer(byteCount: Int) throws -> UnsafeMutableRawBufferPointer

    /// Computes with the current payload (it may return before a device has finished).
    ///
    /// - Parameters:
    ///   - threads: host worker threads the store may use.
    ///   - poll: called on this thread while the work runs, with the share done; the ring progresses its
    ///     messages with it.
    func attend(threads: Int, poll: ((Double) -> Void)?) throws

    /// Told as soon as the payload posted on the last `receiveBuffer` has arrived — often while `attend`'s
    /// work still runs — so that a store may start moving it (a GPU store copies it up on its copy stream,
    /// overlapping the kernel). Called once per received payload, before `holdReceived`.
    func payloadArrived() throws
}

extension RingBlockStore {
    /// Nothing to start: the host store computes from the receive buffer itself.
    public func payloadArrived() throws {}
}
