import CSpargeKernels

/// The tiles of one `AttentionPlan`, as the driver sees them: the vector tiles of an `AttentionTileArena`,
/// or their scalar twins (the reference in tests). Tile `t` is `plan.tiles[t]`; a worker computes with up
/// to `slots` tiles of one query block at a time: `load` each into a slot, visit blocks, `unload` each. `output`
/// is the driver's output buffer `[Hq, rows, D]`, which a bank may use for its tiles' state until `finish`
/// writes the rows.
protocol TileBank: AnyObject, Sendable {
    /// What one worker thread needs while it computes (packed queries, a score block).
    func makeWorker(slots: Int) -> AnyObject?
    func reset(tile: Int, output: UnsafeMutablePointer<Float>)
    /// Makes the tile ready to visit blocks in `slot` of `worker` (the queries are `rowCount × D` rows).
    func load(tile: Int, slot: Int, worker: AnyObject?, output: UnsafeMutablePointer<Float>, queries: UnsafePointer<Float>)
    /// Ends the visits since `load`: the tile's state is kept where `finish` and the next `load` find it.
    func unload(tile: Int, slot: Int, worker: AnyObject?, output: UnsafeMutablePointer<Float>)
    /// Visits `blocks` key blocks at once (more than one only up to `visitBlocks`): their `keyCount` rows one
    /// after the other in `keys` and `values`, the first starting at key `keyStart`.
    func visit(tile: Int, slot: Int, worker: AnyObject?, output: UnsafeMutablePointer<Float>, keys: UnsafePointer<Float>,
               values: UnsafePointer<Float>, keyCount: Int, keyStart: Int, blocks: Int, upcoming: UpcomingBlock?)
    /// Key blocks one visit may take at once (`TileProducts.visitBlocks`): the driver groups up to this many
    /// whole blocks that the tile sees entirely, and the twin of a bank groups as the bank does.
    var visitBlocks: Int { get }
    /// What its tiles multiply with: other than fp32, they take blocks converted once per `attend` call
    /// (`visit(packed:)`, a block of the kind its products take, from a `PackedBlockTable`) rather than
    /// rounded fp32 rows.
    var products: TileProducts { get }
    /// `ahead`: those of the next visit's blocks that are already converted, asked for while this one computes.
    func visit(tile: Int, slot: Int, worker: AnyObject?, output: UnsafeMutablePointer<Float>,
               packed: UnsafeBufferPointer<Unmanaged<AnyObject>>, keyStart: Int,
               ahead: UnsafeBufferPointer<Unmanaged<AnyObject>>)
    /// Writes the tile's output rows (at their place in `output`) and LSE; `worker` is the caller's.
    func finish(tile: Int, worker: AnyObject?, output: UnsafeMutablePointer<Float>, lse: UnsafeMutablePointer<Float>)
    /// A tile whose every block comes in one call: `begin` starts it afresh in `slot` of `worker` (no state
    /// in `output`, no `reset`) and loads its queries; after its visits, `end` writes its output rows and LSE
    /// from that slot — no accumulator copied in or out, and no `finish`.
    func begin(tile: Int, slot: Int, worker: AnyObject?, queries: UnsafePointer<Float>)
    func end(tile: Int, slot: Int, worker: AnyObject?, output: UnsafeMutablePointer<Float>, lse: UnsafeMutablePointer<Float>)
    func statistics(tile: Int) -> AttentionStatistics
    /// Called on a worker thread when its share of an `attend` call is done: gives back what the thread
    /// holds for the tiles' products (AMX's tile registers, configured once per thread, not per visit).
    func workerDone()
}

/// `AttentionTile`s whose running max and sum live in one arena, whose queries and scores live in each
/// worker's `AttentionScratch`, and whose output accumulator lives in the tile's own rows of the output —
/// `D·L` floats, exactly the `L × D` rows of a full tile — so the state of a whole ring costs no memory
/// beyond the output. A tile with fewer rows than lanes (a partial block's last tile) keeps its
/// accumulator in a small side buffer instead. While a worker visits blocks with a tile, the accumulator
/// is copied into the worker's scratch (`load` … `unload`): there it starts on a cache line, where the
/// output's rows need not (a Swift array's elements start 48 bytes past a page), so that no tile or vector
/// row of the products spans two lines; the copies cost 2·D·L floats per tile and `attend` call, against
/// 2·D·L moved by every visit.
final class VectorTileBank: TileBank, @unchecked Sendable {
    let plan: AttentionPlan
    let arena: AttentionTileArena
    /// Scratch for handles that touch only tile state (reset); never computed with.
    let stateScratch: AttentionScratch
    /// Per tile: where its accumulator is, in floats from the output's base (full tiles) or from `side`.
    let offsets: [Int]
    let inOutput: [Bool]
    let side: UnsafeMutablePointer<Float>
    let headDim: Int

    /// Tiles of `isa` in `precision`; with `bf16Kernels`, bf16 tiles on those kernels (tests: the emulated ones).
    init(plan: AttentionPlan, headDim: Int, isa: CPUISA, precision: AttentionPrecision,
         bf16Kernels: sparge_bf16_tile_kernels? = nil) {
        self.plan = plan
        self.headDim = headDim
        let products = bf16Kernels == nil ? TileProducts.chosen(precision: precision, isa: isa, headDim: headDim) : .bf16Tiles
        arena = AttentionTileArena(tiles: plan.tiles.count, headDim: headDim, config: plan.config, holdsScratch: false,
                                   isa: isa, products: products, bf16Kernels: bf16Kernels)
        stateScratch = AttentionScratch(for: arena, slots: 1)
        let lanes = arena.lanes
        var offsets: [Int] = [], inOutput: [Bool] = []
        var sideTiles = 0
        for (t, tile) in plan.tiles.enumerated() {
            if tile.rowCount == lanes {
                offsets.append(plan.firstRow(ofTile: t) * headDim)
                inOutput.append(true)
            } else {
                offsets.append(sideTiles * headDim * lanes)
                inOutput.append(false)
                sideTiles += 1
            }
        }
        (self.offsets, self.inOutput) = (offsets, inOutput)
        side = .allocate(capacity: max(1, sideTiles * headDim * lanes))
    }

    deinit { side.deallocate() }

    @inline(__always)
    func accumulator(_ tile: Int, _ output: UnsafeMutablePointer<Float>) -> UnsafeMutablePointer<Float> {
        (inOutput[tile] ? output : side) + offsets[tile]
    }

    func makeWorker(slots: Int) -> AnyObject? { AttentionScratch(for: arena, slots: slots) }

    func reset(tile: Int, output: UnsafeMutablePointer<Float>) {
        arena.borrowedTile(tile, scratch: stateScratch, slot: 0, accumulator: accumulator(tile, output))
            .reset(rowCount: plan.tiles[tile].rowCount, queryStart: plan.tiles[tile].queryStart)
    }

    func load(tile: Int, slot: Int, worker: AnyObject?, output: UnsafeMutablePointer<Float>, queries: UnsafePointer<Float>) {
        let scratch = unsafeDowncast(worker!, to: AttentionScratch.self)
        scratch.accumulator(slot).update(from: accumulator(tile, output), count: headDim * arena.lanes)
        tileInSlot(tile, slot: slot, worker: worker).load(queries: queries)
    }

    func unload(tile: Int, slot: Int, worker: AnyObject?, output: UnsafeMutablePointer<Float>) {
        let scratch = unsafeDowncast(worker!, to: AttentionScratch.self)
        accumulator(tile, output).update(from: scratch.accumulator(slot), count: headDim * arena.lanes)
    }

    @inline(__always)
    func visit(tile: Int, slot: Int, worker: AnyObject?, output: UnsafeMutablePointer<Float>, keys: UnsafePointer<Float>,
               values: UnsafePointer<Float>, keyCount: Int, keyStart: Int, blocks: Int, upcoming: UpcomingBlock?) {
        precondition(blocks == 1, "VectorTileBank: tiles on rows visit one block at a time")
        tileInSlot(tile, slot: slot, worker: worker)
            .visit(keys: keys, values: values, keyCount: keyCount, keyStart: keyStart, upcoming: upcoming)
    }

    var visitBlocks: Int { arena.visitBlocks }
    var products: TileProducts { arena.products }

    @inline(__always)
    func visit(tile: Int, slot: Int, worker: AnyObject?, output: UnsafeMutablePointer<Float>,
               packed: UnsafeBufferPointer<Unmanaged<AnyObject>>, keyStart: Int,
               ahead: UnsafeBufferPointer<Unmanaged<AnyObject>>) {
        tileInSlot(tile, slot: slot, worker: worker).visit(packed: packed, keyStart: keyStart, ahead: ahead)
    }

    func finish(tile: Int, worker: AnyObject?, output: UnsafeMutablePointer<Float>, lse: UnsafeMutablePointer<Float>) {
        let scratch = unsafeDowncast(worker!, to: AttentionScratch.self)
        let handle = arena.borrowedTile(tile, scratch: scratch, slot: 0, accumulator: accumulator(tile, output))
        if inOutput[tile] {
            // The accumulator is the rows themselves: transposed through the worker's query slot.
            handle.finishInPlace(lse: lse, temp: scratch.queries)
        } else {
            handle.finish(output: output + plan.firstRow(ofTile: tile) * headDim, lse: lse)
        }
    }

    func begin(tile: Int, slot: Int, worker: AnyObject?, queries: UnsafePointer<Float>) {
        tileInSlot(tile, slot: slot, worker: worker)
            .begin(queries: queries, rowCount: plan.tiles[tile].rowCount, queryStart: plan.tiles[tile].queryStart)
    }

    func end(tile: Int, slot: Int, worker: AnyObject?, output: UnsafeMutablePointer<Float>, lse: UnsafeMutablePointer<Float>) {
        tileInSlot(tile, slot: slot, worker: worker)
            .finish(output: output + plan.firstRow(ofTile: tile) * headDim, lse: lse)
    }

    func statistics(tile: Int) -> AttentionStatistics { arena.statistics(ofTile: tile) }

    /// Tile `tile` with its accumulator in `slot` of `worker`'s scratch (where its visits run).
    @inline(__always)
    private func tileInSlot(_ tile: Int, slot: Int, worker: AnyObject?) -> AttentionTile {
        let scratch = unsafeDowncast(worker!, to: AttentionScratch.self)
        return arena.borrowedTile(tile, scratch: scratch, slot: slot, accumulator: scratch.accumulator(slot))
    }

    func workerDone() {
        switch arena.products {
        case .bf16Tiles: arena.bf16.release()
        // The AMX set's int8 scores are on tiles too (its bf16 kernels' release gives them back).
        case .int8: arena.kernels.bf16.release?()
        case .fp32: break
        }
    }
}

/// `ScalarAttentionTile`s, one object each: the plain loops the vector tiles are checked against, driven by
/// the same driver.
final class ScalarTileBank: TileBank, @unchecked Sendable {
    let tiles: [ScalarAttentionTile]

    /// The twins of tiles with `products` (bf16 tiles round P as they do, and take their blocks grouped as they
    /// do; the rest as fp32 products).
    init(plan: AttentionPlan, headDim: Int, precision: AttentionPrecision, products: TileProducts = .fp32) {
        tiles = plan.tiles.map { _ in
            ScalarAttentionTile(headDim: headDim, config: plan.config, precision: precision, products: products)
        }
        self.plan = plan
        self.headDim = headDim
        visitBlocks = products.visitBlocks(config: plan.config)
    }

    let plan: AttentionPlan
    let headDim: Int
    let visitBlocks: Int

    func makeWorker(slots: Int) -> AnyObject? { nil }

    func reset(tile: Int, output: UnsafeMutablePointer<Float>) {
        tiles[tile].reset(rowCount: plan.tiles[tile].rowCount, queryStart: plan.tiles[tile].queryStart)
    }

    func load(tile: Int, slot: Int, worker: AnyObject?, output: UnsafeMutablePointer<Float>, queries: UnsafePointer<Float>) {
        tiles[tile].load(queries: queries)
    }

    func unload(tile: Int, slot: Int, worker: AnyObject?, output: UnsafeMutablePointer<Float>) {}

    func visit(tile: Int, slot: Int, worker: AnyObject?, output: UnsafeMutablePointer<Float>, keys: UnsafePointer<Float>,
               values: UnsafePointer<Float>, keyCount: Int, keyStart: Int, blocks: Int, upcoming: UpcomingBlock?) {
        tiles[tile].visit(keys: keys, values: values, keyCount: keyCount, keyStart: keyStart, blocks: blocks)
    }

    var products: TileProducts { .fp32 }

    func visit(tile: Int, slot: Int, worker: AnyObject?, output: UnsafeMutablePointer<Float>,
               packed: UnsafeBufferPointer<Unmanaged<AnyObject>>, keyStart: Int,
               ahead: UnsafeBufferPointer<Unmanaged<AnyObject>>) {
        preconditionFailure("ScalarTileBank: the scalar twin computes on rounded fp32 rows")
    }

    func finish(tile: Int, worker: AnyObject?, output: UnsafeMutablePointer<Float>, lse: UnsafeMutablePointer<Float>) {
        tiles[tile].finish(output: output + plan.firstRow(ofTile: tile) * headDim, lse: lse)
    }

    func begin(tile: Int, slot: Int, worker: AnyObject?, queries: UnsafePointer<Float>) {
        tiles[tile].begin(queries: queries, rowCount: plan.tiles[tile].rowCount, queryStart: plan.tiles[tile].queryStart)
    }

    func end(tile: Int, slot: Int, worker: AnyObject?, output: UnsafeMutablePointer<Float>, lse: UnsafeMutablePointer<Float>) {
        finish(tile: tile, worker: worker, output: output, lse: lse)
    }

    func statistics(tile: Int) -> AttentionStatistics { tiles[tile].statistics }

    func workerDone() {}
}
