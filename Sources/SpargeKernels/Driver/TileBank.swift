/// The tiles of one `AttentionPlan`, as the driver sees them: the vector tiles of an `AttentionTileArena`,
/// or their scalar twins (the reference in tests). Tile `t` is `plan.tiles[t]`; a worker computes with up
/// to `slots` tiles of one query block at a time.
protocol TileBank: AnyObject, Sendable {
    /// What one worker thread needs while it computes (packed queries, a score block).
    func makeWorker(slots: Int) -> AnyObject?
    func reset(tile: Int, rowCount: Int, queryStart: Int)
    func load(tile: Int, slot: Int, worker: AnyObject?, queries: UnsafePointer<Float>)
    func visit(tile: Int, slot: Int, worker: AnyObject?, keys: UnsafePointer<Float>, values: UnsafePointer<Float>,
               keyCount: Int, keyStart: Int)
    func finish(tile: Int, output: UnsafeMutablePointer<Float>, lse: UnsafeMutablePointer<Float>)
    func statistics(tile: Int) -> AttentionStatistics
}

/// `AttentionTile`s whose state lives in one arena and whose queries and scores live in each worker's
/// `AttentionScratch`.
final class VectorTileBank: TileBank, @unchecked Sendable {
    let arena: AttentionTileArena
    /// Scratch for handles that touch only tile state (reset, finish); never computed with.
    let stateScratch: AttentionScratch

    init(plan: AttentionPlan, headDim: Int) {
        // Tiles keep only their online-softmax state (33 KB at D = 128, against 81 KB with their packed
        // queries and score block): they live for the whole ring, while queries are packed into a worker's
        // scratch each time a tile computes — once per ring step, ~1/256 of the work of one key block.
        arena = AttentionTileArena(tiles: plan.tiles.count, headDim: headDim, config: plan.config, holdsScratch: false)
        stateScratch = AttentionScratch(for: arena, slots: 1)
    }

    func makeWorker(slots: Int) -> AnyObject? { AttentionScratch(for: arena, slots: slots) }

    func reset(tile: Int, rowCount: Int, queryStart: Int) {
        arena.tile(tile, scratch: stateScratch, slot: 0).reset(rowCount: rowCount, queryStart: queryStart)
    }

    func load(tile: Int, slot: Int, worker: AnyObject?, queries: UnsafePointer<Float>) {
        arena.tile(tile, scratch: unsafeDowncast(worker!, to: AttentionScratch.self), slot: slot).load(queries: queries)
    }

    @inline(__always)
    func visit(tile: Int, slot: Int, worker: AnyObject?, keys: UnsafePointer<Float>, values: UnsafePointer<Float>,
               keyCount: Int, keyStart: Int) {
        arena.tile(tile, scratch: unsafeDowncast(worker!, to: AttentionScratch.self), slot: slot)
            .visit(keys: keys, values: values, keyCount: keyCount, keyStart: keyStart)
    }

    func finish(tile: Int, output: UnsafeMutablePointer<Float>, lse: UnsafeMutablePointer<Float>) {
        arena.tile(tile, scratch: stateScratch, slot: 0).finish(output: output, lse: lse)
    }

    func statistics(tile: Int) -> AttentionStatistics { arena.statistics(ofTile: tile) }
}

/// `ScalarAttentionTile`s, one object each: the plain loops the vector tiles are checked against, driven by
/// the same driver.
final class ScalarTileBank: TileBank, @unchecked Sendable {
    let tiles: [ScalarAttentionTile]

    init(plan: AttentionPlan, headDim: Int) {
        tiles = plan.tiles.map { _ in ScalarAttentionTile(headDim: headDim, config: plan.config) }
    }

    func makeWorker(slots: Int) -> AnyObject? { nil }

    func reset(tile: Int, rowCount: Int, queryStart: Int) { tiles[tile].reset(rowCount: rowCount, queryStart: queryStart) }

    func load(tile: Int, slot: Int, worker: AnyObject?, queries: UnsafePointer<Float>) { tiles[tile].load(queries: queries) }

    func visit(tile: Int, slot: Int, worker: AnyObject?, keys: UnsafePointer<Float>, values: UnsafePointer<Float>,
               keyCount: Int, keyStart: Int) {
        tiles[tile].visit(keys: keys, values: values, keyCount: keyCount, keyStart: keyStart)
    }

    func finish(tile: Int, output: UnsafeMutablePointer<Float>, lse: UnsafeMutablePointer<Float>) {
        tiles[tile].finish(output: output, lse: lse)
    }

    func statistics(tile: Int) -> AttentionStatistics { tiles[tile].statistics }
}
