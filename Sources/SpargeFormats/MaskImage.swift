/// A picture of one head's block mask: query blocks down, key blocks across.
///
/// Colours: computed blocks dark grey, skipped blocks white. A query block (row) that is not self-similar
/// is tinted blue and a key block (column) that is not self-similar orange: dark tints where computed (the
/// algorithm forces those rows and columns on, so normally all of them), light tints where not; a block in
/// both is purple. With at least 6 pixels per block the last pixel row and column of each block are drawn
/// 15% darker, a grid that makes single blocks countable.
///
/// Size: each block is drawn `k × k` pixels, `k` chosen so that the longer side is about `targetSize`
/// pixels (at least 1 pixel per block). When the mask has more blocks than `maximumSize` on a side, it is
/// downsampled: each pixel covers `f × f` blocks and is computed (or tinted) if any of them is (OR), so a
/// sparse mask may look denser than it is; ``note`` says so.
public struct MaskImage: Sendable {
    /// The picture.
    public let image: PNGImage
    /// Pixels per block side (1 when downsampled).
    public let pixelsPerBlock: Int
    /// Blocks per pixel side (1 unless downsampled).
    public let blocksPerPixel: Int
    /// One line describing the scale, for a caption or a log.
    public var note: String {
        blocksPerPixel > 1
            ? "downsampled: each pixel covers \(blocksPerPixel)×\(blocksPerPixel) blocks, drawn computed if any is"
            : "each block is \(pixelsPerBlock)×\(pixelsPerBlock) pixels"
    }

    public static let computed = RGB(34, 34, 34)
    public static let skipped = RGB.white
    public static let rowTint = (computed: RGB(40, 90, 190), skipped: RGB(200, 222, 255))
    public static let columnTint = (computed: RGB(210, 105, 20), skipped: RGB(255, 222, 185))
    public static let bothTint = (computed: RGB(130, 50, 150), skipped: RGB(232, 210, 240))

    /// Draws head `head` of `bits` (`[heads, queryBlocks, keyBlocks]`, 0 or 1).
    ///
    /// - Parameters:
    ///   - rowNotSelfSimilar: per query block, whether it is not self-similar (default: none).
    ///   - columnNotSelfSimilar: per key block, whether it is not self-similar (default: none).
    ///   - targetSize: the longer side to aim for, in pixels (default 1024).
    ///   - maximumSize: the most blocks per side drawn without downsampling (default 1200).
    public init(bits: [UInt8], heads: Int, queryBlocks nq: Int, keyBlocks nk: Int, head: Int,
                rowNotSelfSimilar: [Bool]? = nil, columnNotSelfSimilar: [Bool]? = nil,
                targetSize: Int = 1024, maximumSize: Int = 1200) throws {
        // Arguments that do not describe a mask are errors a caller can handle, never a trap.
        func fail(_ what: String) -> FormatError { FormatError(path: "MaskImage", what) }
        guard nq > 0, nk > 0, (0..<heads).contains(head) else { throw fail("head \(head) of \(heads), \(nq)×\(nk) blocks") }
        guard bits.count == CheckedSize.product([heads, nq, nk]) else { throw fail("\(bits.count) bits for [\(heads), \(nq), \(nk)]") }
        guard rowNotSelfSimilar.map({ $0.count == nq }) ?? true else { throw fail("row flags must number \(nq)") }
        guard columnNotSelfSimilar.map({ $0.count == nk }) ?? true else { throw fail("column flags must number \(nk)") }
        guard targetSize > 0, maximumSize > 0 else { throw fail("sizes must be positive") }
        let longest = max(nq, nk)
        let f = longest > maximumSize ? (longest + targetSize - 1) / targetSize : 1
        let k = f > 1 ? 1 : max(1, targetSize / longest)
        blocksPerPixel = f
        pixelsPerBlock = k
        // cells: groups of f×f blocks, each drawn k×k pixels
        let (rows, columns) = ((nq + f - 1) / f, (nk + f - 1) / f)
        let rowFlag = (0..<rows).map { c in (c * f..<min(nq, c * f + f)).contains { rowNotSelfSimilar?[$0] ?? false } }
        let columnFlag = (0..<columns).map { c in
            (c * f..<min(nk, c * f + f)).contains { columnNotSelfSimilar?[$0] ?? false }
        }
        var image = try PNGImage(width: columns * k, height: rows * k)
        let base = head * nq * nk
        for cy in 0..<rows {
            for cx in 0..<columns {
                var on = false
                for i in cy * f..<min(nq, cy * f + f) where !on {
                    for j in cx * f..<min(nk, cx * f + f) where bits[base + i * nk + j] != 0 { on = true; break }
                }
                let tint: (computed: RGB, skipped: RGB)? = switch (rowFlag[cy], columnFlag[cx]) {
                case (true, true): Self.bothTint
                case (true, false): Self.rowTint
                case (false, true): Self.columnTint
                case (false, false): nil
                }
                let colour = on ? (tint?.computed ?? Self.computed) : (tint?.skipped ?? Self.skipped)
                let edge = colour.scaled(85)
                for y in 0..<k {
                    for x in 0..<k {
                        let onGrid = k >= 6 && (x == k - 1 || y == k - 1)
                        image[cx * k + x, cy * k + y] = onGrid ? edge : colour
                    }
                }
            }
        }
        self.image = image
    }
}
