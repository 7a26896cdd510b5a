import Foundation
import SpargeFormats
import SpargeRing

/// `--mask-image`: the block mask of one head as a PNG, assembled on rank 0 from every rank's rows.
///
/// Large masks are reduced before they travel: cells of `f×f` blocks are OR-ed (a cell is dark when any of
/// its blocks is computed), with `f` chosen so that the longer side has at most about 1024 cells.
enum MaskPicture {
    /// Collective: the PNG's bytes on rank 0 (nil elsewhere), and the note to print once it is committed.
    static func png(result: ForwardResult, layout: ShardLayout, head: Int, comm: Communicator) throws
        -> (bytes: [UInt8], note: String)? {
        let nq = layout.queryBlockCount, nk = layout.keyBlockCount
        let longest = max(nq, nk)
        let f = longest > 1200 ? (longest + 1023) / 1024 : 1
        let rows = (nq + f - 1) / f, columns = (nk + f - 1) / f
        // grid cells, then one flag per row cell (not self-similar), OR-reduced over ranks
        var grid = [UInt8](repeating: 0, count: rows * columns + rows)
        let mask = result.mask
        let queryFlags = result.querySelfSimilar
        for (row, block) in mask.queryBlocks.enumerated() {
            for j in mask.keys(head: head, row: row) { grid[(block / f) * columns + Int(j) / f] = 1 }
            // (No flags: a dense pass pooled no summaries, and marks nothing.)
            if !queryFlags.isEmpty && queryFlags[head * mask.rowCount + row] == 0 { grid[rows * columns + block / f] = 1 }
        }
        comm.allreduceBitwiseOr(&grid)
        guard comm.rank == 0 else { return nil }
        let keyFlags = result.keySelfSimilar
        let kvHead = keyFlags.isEmpty ? 0 : head / (mask.heads / (keyFlags.count / nk))
        let columnFlags = (0..<columns).map { c in
            !keyFlags.isEmpty && (c * f..<min(nk, c * f + f)).contains { keyFlags[kvHead * nk + $0] == 0 }
        }
        let image = try MaskImage(bits: Array(grid[0..<(rows * columns)]), heads: 1, queryBlocks: rows,
                              keyBlocks: columns, head: 0,
                              rowNotSelfSimilar: grid[(rows * columns)...].map { $0 != 0 },
                              columnNotSelfSimilar: columnFlags)
        let reduced = f > 1 ? ", \(f)×\(f) blocks per cell" : ""
        return (image.image.pngData(), "sparge: mask of head \(head) (\(nq)×\(nk) blocks\(reduced)) written to")
    }
}
