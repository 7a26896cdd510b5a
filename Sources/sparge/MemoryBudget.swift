import Foundation
import SpargeFormats

/// The memory one rank needs for a forward pass, estimated from the shapes before anything is allocated,
/// and checked against what this machine can give: its physical memory shared by the ranks on the node,
/// and the address-space limit (`ulimit -v`) left to this process.
///
/// An allocation that cannot be satisfied ends a Swift program with a trap and a stack dump; a size from
/// the command line (`bench --seq 10000000000`) or a file must instead be refused with a message naming
/// what needs how much. The estimate counts the large buffers only (inputs, outputs, the block mask, key
/// summaries; the sparse mask's lists only by their index), so it is a lower bound: a run that passes may
/// still need more.
struct MemoryBudget {
    /// The large buffers, each with its size in bytes (nil: more than `Int.max`).
    var parts: [(what: String, bytes: Int?)] = []

    /// The most rows one of `ranks` ranks holds of `seqLen` (the ceiling of the quotient, without overflow).
    static func rowsPerRank(seqLen: Int, ranks: Int) -> Int {
        seqLen / ranks + (seqLen % ranks == 0 ? 0 : 1)
    }

    /// Q, K, V and the output of `rows` rows, the mask's row index and every key summary.
    static func forward(rows: Int, seqLen: Int, queryHeads: Int, kvHeads: Int, dim: Int, blockQ: Int,
                        blockK: Int) -> MemoryBudget {
        let keyBlocks = seqLen / blockK + 1
        let queryBlocks = rows / blockQ + 2  // a zigzag shard may hold two partial blocks
        var budget = MemoryBudget()
        budget.parts.append(("Q, K, V and the output of \(rows) rows",
                             CheckedSize.product([rows, 2 * queryHeads + 2 * kvHeads, dim, 4])))
        // The mask is sparse: its size follows the computed blocks, known only once predicted; what is
        // certain is its row index (one Int per row).
        budget.parts.append(("the block mask's row index (\(queryBlocks) rows × \(queryHeads) heads)",
                             CheckedSize.product([queryBlocks, queryHeads, 8])))
        budget.parts.append(("the key summaries (\(keyBlocks) blocks × \(kvHeads) heads × \(dim))",
                             CheckedSize.product([keyBlocks, kvHeads, dim, 4])))
        return budget
    }

    /// The total, or nil when it exceeds `Int.max`.
    var total: Int? { parts.contains { $0.bytes == nil } ? nil : CheckedSize.sum(parts.map { $0.bytes! }) }

    /// Throws when this rank cannot have `total` bytes; the message names each part and the limit.
    func check(ranksOnNode: Int) throws {
        let available = Self.available(ranksOnNode: ranksOnNode)
        if let total, total <= available.bytes { return }
        let shown = parts.map { "\($0.what): \($0.bytes.map(Format.bytes) ?? "more than 8 EiB")" }.joined(separator: "; ")
        throw MemoryError(description: "not enough memory: one rank needs at least "
            + "\(total.map(Format.bytes) ?? "more than 8 EiB") (\(shown)), but \(available.what)")
    }

    /// The bytes this process may still allocate, and how that was found.
    static func available(ranksOnNode: Int) -> (bytes: Int, what: String) {
        let page = sysconf(Int32(_SC_PAGESIZE))
        let physical = sysconf(Int32(_SC_PHYS_PAGES)) * page
        var best = (bytes: physical / max(1, ranksOnNode),
                    what: "this machine has \(Format.bytes(physical)) of memory"
                        + (ranksOnNode > 1 ? " for \(ranksOnNode) ranks" : ""))
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_AS.rawValue), &limit) == 0, limit.rlim_cur != rlim_t.max,  // RLIM_INFINITY
           let used = mappedBytes() {
            let left = max(0, Int(clamping: limit.rlim_cur) - used)
            if left < best.bytes {
                best = (left, "the address-space limit (ulimit -v) of \(Format.bytes(Int(clamping: limit.rlim_cur))) "
                    + "leaves \(Format.bytes(left)) to this process")
            }
        }
        return best
    }

    /// This process's mapped address space now (`/proc/self/statm`, in pages), where readable.
    private static func mappedBytes() -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8),
              let pages = text.split(separator: " ").first.flatMap({ Int($0) }) else { return nil }
        return pages * sysconf(Int32(_SC_PAGESIZE))
    }

    /// Ranks sharing this node's memory, as the launcher says (1 without one).
    static var ranksOnNode: Int {
        let env = ProcessInfo.processInfo.environment
        return env["OMPI_COMM_WORLD_LOCAL_SIZE"].flatMap(Int.init) ?? env["SLURM_NTASKS_PER_NODE"].flatMap(Int.init) ?? 1
    }
}

/// A run that cannot have the memory it needs.
struct MemoryError: Error, CustomStringConvertible {
    let description: String
}
