/// Every rank's key-block summaries as one allgather delivers them, for a resident pass: the bytes go from
/// a backend's staging memory to MPI and from MPI's buffer to the backend again, never through
/// `BlockSummaries` arrays (at a million tokens they are 34 MB, and each copy of them cost milliseconds).
///
/// Layout: runs of consecutive key blocks, in rank order and each rank's token ranges in order; a run of
/// `count` blocks is its means `[heads][count][dim]` (f32, native byte order) followed by its flags
/// `[heads][count]` (1 = self-similar), `PackedKeySummaries.byteCount(blocks:heads:dim:)` bytes.
public struct PackedKeySummaries: Sendable {
    /// One run of key blocks in `bytes`.
    public struct Run: Sendable, Equatable {
        /// Global index of the run's first key block, its blocks, and where its means start in `bytes`.
        public let firstBlock: Int, count: Int, offset: Int
    }

    /// Key/value heads, head dimension, keys per block, key blocks of the sequence.
    public let heads: Int, dim: Int, blockSize: Int, keyBlocks: Int
    /// The runs, in the order of `bytes`; together they hold every key block once.
    public let runs: [Run]
    /// The runs' bytes.
    public internal(set) var bytes: [UInt8]

    /// The bytes of one run of `blocks` key blocks.
    public static func byteCount(blocks: Int, heads: Int, dim: Int) -> Int { heads * blocks * (dim * 4 + 1) }

    /// Room for the runs of `blocksOfRanks` (per rank, the key-block runs of its token ranges, in order),
    /// filled by `fill` with every byte (an allgather of each rank's packed runs).
    ///
    /// - Throws: `SpargeError.invalidArgument` unless the runs hold every one of `keyBlocks` blocks once; what
    ///   `fill` throws.
    public init(heads: Int, dim: Int, blockSize: Int, keyBlocks: Int, blocksOfRanks: [[Range<Int>]],
                fill: (UnsafeMutableRawBufferPointer) throws -> Void) throws {
        self.heads = heads
        self.dim = dim
        self.blockSize = blockSize
        self.keyBlocks = keyBlocks
        var runs: [Run] = []
        var offset = 0
        for blocks in blocksOfRanks.joined() {
            runs.append(Run(firstBlock: blocks.lowerBound, count: blocks.count, offset: offset))
            offset += Self.byteCount(blocks: blocks.count, heads: heads, dim: dim)
        }
        var next = 0
        for run in runs.sorted(by: { $0.firstBlock < $1.firstBlock }) {
            guard run.firstBlock == next else {
                throw SpargeError.invalidArgument("key summaries: the ranks' runs leave key block \(next) out or hold it twice")
            }
            next += run.count
        }
        guard next == keyBlocks else {
            throw SpargeError.invalidArgument("key summaries: runs of \(next) key blocks for \(keyBlocks)")
        }
        self.runs = runs
        bytes = try [UInt8](unsafeUninitializedCapacity: offset) { buffer, initialized in
            try fill(UnsafeMutableRawBufferPointer(buffer))
            initialized = offset
        }
    }

    /// Where, in `bytes`, the means of head `h` of `run` start (`run.count · dim` floats), and its flags
    /// (`run.count` bytes).
    public func meansOffset(of run: Run, head h: Int) -> Int {
        Self.offsets(ofRunAt: run.offset, count: run.count, heads: heads, dim: dim, head: h).means
    }
    public func flagsOffset(of run: Run, head h: Int) -> Int {
        Self.offsets(ofRunAt: run.offset, count: run.count, heads: heads, dim: dim, head: h).flags
    }

    /// The layout itself: in a run of `count` blocks whose bytes start at `runOffset`, where head `h`'s means
    /// and its flags start (for whoever packs a run, host or device).
    public static func offsets(ofRunAt runOffset: Int, count: Int, heads: Int, dim: Int, head h: Int) -> (means: Int, flags: Int) {
        (runOffset + h * count * dim * 4, runOffset + heads * count * dim * 4 + h * count)
    }

    /// The flags of every key block, `[heads][keyBlocks]`.
    public var flags: [UInt8] {
        var all = [UInt8](repeating: 0, count: heads * keyBlocks)
        for run in runs {
            for h in 0..<heads {
                let from = flagsOffset(of: run, head: h)
                all.replaceSubrange((h * keyBlocks + run.firstBlock)..<(h * keyBlocks + run.firstBlock + run.count),
                                    with: bytes[from..<(from + run.count)])
            }
        }
        return all
    }

    /// Every key block's summary in one value, as `BlockSummaries(concatenating:)` of the runs in block order
    /// would give (for checks; a resident pass uploads from `bytes`).
    public var summaries: BlockSummaries {
        var means = [Float](repeating: 0, count: heads * keyBlocks * dim)
        bytes.withUnsafeBytes { raw in
            means.withUnsafeMutableBytes { out in
                for run in runs {
                    for h in 0..<heads {
                        out.baseAddress!.advanced(by: (h * keyBlocks + run.firstBlock) * dim * 4)
                            .copyMemory(from: raw.baseAddress! + meansOffset(of: run, head: h), byteCount: run.count * dim * 4)
                    }
                }
            }
        }
        return BlockSummaries(heads: heads, dim: dim, blockSize: blockSize, firstBlock: 0, count: keyBlocks,
                              means: means, flags: flags)
    }

    /// `runs` in this layout, one after the other: what one rank gives the allgather.
    public static func pack(_ runs: [BlockSummaries]) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(runs.reduce(0) { $0 + byteCount(blocks: $1.count, heads: $1.heads, dim: $1.dim) })
        for run in runs {
            run.means.withUnsafeBytes { bytes.append(contentsOf: $0) }
            bytes.append(contentsOf: run.flags)
        }
        return bytes
    }
}
