// The `@_cdecl` entry points of sparge.h, one per C function, each a thin wrapper: it turns pointers into
// Swift values, calls the context, and turns errors into a status and a message (`reporting`). The
// documentation of each function is in sparge.h.
import CSparge
import SpargeKernels
import SpargeRing

@_cdecl("sparge_abi_version")
public func spargeABIVersion() -> Int32 { SPARGE_ABI_VERSION }

@_cdecl("sparge_context_create")
public func spargeContextCreate(_ mpiComm: UInt64, _ threads: Int32, _ engine: Int32, _ device: Int32, _ flags: Int32,
                                _ context: UnsafeMutablePointer<OpaquePointer?>?,
                                _ error: UnsafeMutablePointer<CChar>?, _ errorSize: Int) -> sparge_status {
    reporting(error, errorSize) {
        guard let context else { throw CError(SPARGE_ERROR_INVALID_ARGUMENT, "context: NULL") }
        let made = try SpargeContext(mpiHandle: mpiComm, threads: Int(threads), engine: engine, device: device,
                                     trace: flags & SPARGE_CONTEXT_TRACE != 0)
        context.pointee = OpaquePointer(Unmanaged.passRetained(made).toOpaque())
    }
}

@_cdecl("sparge_context_destroy")
public func spargeContextDestroy(_ context: OpaquePointer?) {
    guard let context else { return }
    let made = Unmanaged<SpargeContext>.fromOpaque(UnsafeRawPointer(context))
    made.takeUnretainedValue().close()
    made.release()
}

@_cdecl("sparge_context_rank")
public func spargeContextRank(_ context: OpaquePointer?) -> Int32 {
    context.map { Int32(SpargeContext.of($0).communicator.rank) } ?? 0
}

@_cdecl("sparge_context_size")
public func spargeContextSize(_ context: OpaquePointer?) -> Int32 {
    context.map { Int32(SpargeContext.of($0).communicator.size) } ?? 1
}

@_cdecl("sparge_forward")
public func spargeForward(_ context: OpaquePointer?, _ params: UnsafePointer<sparge_params>?,
                          _ q: UnsafePointer<sparge_tensor>?, _ k: UnsafePointer<sparge_tensor>?,
                          _ v: UnsafePointer<sparge_tensor>?, _ out: UnsafePointer<sparge_tensor>?,
                          _ lse: UnsafeMutablePointer<Float>?, _ statistics: UnsafeMutablePointer<sparge_statistics>?,
                          _ callerProblem: UnsafePointer<CChar>?,
                          _ error: UnsafeMutablePointer<CChar>?, _ errorSize: Int) -> sparge_status {
    reporting(error, errorSize) {
        guard let context else { throw CError(SPARGE_ERROR_INVALID_ARGUMENT, "context: NULL") }
        try SpargeContext.of(context).forward(params: params, q: q, k: k, v: v, out: out, lse: lse,
                                              statistics: statistics, callerProblem: callerProblem.map { String(cString: $0) })
    }
}

@_cdecl("sparge_context_mask")
public func spargeContextMask(_ context: OpaquePointer?, _ batch: UnsafeMutablePointer<Int64>?,
                              _ queryHeads: UnsafeMutablePointer<Int64>?, _ queryBlocks: UnsafeMutablePointer<Int64>?,
                              _ keyBlocks: UnsafeMutablePointer<Int64>?, _ mask: UnsafeMutablePointer<UInt8>?,
                              _ maskSize: Int, _ error: UnsafeMutablePointer<CChar>?, _ errorSize: Int) -> sparge_status {
    reporting(error, errorSize) {
        guard let context else { throw CError(SPARGE_ERROR_INVALID_ARGUMENT, "context: NULL") }
        let masks = SpargeContext.of(context).lastMasks
        guard let first = masks.first else {
            throw CError(SPARGE_ERROR_INVALID_ARGUMENT, "no mask kept: call sparge_forward with params.keep_mask set")
        }
        batch?.pointee = Int64(masks.count)
        queryHeads?.pointee = Int64(first.heads)
        queryBlocks?.pointee = Int64(first.queryBlocks.count)
        keyBlocks?.pointee = Int64(first.keyBlocks)
        guard let mask else { return }
        let bits = masks.flatMap { $0.denseBits() }
        guard maskSize >= bits.count else {
            throw CError(SPARGE_ERROR_INVALID_ARGUMENT, "mask: \(maskSize) bytes for \(bits.count)")
        }
        mask.update(from: bits, count: bits.count)
    }
}

@_cdecl("sparge_shard_ranges")
public func spargeShardRanges(_ seqLen: Int64, _ ranks: Int32, _ rank: Int32, _ params: UnsafePointer<sparge_params>?,
                              _ ranges: UnsafeMutablePointer<Int64>?, _ capacity: Int32, _ count: UnsafeMutablePointer<Int32>?,
                              _ error: UnsafeMutablePointer<CChar>?, _ errorSize: Int) -> sparge_status {
    reporting(error, errorSize) {
        guard let params, let ranges, let count else {
            throw CError(SPARGE_ERROR_INVALID_ARGUMENT, "params, ranges and count must not be NULL")
        }
        guard (0..<ranks).contains(rank) else {
            throw CError(SPARGE_ERROR_INVALID_ARGUMENT, "rank \(rank) is outside 0..<\(ranks)")
        }
        let layout = try ShardLayout(seqLen: Int(seqLen), ranks: Int(ranks), config: params.pointee.configuration())
        let owned = layout.tokenRanges[Int(rank)]
        guard owned.count <= capacity else {
            throw CError(SPARGE_ERROR_INVALID_ARGUMENT, "ranges: room for \(capacity), \(owned.count) needed")
        }
        for (i, range) in owned.enumerated() {
            ranges[2 * i] = Int64(range.lowerBound)
            ranges[2 * i + 1] = Int64(range.upperBound)
        }
        count.pointee = Int32(owned.count)
    }
}

extension SpargeContext {
    /// The context behind a `sparge_context *` (not retained: the caller owns it until `destroy`).
    static func of(_ pointer: OpaquePointer) -> SpargeContext {
        Unmanaged<SpargeContext>.fromOpaque(UnsafeRawPointer(pointer)).takeUnretainedValue()
    }
}
