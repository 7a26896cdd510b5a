import SpargeFormats
import SpargeRing

/// The output files of one run, created before anything is computed and committed together at the end.
///
/// Creating the temporary files first (`<path>.partial-<token>`, full size) makes every unusable output
/// path — a folder, a device, `/proc/x.npy`, a dangling link, a name too long for the suffix — fail before
/// the computation instead of after it. The commit is all or nothing (``StagedFile/commit(_:beforeEach:)``):
/// when one output cannot be put in place, the others are undone. Rank 0 creates and commits; every rank
/// knows every temporary name, so an error or a signal on any rank removes them.
final class PendingOutputs {
    private let ctx: CommandContext
    /// Rank 0's token, which names every temporary file of this run.
    private let token: String
    private(set) var arrays: [NPYWriter] = []
    /// The picture's temporary file (rank 0 only).
    private(set) var picture: StagedFile?

    /// Collective: the ranks agree on rank 0's token.
    init(ctx: CommandContext) {
        self.ctx = ctx
        token = String(decoding: ctx.comm.allgather(bytes: Array(StagedFile.makeToken().utf8))[0], as: UTF8.self)
    }

    /// Collective: rank 0 creates the temporary `.npy` with its header and full size, the ranks agree that
    /// it did, then the others open it. The `.npy` collective protocol of `NPYWriter`, steps 1–4.
    func addArray(path: String, shape: [Int], type: ElementType, layout: TensorLayout, overwrite: Bool) -> NPYWriter {
        if ctx.isRoot {
            let writer = collectively {
                try NPYWriter.create(path: path, shape: shape, type: type, layout: layout, overwrite: overwrite, token: token)
            }
            arrays.append(writer)
            ctx.agree(nil)
        } else {
            ctx.agree(nil)
            arrays.append(collectively { try NPYWriter.open(path: path, shape: shape, type: type, layout: layout, token: token) })
        }
        return arrays.last!
    }

    /// Collective: rank 0 creates the (empty) temporary file of a picture it writes at the end.
    func addPicture(path: String, overwrite: Bool) {
        picture = collectively { ctx.isRoot ? try StagedFile.create(path: path, overwrite: overwrite, token: token) : nil }
    }

    /// Collective: `body` writes this rank's part of `writer`, which is then flushed and closed.
    func write(_ writer: NPYWriter, _ body: (NPYWriter) throws -> Void) {
        collectively {
            try body(writer)
            try writer.finish()
        }
    }

    /// Collective: `render` (itself collective) gives the picture on rank 0 (nil elsewhere), which rank 0
    /// writes; returns the note to print once the outputs are committed.
    func writePicture(_ render: () throws -> (bytes: [UInt8], note: String)?) -> String? {
        collectively {
            let rendered = try render()
            if let rendered { try picture?.write(rendered.bytes) }
            return rendered?.note
        }
    }

    /// Collective: rank 0 moves every output into place, all or nothing, and the ranks agree that it did.
    func commit() {
        collectively {
            TestPause.at(.beforeCommit, rank: ctx.comm.rank)
            guard ctx.isRoot else { return }
            let files = arrays.map(\.staged) + (picture.map { [$0] } ?? [])
            try StagedFile.commit(files) { index in
                if index > 0 { TestPause.at(.betweenCommits, rank: ctx.comm.rank) }
            }
        }
    }

    /// Removes every temporary file this rank created.
    func abortAll() {
        for writer in arrays { writer.abort() }
        picture?.abort()
    }

    /// `body` on every rank, then agreement; on any rank's error every temporary file is removed.
    private func collectively<T>(_ body: () throws -> T) -> T {
        do {
            let value = try body()
            ctx.agree(nil)
            return value
        } catch {
            ctx.agree(error) { abortAll() }
            fatalError("unreachable: agree exits on error")
        }
    }
}
