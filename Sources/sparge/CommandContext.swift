import Foundation
import SpargeFormats
import SpargeRing

/// The communicator of this process and the run-wide error rules every command follows.
///
/// Under `mpirun` (OpenMPI, PMIx or Slurm's environment present) the world communicator; otherwise a
/// single process, so that `sparge` also runs without a launcher.
final class CommandContext {
    let comm: Communicator
    private let mpi: MPICommunicator?

    /// Whether a launcher (OpenMPI, PMIx, Slurm's PMI) started this process.
    static var isLaunched: Bool {
        let env = ProcessInfo.processInfo.environment
        return ["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"].contains { env[$0] != nil }
    }

    /// Starts MPI under a launcher, and installs the removal of temporary outputs on SIGINT, SIGTERM and
    /// SIGHUP (rank 0 says which signal stopped the run; the others stay quiet, so it is said once).
    init() throws {
        if Self.isLaunched {
            let world = try MPICommunicator()
            switch ProcessInfo.processInfo.environment["SPARGE_MPI_DEVICE_BUFFERS"] {
            case "0": world.movesDeviceMemory = false
            case "1": world.movesDeviceMemory = true
            default: break
            }
            mpi = world
            comm = world
        } else {
            mpi = nil
            comm = SingleProcessCommunicator()
        }
        InterruptCleanup.install(announcement: comm.rank == 0 ? "sparge: error: stopped by" : nil)
    }

    var isRoot: Bool { comm.rank == 0 }

    /// Prints on rank 0 only.
    func say(_ text: String) {
        if isRoot { print(text) }
    }

    /// Collective: every rank passes its own error (or nil). When any rank failed, rank 0 prints each
    /// distinct message once (naming the ranks where not all had it), every rank runs `cleanup`, removes the
    /// temporary outputs it knows of, and leaves with `status` (default 1).
    func agree(_ error: Error?, status: Int32 = 1, cleanup: () -> Void = {}) {
        let mine = error.map { "\($0)" } ?? ""
        let all = comm.size == 1 ? [mine] : comm.allgather(bytes: Array(mine.utf8)).map { String(decoding: $0, as: UTF8.self) }
        let failed = all.enumerated().filter { !$0.element.isEmpty }
        guard !failed.isEmpty else { return }
        if isRoot {
            var seen: [String: [Int]] = [:]
            var order: [String] = []
            for (rank, message) in failed {
                if seen[message] == nil { order.append(message) }
                seen[message, default: []].append(rank)
            }
            for message in order {
                let ranks = seen[message]!
                let origin = comm.size > 1 && ranks.count < comm.size ? " (rank\(ranks.count > 1 ? "s" : "") \(ranks.map(String.init).joined(separator: ", ")))" : ""
                // The ranks go at the end of the first line, which is the one that says what is wrong.
                let lines = message.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false)
                let text = lines[0] + origin + (lines.count > 1 ? "\n" + lines[1] : "")
                FileHandle.standardError.write(Data("sparge: error: \(text)\n".utf8))
            }
        }
        cleanup()
        InterruptCleanup.removeAll()
        // Every rank is here, so MPI can be finalized as on success: the job ends cleanly, only with a status.
        self.exit(status)
    }

    /// Runs `body` on every rank; an error from it goes through `agree`, so all ranks stop together.
    /// Use for steps every rank takes at the same point (reading its shard, validating, writing).
    func collectively<T>(_ body: () throws -> T) -> T {
        do {
            let value = try body()
            agree(nil)
            return value
        } catch {
            agree(error)
            fatalError("unreachable: agree exits on error")
        }
    }

    /// Ends every rank at once with a message: for errors that other ranks cannot be waiting to agree on.
    func fail(_ message: String) -> Never {
        InterruptCleanup.removeAll()
        InterruptCleanup.stopAnnouncing()
        failAll(message, on: comm)
    }

    /// Finalizes MPI (when under mpirun) and exits with `status`.
    func exit(_ status: Int32) -> Never {
        InterruptCleanup.stopAnnouncing()
        fflush(stdout)
        mpi?.finalize()
        Foundation.exit(status)
    }
}
