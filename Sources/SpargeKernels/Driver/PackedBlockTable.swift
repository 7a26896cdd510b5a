#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// A key/value block converted once per `attend` call into the operands of a tile's products (int8's
/// integers, the bf16 tiles' layout), which every tile that visits the block then reads.
public protocol PackedKeyValueBlock: AnyObject, Sendable {
    /// Bytes of the storage of a block of up to `blockK` rows of `headDim` (a multiple of 64).
    static func storageBytes(blockK: Int, headDim: Int) -> Int
    /// A block of up to `blockK` rows of `headDim` in `storage` (`storageBytes` bytes on a cache line).
    init(blockK: Int, headDim: Int, storage: PackedBlockStorage)
    /// Converts `rows` (≤ blockK) rows of keys and values (`rows × D`, row-major fp32).
    func fill(keys: UnsafePointer<Float>, values: UnsafePointer<Float>, rows: Int)
    /// Converts `rows` rows stored in `format` straight from that format when the block knows how (the same
    /// result as `fill` on the widened rows), and says whether it did.
    func fill(stored keys: UnsafeRawPointer, values: UnsafeRawPointer, rows: Int, format: StorageFormat) -> Bool
    /// Rows held.
    var rows: Int { get }
    /// Where its converted keys and values start, and the bytes of each (what a visit reads first).
    var keyOperands: UnsafeRawPointer { get }
    var valueOperands: UnsafeRawPointer { get }
    var operandBytes: Int { get }
}

/// Where a packed block's bytes lie: allocated for the block, and freed with it, or in a caller's memory,
/// which the caller keeps while the block lives (a `PackedBlockTable`'s one allocation for all its blocks).
public struct PackedBlockStorage: @unchecked Sendable {
    /// The first byte, on a cache line.
    public let base: UnsafeMutableRawPointer
    private let owned: Bool

    /// `byteCount` bytes of the block's own, on a cache line.
    public static func allocated(byteCount: Int) -> PackedBlockStorage {
        PackedBlockStorage(base: .allocate(byteCount: max(1, byteCount), alignment: 64), owned: true)
    }

    /// Bytes at `base` (on a cache line) that the caller owns.
    public static func borrowed(_ base: UnsafeMutableRawPointer) -> PackedBlockStorage {
        PackedBlockStorage(base: base, owned: false)
    }

    /// Frees the bytes if they are the block's own (its deinit calls this).
    func release() { if owned { base.deallocate() } }
}

extension PackedKeyValueBlock {
    /// A block of up to `blockK` rows of `headDim` with storage of its own.
    public init(blockK: Int, headDim: Int) {
        self.init(blockK: blockK, headDim: headDim,
                  storage: .allocated(byteCount: Self.storageBytes(blockK: blockK, headDim: headDim)))
    }

    /// By default blocks convert from fp32 only.
    public func fill(stored keys: UnsafeRawPointer, values: UnsafeRawPointer, rows: Int,
                     format: StorageFormat) -> Bool {
        false
    }
}

/// The blocks of a `KeyValueBlockTable` converted to one kind of `PackedKeyValueBlock`, each once per
/// `attend` call (and not once per query block that visits it), by the first worker that needs it.
///
/// Converting every block before the tiles started was a phase of its own bound by memory bandwidth (8 ms of
/// the Xeon's 111 ms sparse pass at 32K × 8 heads, every thread reading K/V at once); filled where they are
/// first needed, the blocks are read while the other workers compute, and the workers ask for the next
/// visit's blocks ahead (`blockFilledAhead`) so that a block is seldom waited for. The blocks' storage is one
/// allocation made with the table, and each block object is made in it by the worker that fills it: 4096
/// objects with storage of their own, made one after the other on the calling thread, cost another 2 ms
/// there, and as much again to free.
///
/// The driver looks up each block a query block visits twice (for the visit, and ahead of it), on every worker
/// thread at once, so a lookup of a filled block writes no shared state: the table is not generic (a generic
/// table's lookup from non-generic code instantiated its metadata every time, ~6% of the driver's time around
/// the kernels, `perf record`), and it hands out blocks uncounted (`Unmanaged`; it owns them while it lives),
/// since every worker of a kv head counting references to the same blocks would write their cache lines from
/// every core.
final class PackedBlockTable: @unchecked Sendable {
    /// Per (kv head, key block) as the table's `block(kvHead:block:)`: the block's place in `storage`, or −1
    /// where the table has none.
    private let places: [Int32]
    /// The blocks' storage, `blockBytes` each.
    private let storage: UnsafeMutableRawPointer
    private let blockBytes: Int
    /// Per (kv head, key block): the block, retained, once a worker has made it (published by `states`).
    private let made: UnsafeMutablePointer<Unmanaged<AnyObject>?>
    /// Per (kv head, key block): `unfilled`, `filling` (a worker claimed it) or `filled`.
    private let states: UnsafeMutablePointer<Atomic<UInt8>>
    /// A block in the given storage, filled from the table's rows.
    private let makeBlock: (UnsafeMutableRawPointer) -> any PackedKeyValueBlock
    private let table: KeyValueBlockTable
    private let headDim: Int
    let keyBlocks: Int
    private static let (unfilled, filling, filled): (UInt8, UInt8, UInt8) = (0, 1, 2)

    /// Room for the blocks of `table` as `Block`s, made and filled as the workers first need them.
    init<Block: PackedKeyValueBlock>(_ table: KeyValueBlockTable, as _: Block.Type, headDim: Int) {
        (self.table, self.headDim, keyBlocks) = (table, headDim, table.keyBlocks)
        let count = table.kvHeads * table.keyBlocks
        var held: Int32 = 0
        places = (0..<count).map { i in
            guard table.block(kvHead: i / table.keyBlocks, block: i % table.keyBlocks) != nil else { return -1 }
            defer { held += 1 }
            return held
        }
        blockBytes = Block.storageBytes(blockK: table.blockK, headDim: headDim)
        storage = .allocate(byteCount: max(1, Int(held) * blockBytes), alignment: 64)
        made = .allocate(capacity: max(1, count))
        made.initialize(repeating: nil, count: count)
        states = .allocate(capacity: max(1, count))
        for i in 0..<count { (states + i).initialize(to: Atomic(Self.unfilled)) }
        let blockK = table.blockK
        makeBlock = { Block(blockK: blockK, headDim: headDim, storage: .borrowed($0)) }
    }

    deinit {
        for i in places.indices { made[i]?.release() }
        made.deallocate()
        states.deinitialize(count: places.count)
        states.deallocate()
        storage.deallocate()
    }

    /// The block `(kvHead, block)` converted: by this thread if no worker has started on it, else once the
    /// worker that has is done. Nil when the table does not hold it.
    @inline(__always)
    func filledBlock(kvHead: Int, block: Int) -> Unmanaged<AnyObject>? {
        let i = kvHead * keyBlocks + block
        guard places[i] >= 0 else { return nil }
        if states[i].load(ordering: .acquiring) != Self.filled {
            if claim(i) {
                fill(i)
            } else {
                while states[i].load(ordering: .acquiring) != Self.filled { sched_yield() }
            }
        }
        return made[i]
    }

    /// For asking ahead: the block `(kvHead, block)` converted by this thread if no worker has started on it,
    /// and returned when it is converted; nil while another worker converts it, or when the table does not
    /// hold it.
    @inline(__always)
    func blockFilledAhead(kvHead: Int, block: Int) -> Unmanaged<AnyObject>? {
        let i = kvHead * keyBlocks + block
        guard places[i] >= 0 else { return nil }
        let state = states[i].load(ordering: .acquiring)
        if state == Self.filled { return made[i] }
        guard state == Self.unfilled, claim(i) else { return nil }
        fill(i)
        return made[i]
    }

    /// Whether this thread takes block `i` from unfilled to filling.
    @inline(__always)
    private func claim(_ i: Int) -> Bool {
        states[i].compareExchange(expected: Self.unfilled, desired: Self.filling, ordering: .acquiring).exchanged
    }

    /// Makes and converts block `i` (claimed by this thread) and publishes it. Blocks stored in 16 bits are
    /// packed from their words where the block can, else widened to fp32 first (exact; a copy made for the
    /// block, a small cost beside its conversion, and only for int8 tiles on 16-bit storage or bf16 tiles on
    /// f16).
    private func fill(_ i: Int) {
        let (g, j) = (i / keyBlocks, i % keyBlocks)
        let block = makeBlock(storage + Int(places[i]) * blockBytes)
        let stored = table.block(kvHead: g, block: j)!, rows = table.rows(of: j)
        if table.format == .f32 {
            block.fill(keys: stored.keys.assumingMemoryBound(to: Float.self),
                       values: stored.values.assumingMemoryBound(to: Float.self), rows: rows)
        } else if !block.fill(stored: stored.keys, values: stored.values, rows: rows, format: table.format) {
            let widened = UnsafeMutablePointer<Float>.allocate(capacity: 2 * rows * headDim)
            defer { widened.deallocate() }
            table.format.widen(stored.keys, count: rows * headDim, to: widened)
            table.format.widen(stored.values, count: rows * headDim, to: widened + rows * headDim)
            block.fill(keys: widened, values: widened + rows * headDim, rows: rows)
        }
        made[i] = Unmanaged.passRetained(block as AnyObject)
        states[i].store(Self.filled, ordering: .releasing)
    }
}
