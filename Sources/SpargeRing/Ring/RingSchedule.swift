import SpargeKernels

/// What travels around the ring, derived on every rank from the shard layout and the need table alone
/// (DESIGN.md §2.5).
///
/// At step `s` rank `r` computes with the payload that originated at rank `o = (r − s) mod P` and forwards
/// to `r + 1` only the blocks that a rank further along — `o + s + 1 … o + P − 1` — still needs. Both ends
/// of every message derive the same block list, so no sizes are exchanged; an empty list means no message.
public struct RingSchedule: Sendable {
    /// One key/value block of one kv head inside a payload.
    public typealias Entry = PayloadEntry

    /// The shard layout.
    public let layout: ShardLayout
    /// Who needs which blocks.
    public let needs: NeedTable
    /// How a block lies in a payload (its bytes): the ring store's, which both ends of a message share.
    public let payload: PayloadFormat

    public init(layout: ShardLayout, needs: NeedTable, payload: PayloadFormat) {
        self.layout = layout
        self.needs = needs
        self.payload = payload
    }

    /// The schedule of blocks whose K and V rows travel as `format` (`PayloadFormat.storage`).
    public init(layout: ShardLayout, needs: NeedTable, headDim: Int, format: StorageFormat = .f32) {
        self.init(layout: layout, needs: needs, payload: .storage(format, headDim: headDim))
    }

    /// Ring neighbour that receives from `rank`.
    public func next(of rank: Int) -> Int { (rank + 1) % layout.ranks }
    /// Ring neighbour that sends to `rank`.
    public func previous(of rank: Int) -> Int { (rank + layout.ranks - 1) % layout.ranks }
    /// The rank whose payload `rank` holds at step `step`.
    public func origin(of rank: Int, step: Int) -> Int { ((rank - step) % layout.ranks + layout.ranks) % layout.ranks }

    /// The blocks of `origin`'s payload that leave the rank holding it after step `step`: those needed by
    /// ranks `origin + step + 1 … origin + P − 1`, kv head major, blocks ascending.
    public func forwarded(origin: Int, afterStep step: Int) -> [Entry] {
        let p = layout.ranks
        let later = (step + 1..<p).map { (origin + $0) % p }
        guard !later.isEmpty else { return [] }
        var entries: [Entry] = []
        var offset = 0
        for g in 0..<needs.kvHeads {
            for j in layout.keyBlocks(rank: origin)
            where later.contains(where: { needs.needs(rank: $0, kvHead: g, block: j) }) {
                let rows = rows(ofBlock: j)
                entries.append(Entry(kvHead: g, block: j, rows: rows, offset: offset))
                offset += payload.blockBytes(rows: rows)
            }
        }
        return entries
    }

    /// Bytes of a payload made of `entries`.
    public func byteCount(_ entries: [Entry]) -> Int {
        entries.last.map { $0.offset + payload.blockBytes(rows: $0.rows) } ?? 0
    }

    /// Bytes a dense ring (in the same payload format) sends per step-message from `origin` (every block of
    /// every kv head): the yardstick for the skipping ring.
    public func denseByteCount(origin: Int) -> Int {
        guard layout.ranks > 1 else { return 0 }
        return needs.kvHeads * layout.keyBlocks(rank: origin).reduce(0) { $0 + payload.blockBytes(rows: rows(ofBlock: $1)) }
    }

    /// Rows of key block `j`: `blockK`, fewer for the sequence's last.
    private func rows(ofBlock j: Int) -> Int { min(layout.blockK, layout.seqLen - j * layout.blockK) }
}
