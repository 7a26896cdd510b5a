import SpargeKernels

/// For every key block of every kv head, which ranks need it (DESIGN.md §2.4).
///
/// Each rank ORs its own mask rows into one bit per (kv head, key block) — a kv block is needed when any
/// query head of its group computes it — and the ranks allgather those bitsets. Every rank then holds the
/// same table, from which the size of every ring message follows without a handshake.
public struct NeedTable: Sendable, Equatable {
    /// Number of ranks.
    public let ranks: Int
    /// Key/value heads.
    public let kvHeads: Int
    /// Key blocks in the sequence.
    public let keyBlocks: Int
    /// Per rank, a bitset over `kvHead · keyBlocks + block`.
    @usableFromInline let bits: [[UInt8]]

    /// The table from every rank's packed bitset, in rank order (as `localBits` returns them).
    public init(ranks: Int, kvHeads: Int, keyBlocks: Int, packed: [[UInt8]]) {
        precondition(packed.count == ranks, "NeedTable: \(packed.count) bitsets for \(ranks) ranks")
        let bytes = NeedTable.byteCount(kvHeads: kvHeads, keyBlocks: keyBlocks)
        precondition(packed.allSatisfy { $0.count == bytes }, "NeedTable: bitset of the wrong size")
        self.ranks = ranks
        self.kvHeads = kvHeads
        self.keyBlocks = keyBlocks
        self.bits = packed
    }

    /// Bytes of one rank's packed bitset.
    public static func byteCount(kvHeads: Int, keyBlocks: Int) -> Int { (kvHeads * keyBlocks + 7) / 8 }

    /// One rank's packed bitset: bit `(g, j)` is set when a query head of group `g` computes key block `j`
    /// in any of `mask`'s rows.
    public static func localBits(mask: BlockMask, kvHeads: Int) -> [UInt8] {
        precondition(mask.heads % kvHeads == 0, "query heads \(mask.heads) not a multiple of kv heads \(kvHeads)")
        let group = mask.heads / kvHeads
        let nk = mask.keyBlocks
        var packed = [UInt8](repeating: 0, count: byteCount(kvHeads: kvHeads, keyBlocks: nk))
        // A row that is a prefix `0..<n` (every row of a dense mask) only widens its kv head's longest prefix;
        // the others set their keys one by one.
        var prefixes = [Int](repeating: 0, count: kvHeads)
        mask.keys.withUnsafeBufferPointer { keys in
            for h in 0..<mask.heads {
                let g = h / group
                for row in 0..<mask.rowCount {
                    let r = h * mask.rowCount + row
                    let (start, end) = (mask.rowStarts[r], mask.rowStarts[r + 1])
                    if end > start && Int(keys[end - 1]) == end - start - 1 {
                        prefixes[g] = max(prefixes[g], end - start)
                        continue
                    }
                    for i in start..<end {
                        let bit = g * nk + Int(keys[i])
                        packed[bit >> 3] |= 1 << UInt8(bit & 7)
                    }
                }
            }
        }
        for g in 0..<kvHeads {
            for j in 0..<prefixes[g] {
                let bit = g * nk + j
                packed[bit >> 3] |= 1 << UInt8(bit & 7)
            }
        }
        return packed
    }

    /// Whether `rank` computes key block `block` of kv head `kvHead`.
    @inlinable public func needs(rank: Int, kvHead: Int, block: Int) -> Bool {
        let bit = kvHead * keyBlocks + block
        return bits[rank][bit >> 3] & (1 << UInt8(bit & 7)) != 0
    }
}
