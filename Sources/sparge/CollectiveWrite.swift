import SpargeFormats
import SpargeRing

/// Outputs written but not yet committed (rank 0 holds the creating writers).
final class PendingOutputs {
    var writers: [NPYWriter] = []

    /// Renames every temporary file to its final name (rank 0; the others hold no creator).
    func commitAll() throws {
        for w in writers where w.isCreator { try w.commit() }
    }

    /// Removes every temporary file this rank created.
    func abortAll() {
        for w in writers { w.abort() }
    }
}

/// The collective `.npy` write protocol of `NPYWriter`, with the barriers and agreements it leaves to us.
/// The file stays under its temporary name until `PendingOutputs.commitAll`.
enum CollectiveWrite {
    static func floats(_ values: [Float], rows: [Range<Int>], path: String, shape: [Int], layout: TensorLayout,
                       overwrite: Bool, ctx: CommandContext, pending: PendingOutputs) throws {
        try write(path: path, shape: shape, type: .float32, layout: layout, overwrite: overwrite, ctx: ctx,
                  pending: pending) {
            try $0.writeRows(rows, values: values)
        }
    }

    static func bytes(_ values: [UInt8], rows: [Range<Int>], path: String, shape: [Int], overwrite: Bool,
                      ctx: CommandContext, pending: PendingOutputs) throws {
        try write(path: path, shape: shape, type: .uint8, layout: .hnd, overwrite: overwrite, ctx: ctx,
                  pending: pending) {
            try $0.writeRows(rows, bytes: values)
        }
    }

    private static func write(path: String, shape: [Int], type: ElementType, layout: TensorLayout, overwrite: Bool,
                              ctx: CommandContext, pending: PendingOutputs, body: (NPYWriter) throws -> Void) throws {
        let comm = ctx.comm
        // Rank 0's token names the temporary file for everyone.
        let token = String(decoding: comm.allgather(bytes: Array(NPYWriter.makeToken().utf8))[0], as: UTF8.self)
        var failure: Error?
        do {
            if ctx.isRoot {
                pending.writers.append(try NPYWriter.create(path: path, shape: shape, type: type, layout: layout,
                                                            overwrite: overwrite, token: token))
            }
        } catch {
            failure = error
        }
        ctx.agree(failure) { pending.abortAll() }
        do {
            if !ctx.isRoot {
                pending.writers.append(try NPYWriter.open(path: path, shape: shape, type: type, layout: layout, token: token))
            }
            try body(pending.writers.last!)
            try pending.writers.last!.finish()
        } catch {
            failure = error
        }
        ctx.agree(failure) { pending.abortAll() }
    }
}
