import CSparge
import SpargeKernels
import SpargeRing

extension SpargeContext {
    /// One call's inputs, checked on this rank: every batch item of Q, K and V as a view of the caller's
    /// memory, the output, the configuration, and the engine of the precision asked for.
    struct Inputs {
        let q: TensorDescriptor, k: TensorDescriptor, v: TensorDescriptor, out: TensorDescriptor
        let items: [(q: Tensor, k: Tensor, v: Tensor)]
        let config: SpargeConfig
        let kvFormat: StorageFormat
        let engine: any AttentionEngine

        init(params: UnsafePointer<sparge_params>?, q: UnsafePointer<sparge_tensor>?, k: UnsafePointer<sparge_tensor>?,
             v: UnsafePointer<sparge_tensor>?, out: UnsafePointer<sparge_tensor>?, context: SpargeContext) throws {
            guard let params else { throw CError(SPARGE_ERROR_INVALID_ARGUMENT, "params: NULL") }
            config = try params.pointee.configuration()
            let engine = try context.engine(for: try params.pointee.precisionAsked())
            kvFormat = try params.pointee.kvFormat(engine: engine)
            self.engine = engine
            (self.q, self.k, self.v, self.out) = (try .init("q", q), try .init("k", k), try .init("v", v), try .init("out", out))
            let shapes = "q \(self.q.shape), k \(self.k.shape), v \(self.v.shape) (as [B, H, N, D])"
            guard self.k.shape == self.v.shape else { throw CError(SPARGE_ERROR_INVALID_ARGUMENT, "k and v differ in shape: \(shapes)") }
            guard self.q.batch == self.k.batch, self.q.rows == self.k.rows, self.q.dim == self.k.dim else {
                throw CError(SPARGE_ERROR_INVALID_ARGUMENT, "q, k and v must agree in batch, rows and head dimension: \(shapes)")
            }
            guard self.k.heads > 0, self.q.heads % self.k.heads == 0 else {
                throw CError(SPARGE_ERROR_INVALID_ARGUMENT, "q's heads must be a multiple of k's (GQA): \(shapes)")
            }
            guard self.out.shape == self.q.shape else {
                throw CError(SPARGE_ERROR_INVALID_ARGUMENT, "out \(self.out.shape) must have q's shape \(self.q.shape)")
            }
            // Its rows are written on several threads: no two elements may share an address.
            let (outShape, outStrides) = (self.out.shape, self.out.strides)
            if let axis = (0..<4).first(where: { outShape[$0] > 1 && outStrides[$0] == 0 }) {
                throw CError(SPARGE_ERROR_INVALID_ARGUMENT, "out \(outShape) has stride 0 on axis \(axis): "
                    + "its elements overlap, and each must take its own value")
            }
            let resident = (engine as? any ResidentAttentionEngine)?.runsResident ?? false
            if !resident, let onDevice = [self.q, self.k, self.v, self.out].first(where: { $0.place != .host }) {
                throw CError(SPARGE_ERROR_INVALID_ARGUMENT, "\(onDevice.name) \(onDevice.shape) is on \(onDevice.place): "
                    + "tensors in GPU memory need the CUDA engine (backend \"cuda\"); the \(engine.name) engine reads host memory")
            }
            let (q, k, v) = (self.q, self.k, self.v)
            items = try (0..<q.batch).map { b in (try q.item(b), try k.item(b), try v.item(b)) }
        }
    }

    /// The forward pass of every batch item of this rank's shard (collective). Each item is one
    /// `ShardedAttention.forward`: the K mean and the mask are per head, so the items are independent.
    func forward(params: UnsafePointer<sparge_params>?, q: UnsafePointer<sparge_tensor>?, k: UnsafePointer<sparge_tensor>?,
                 v: UnsafePointer<sparge_tensor>?, out: UnsafePointer<sparge_tensor>?, lse: UnsafeMutablePointer<Float>?,
                 statistics: UnsafeMutablePointer<sparge_statistics>?, callerProblem: String?) throws {
        var inputs: Inputs?
        var problem = callerProblem.map { CError(SPARGE_ERROR_INVALID_ARGUMENT, $0) }
        if problem == nil {
            do { inputs = try Inputs(params: params, q: q, k: k, v: v, out: out, context: self) } catch { problem = CError(error) }
        }
        let seqLen = try agree(problem, batch: inputs?.q.batch ?? 0, rows: inputs?.q.rows ?? 0)
        guard let inputs else { throw problem! }  // agree threw already; kept for the type checker
        let layout = try ShardLayout(seqLen: seqLen, ranks: communicator.size, config: inputs.config)
        lastMasks = []
        var total = sparge_statistics()
        total.seq_len = Int64(seqLen)
        let (rows, heads, engine) = (inputs.q.rows, inputs.q.heads, inputs.engine)
        for (b, item) in inputs.items.enumerated() {
            let (mask, statistics): (BlockMask, ForwardStatistics)
            if inputs.out.place != .host, let resident = engine as? any ResidentAttentionEngine {
                // A device output: the pass stays on the device and writes the caller's tensor there.
                let result = try ShardedAttention.forwardResident(
                    q: item.q, k: item.k, v: item.v, layout: layout, config: inputs.config, communicator: communicator,
                    engine: resident, kvFormat: inputs.kvFormat)
                try resident.write(result.output, into: try inputs.out.item(b))
                if let lse {
                    let values = try resident.download(result.lse)
                    (lse + b * heads * rows).update(from: values.buffer.base.assumingMemoryBound(to: Float.self),
                                                    count: heads * rows)
                }
                (mask, statistics) = (result.mask, result.statistics)
            } else {
                let result = try ShardedAttention.forward(
                    q: item.q, k: item.k, v: item.v, layout: layout, config: inputs.config, communicator: communicator,
                    threads: threads, engine: engine, kvFormat: inputs.kvFormat, staging: staging)
                HostParallelism.$threads.withValue(threads) { inputs.out.write(result.output, item: b) }
                if let lse { (lse + b * heads * rows).update(from: result.lse, count: heads * rows) }
                (mask, statistics) = (result.mask, result.statistics)
            }
            if params!.pointee.keep_mask != 0 { lastMasks.append(mask) }
            total.add(statistics)
        }
        total.density = total.block_area == 0 ? 0 : Double(total.computed_blocks) / Double(total.block_area)
        statistics?.pointee = total
    }

    /// Every rank's problem, batch size and row count, compared on every rank: the first failing rank's
    /// error is thrown on all of them; otherwise the sequence length (the sum of the rows).
    private func agree(_ problem: CError?, batch: Int, rows: Int) throws -> Int {
        let status = problem.map { Int($0.status.rawValue) } ?? 0
        let mine = "\(status)\n\(batch)\n\(rows)\n\(problem?.message ?? "")"
        let all = communicator.allgather(bytes: Array(mine.utf8)).map {
            String(decoding: $0, as: UTF8.self).split(separator: "\n", maxSplits: 3, omittingEmptySubsequences: false)
        }
        let origin = { (rank: Int) in self.communicator.size > 1 ? "rank \(rank): " : "" }
        if let failed = all.firstIndex(where: { $0[0] != "0" }) {
            throw CError(sparge_status(UInt32(all[failed][0])!), origin(failed) + String(all[failed][3]))
        }
        if let other = all.firstIndex(where: { $0[1] != all[0][1] }) {
            throw CError(SPARGE_ERROR_INVALID_ARGUMENT, "the ranks passed different batch sizes: rank 0 B=\(all[0][1]), "
                + "rank \(other) B=\(all[other][1])")
        }
        return all.reduce(0) { $0 + Int($1[2])! }
    }
}

extension sparge_statistics {
    /// Adds one batch item's counters and timings.
    mutating func add(_ s: ForwardStatistics) {
        computed_blocks += Int64(s.mask.computed)
        block_area += Int64(s.mask.area)
        bytes_sent += Int64(s.ring.bytesSent)
        dense_ring_bytes += Int64(s.ring.denseRingBytes)
        skipped_pv_blocks += Int64(s.attention.pvBlocksSkipped)
        summary_seconds += s.summarySeconds
        mask_seconds += s.maskSeconds
        ring_seconds += s.ringSeconds
        total_seconds += s.totalSeconds
    }
}
