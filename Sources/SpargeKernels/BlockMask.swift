/// The block mask rows of some query blocks against all key blocks, for every query head, stored sparse:
/// per (head, row) the list of computed key blocks.
///
/// A single process holds every row; a rank of a distributed run holds the rows of its own query blocks
/// (`queryBlocks`, global indices, ascending). Row `(head, row)` lists the key blocks that query block
/// `queryBlocks[row]` of `head` is computed against, ascending.
///
/// Memory is `8·(heads·rows + 1) + 4·computed` bytes — proportional to the computed blocks, never to
/// `rows · keyBlocks` (at 4M tokens a dense byte mask would take 2 GiB per head, of which under 1% is on).
/// A dense view exists only where a caller asks for one (``denseBits()``, ``denseRow(head:row:into:)``).
public struct BlockMask: Sendable, Equatable {
    /// Query heads.
    public let heads: Int
    /// Key blocks in the whole sequence (`nk`).
    public let keyBlocks: Int
    /// Global indices of the query blocks whose rows are held.
    public let queryBlocks: [Int]
    /// Row `r = head · rowCount + row` lists `keys[rowStarts[r] ..< rowStarts[r + 1]]`.
    public let rowStarts: [Int]
    /// The computed key blocks of every row, rows in order, each row ascending.
    public let keys: [Int32]

    /// A mask over given rows (CSR): `rowStarts` has `heads · queryBlocks.count + 1` non-decreasing entries
    /// from 0 to `keys.count`; each row's keys ascend and lie in `0..<keyBlocks`.
    public init(heads: Int, keyBlocks: Int, queryBlocks: [Int], rowStarts: [Int], keys: [Int32]) {
        precondition(rowStarts.count == heads * queryBlocks.count + 1 && rowStarts.first == 0
                     && rowStarts.last == keys.count, "BlockMask: row starts do not cover the keys")
        self.heads = heads
        self.keyBlocks = keyBlocks
        self.queryBlocks = queryBlocks
        self.rowStarts = rowStarts
        self.keys = keys
    }

    /// A mask with no computed block.
    public init(heads: Int, keyBlocks: Int, queryBlocks: [Int]) {
        self.init(heads: heads, keyBlocks: keyBlocks, queryBlocks: queryBlocks,
                  rowStarts: [Int](repeating: 0, count: heads * queryBlocks.count + 1), keys: [])
    }

    /// The mask of dense bits `[heads][queryBlocks.count][keyBlocks]` (nonzero = computed).
    public init(heads: Int, keyBlocks: Int, queryBlocks: [Int], dense bits: [UInt8]) {
        precondition(bits.count == heads * queryBlocks.count * keyBlocks, "BlockMask: wrong bit count")
        var builder = Builder(heads: heads, keyBlocks: keyBlocks, queryBlocks: queryBlocks)
        for r in 0..<(heads * queryBlocks.count) {
            builder.appendRow((0..<keyBlocks).lazy.filter { bits[r * keyBlocks + $0] != 0 })
        }
        self = builder.mask
    }

    /// Every block of every row computed (causal: only those left of the block-causal limit of `causalShape`).
    /// The key lists are written in one pass (a dense mask at 32K tokens and 8 heads holds a million keys).
    public static func full(heads: Int, keyBlocks: Int, queryBlocks: [Int],
                            causalShape: (blockQ: Int, blockK: Int)? = nil) -> BlockMask {
        let limits = queryBlocks.map { block in
            causalShape.map {
                MaskPredictor.blockCausalLimit(queryBlock: block, blockQ: $0.blockQ, blockK: $0.blockK,
                                               keyBlocks: keyBlocks)
            } ?? keyBlocks
        }
        var starts = [Int](repeating: 0, count: heads * limits.count + 1)
        for r in 0..<(heads * limits.count) { starts[r + 1] = starts[r] + limits[r % limits.count] }
        // Every row is a prefix of one ramp 0, 1, 2, …: copied row by row (an element-wise loop took 1 ms).
        let ramp = (0..<Int32(limits.max() ?? 0)).map { $0 }
        let keys = [Int32](unsafeUninitializedCapacity: starts.last!) { buffer, initialized in
            ramp.withUnsafeBufferPointer { ramp in
                for r in 0..<(heads * limits.count) where starts[r + 1] > starts[r] {
                    (buffer.baseAddress! + starts[r]).initialize(from: ramp.baseAddress!, count: starts[r + 1] - starts[r])
                }
            }
            initialized = starts.last!
        }
        return BlockMask(heads: heads, keyBlocks: keyBlocks, queryBlocks: queryBlocks, rowStarts: starts, keys: keys)
    }

    /// Whether every row lists a prefix of the key blocks (`0..<count`), as a dense mask's rows do: then the
    /// key at position `p` of a row is `p`. O(rows): the keys of a row ascend and differ, so a row of `n`
    /// keys whose last is `n − 1` is `0..<n`.
    public var rowsArePrefixes: Bool {
        (0..<(rowStarts.count - 1)).allSatisfy { r in
            let (start, end) = (rowStarts[r], rowStarts[r + 1])
            return start == end || Int(keys[end - 1]) == end - start - 1
        }
    }

    /// Rows held per head.
    public var rowCount: Int { queryBlocks.count }

    /// The computed key blocks of one row, ascending; `row` indexes `queryBlocks`.
    @inlinable public func keys(head: Int, row: Int) -> ArraySlice<Int32> {
        let r = head * queryBlocks.count + row
        return keys[rowStarts[r]..<rowStarts[r + 1]]
    }

    /// The computed key blocks of one row, ascending, as `Int`s.
    public func keyBlockList(head: Int, row: Int) -> [Int] { keys(head: head, row: row).map(Int.init) }

    /// Whether `(head, row, key)` is computed; `row` indexes `queryBlocks` (a binary search of the row).
    public subscript(head: Int, row: Int, key: Int) -> Bool {
        let r = head * queryBlocks.count + row
        let at = firstKeyIndex(atLeast: key, in: rowStarts[r]..<rowStarts[r + 1])
        return at < rowStarts[r + 1] && Int(keys[at]) == key
    }

    /// The first index in `range` (a part of one row, whose keys ascend) of `keys` holding a key block
    /// `≥ key`; `range.upperBound` when none does. A binary search.
    public func firstKeyIndex(atLeast key: Int, in range: Range<Int>) -> Int {
        // The ends first: a search from a row's start, or past its last key, needs no halving (a ring
        // range of every key block asks both for every tile).
        guard !range.isEmpty, Int(keys[range.lowerBound]) < key else { return range.lowerBound }
        if Int(keys[range.upperBound - 1]) < key { return range.upperBound }
        var (low, high) = (range.lowerBound, range.upperBound)
        while low < high {
            let mid = (low + high) / 2
            if Int(keys[mid]) < key { low = mid + 1 } else { high = mid }
        }
        return low
    }

    /// Number of computed blocks.
    public var computedCount: Int { keys.count }

    /// Bytes this mask holds (row starts and key lists).
    public var byteCount: Int { rowStarts.count * MemoryLayout<Int>.stride + keys.count * MemoryLayout<Int32>.stride }

    /// Writes row `(head, row)` as `keyBlocks` bytes (1 = computed) to `out`.
    public func denseRow(head: Int, row: Int, into out: UnsafeMutablePointer<UInt8>) {
        out.update(repeating: 0, count: keyBlocks)
        for j in keys(head: head, row: row) { out[Int(j)] = 1 }
    }

    /// The dense view `[heads][queryBlocks.count][keyBlocks]`, 1 = computed: `rows · keyBlocks` bytes, for
    /// callers that ask for it (files, tests).
    public func denseBits() -> [UInt8] {
        let rows = heads * queryBlocks.count
        return [UInt8](unsafeUninitializedCapacity: rows * keyBlocks) { buffer, initialized in
            for r in 0..<rows {
                denseRow(head: r / queryBlocks.count, row: r % queryBlocks.count, into: buffer.baseAddress! + r * keyBlocks)
            }
            initialized = rows * keyBlocks
        }
    }

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

extension BlockMask {
    /// Builds a mask row by row, in row order (`head · rowCount + row`).
    public struct Builder {
        public let heads: Int, keyBlocks: Int, queryBlocks: [Int]
        private var starts: [Int] = [0]
        private var keys: [Int32] = []

        public init(heads: Int, keyBlocks: Int, queryBlocks: [Int]) {
            self.heads = heads
            self.keyBlocks = keyBlocks
            self.queryBlocks = queryBlocks
            starts.reserveCapacity(heads * queryBlocks.count + 1)
        }

        /// Appends the next row: its computed key blocks, ascending.
        public mutating func appendRow<S: Sequence>(_ blocks: S) where S.Element: BinaryInteger {
            for j in blocks { keys.append(Int32(j)) }
            starts.append(keys.count)
        }

        /// The mask; every row must have been appended.
        public var mask: BlockMask {
            BlockMask(heads: heads, keyBlocks: keyBlocks, queryBlocks: queryBlocks, rowStarts: starts, keys: keys)
        }
    }

    /// A mask assembled from pieces that each hold consecutive rows (in row order): per piece, each row's
    /// count and the rows' keys concatenated. Pieces are built in parallel (by mask prediction) and joined
    /// here once.
    public static func joining(heads: Int, keyBlocks: Int, queryBlocks: [Int],
                               pieces: [(rowCounts: [Int32], keys: [Int32])]) -> BlockMask {
        var starts = [Int]()
        starts.reserveCapacity(heads * queryBlocks.count + 1)
        starts.append(0)
        var total = 0
        for piece in pieces {
            for c in piece.rowCounts {
                total += Int(c)
                starts.append(total)
            }
        }
        let keys = [Int32](unsafeUninitializedCapacity: total) { buffer, initialized in
            var at = 0
            for piece in pieces where !piece.keys.isEmpty {
                piece.keys.withUnsafeBufferPointer { (buffer.baseAddress! + at).update(from: $0.baseAddress!, count: $0.count) }
                at += piece.keys.count
            }
            initialized = total
        }
        return BlockMask(heads: heads, keyBlocks: keyBlocks, queryBlocks: queryBlocks, rowStarts: starts, keys: keys)
    }
}
