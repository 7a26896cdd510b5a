import SpargeRing

/// The ring traffic a mask implies (in bytes of blocks laid out as `payload`), derived from the mask alone
/// (not from the ring's own schedule): a key block of rank `o` travels `max ((r − o) mod P)` hops over the
/// ranks `r` that need it, and the message of `o` after step `s` exists when some block still has more than
/// `s` hops to go.
struct ExpectedTraffic {
    var bytes = 0, messages = 0

    init(mask: BlockMask, layout: ShardLayout, kvHeads: Int, payload: PayloadFormat) {
        let p = layout.ranks, nk = layout.keyBlockCount
        let group = mask.heads / kvHeads
        // needed[r][g·nk + j]
        var needed = [[Bool]](repeating: [Bool](repeating: false, count: kvHeads * nk), count: p)
        for r in 0..<p {
            for i in layout.queryBlocks(rank: r) {
                for h in 0..<mask.heads {
                    for j in mask.keys(head: h, row: i) { needed[r][(h / group) * nk + Int(j)] = true }
                }
            }
        }
        for o in 0..<p {
            var longest = 0
            for g in 0..<kvHeads {
                for j in layout.keyBlocks(rank: o) {
                    let hops = (0..<p).filter { needed[$0][g * nk + j] }.map { ($0 - o + p) % p }.max() ?? 0
                    bytes += hops * payload.blockBytes(rows: min(layout.blockK, layout.seqLen - j * layout.blockK))
                    longest = max(longest, hops)
                }
            }
            messages += longest
        }
    }
}
