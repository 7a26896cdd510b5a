/// Which kernels select a launch's mask rows from their scores, and the scratch they need (all give the CPU's
/// bits; they differ in how they use the GPU at a row length).
enum RowSelection: Equatable {
    /// `sparge_select_rows_sorted`, a thread block per row sorting the row in shared memory: rows whose
    /// probabilities and sort keys (4 bytes a key block, 8 to the next power of two) take at most 48 KiB.
    case sorted(threads: Int, sharedBytes: Int)
    /// `sparge_softmax_rows` (a thread per row) then `sparge_topk_rows` (a thread block per row, radix
    /// select): TopK over longer rows, at a cost that does not grow with k.
    case radix(TopKLaunch)
    /// `sparge_select_rows`, a thread per row with a heap in global memory: TopCdf over longer rows (at a
    /// million tokens a block per row would sort 16K keys and walk them one thread at a time), and dense rows.
    case heap

    /// `sparge_topk_rows`' launch: threads a row, the keys a row may keep in shared memory (a multiple of
    /// 4; a longer row reads its exps again each pass) and the dynamic shared bytes.
    struct TopKLaunch: Equatable {
        let threads: Int
        let cachedKeys: Int
        let sharedBytes: Int

        /// The kernel's bins (2048), scan buffers (two of `threads`) and three words, after the keys.
        static func fixedBytes(threads: Int) -> Int { (2048 + 2 * threads + 3) * 4 }

        /// The keys of `nk` key blocks cached where `sharedLimit` bytes allow.
        init(keyBlocks nk: Int, sharedLimit: Int, threads: Int = 256) {
            self.threads = threads
            let room = max(0, sharedLimit - Self.fixedBytes(threads: threads)) / 16 * 4
            cachedKeys = min((nk + 3) / 4 * 4, room)
            sharedBytes = cachedKeys * 4 + Self.fixedBytes(threads: threads)
        }
    }

    /// The selection for rows of `nk` key blocks and selection mode `mode` (0 dense, 1 TopCdf, 2 TopK), on a
    /// device that lets a thread block have `sharedLimit` bytes of shared memory; `radixTopK` false: the heap
    /// where the radix select would run.
    init(keyBlocks nk: Int, mode: Int32, sharedLimit: Int, radixTopK: Bool = true) {
        var sorted = 1
        while sorted < nk { sorted *= 2 }
        let bytes = sorted * 8 + nk * 4
        // The kernel's own static shared memory (its broadcast pair and 256 per-thread maxima) counts against
        // the same 48 KiB that a launch gets without opting in.
        let staticBytes = 4 * (2 + 256)
        if mode != 0 && bytes + staticBytes <= 48 * 1024 {
            self = .sorted(threads: min(256, max(32, sorted / 2)), sharedBytes: bytes)
        } else if mode == 2 && radixTopK {
            self = .radix(TopKLaunch(keyBlocks: nk, sharedLimit: sharedLimit))
        } else {
            self = .heap
        }
    }

    /// For traces: "sort", "radix select" or "heap".
    var name: String {
        switch self {
        case .sorted: "sort"
        case .radix: "radix select"
        case .heap: "heap"
        }
    }

    /// Whether `sparge_scores` writes the scores in octets (`sparge_topk.cu`) rather than a column per key
    /// block.
    var octets: Bool {
        if case .radix = self { return true }
        return false
    }

    /// Scratch bytes per mask row for rows of `nk` key blocks: scores (whole octets for the radix select)
    /// and, for the heap, its keys; for the radix select, the row's 1/sum.
    func scratchBytesPerRow(keyBlocks nk: Int) -> Int {
        switch self {
        case .sorted: nk * 4
        case .radix: (nk + 7) / 8 * 8 * 4 + 4
        case .heap: nk * 12
        }
    }

    /// Bytes of the scores of `rows` rows of `nk` key blocks.
    func scoreBytes(rows: Int, keyBlocks nk: Int) -> Int {
        rows * (octets ? (nk + 7) / 8 * 8 : nk) * 4
    }
}
