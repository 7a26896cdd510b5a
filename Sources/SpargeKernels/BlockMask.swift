/// The block mask rows of some query blocks against all key blocks, for every query head.
///
/// A single process holds every row; a rank of a distributed run holds the rows of its own query blocks
/// (`queryBlocks`, global indices, ascending). Bit `(head, row, key)` is 1 when query block
/// `queryBlocks[row]` of `head` is computed against key block `key`.
public struct BlockMask: Sendable, Equatable {
    /// Query heads.
    public let heads: Int
    /// Key blocks in the whole sequence (`nk`).
    public let keyBlocks: Int
    /// Global indices of the query blocks whose rows are held.
    public let queryBlocks: [Int]
    /// `[heads][queryBlocks.count][keyBlocks]`, 1 = computed.
    public var bits: [UInt8]

    /// An all-zero mask.
    public init(heads: Int, keyBlocks: Int, queryBlocks: [Int]) {
        self.heads = heads
        self.keyBlocks = keyBlocks
        self.queryBlocks = queryBlocks
        self.bits = [UInt8](repeating: 0, count: heads * queryBlocks.count * keyBlocks)
    }

    /// A mask over given bits (`[heads][queryBlocks.count][keyBlocks]`).
    public init(heads: Int, keyBlocks: Int, queryBlocks: [Int], bits: [UInt8]) {
        precondition(bits.count == heads * queryBlocks.count * keyBlocks, "BlockMask: wrong bit count")
        self.heads = heads
        self.keyBlocks = keyBlocks
        self.queryBlocks = queryBlocks
        self.bits = bits
    }

    /// Rows held per head.
    public var rowCount: Int { queryBlocks.count }

    @inlinable public func index(head: Int, row: Int, key: Int) -> Int {
        (head * queryBlocks.count + row) * keyBlocks + key
    }

    /// Whether `(head, row, key)` is computed; `row` indexes `queryBlocks`.
    @inlinable public subscript(head: Int, row: Int, key: Int) -> Bool {
        get { bits[index(head: head, row: row, key: key)] != 0 }
        set { bits[index(head: head, row: row, key: key)] = newValue ? 1 : 0 }
    }

    /// The computed key blocks of one row, ascending.
    public func keyBlockList(head: Int, row: Int) -> [Int] {
        let base = index(head: head, row: row, key: 0)
        return (0..<keyBlocks).filter { bits[base + $0] != 0 }
    }

    /// Number of computed blocks.
    public var computedCount: Int { bits.reduce(0) { $0 + Int($1) } }

    /// Where the rows of each held query block lie: its mask row, its first global token, its rows
    /// (`blockQ`, or fewer for the sequence's last block) and its first row among the process's query rows
    /// (the held blocks' rows concatenated in `queryBlocks` order).
    public func queryBlockSpans(blockQ: Int, seqLen: Int) -> [(row: Int, start: Int, rows: Int, localRow: Int)] {
        var localRow = 0
        return queryBlocks.enumerated().map { row, block in
            let rows = min(blockQ, seqLen - block * blockQ)
            defer { localRow += rows }
            return (row, block * blockQ, rows, localRow)
        }
    }
}
