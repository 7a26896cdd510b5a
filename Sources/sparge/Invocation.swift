import Foundation
import SpargeRing

/// What one process was asked to do: the command, `--help`, a usage error, the options.
///
/// Under a launcher every rank compares its invocation with every other's before anything else (see
/// ``Command/start(_:help:)``): ranks that run different commands, or where only some ask for `--help`,
/// would otherwise take different paths and hang (one in a barrier, another in an allgather, or one gone
/// before MPI starts while the others wait for it).
struct Invocation: Codable, Equatable {
    /// The command word as given ("" when none).
    var command: String
    /// Whether `--help` (or `-h`, `help`) was asked for.
    var help = false
    /// The usage error this rank found in its arguments, already phrased.
    var usageError: String?
    /// The options, `name → value` (flags map to ""), without those that may differ between ranks.
    var options: [String: String] = [:]

    /// Options that may differ between ranks: nodes can have different core counts.
    static let mayDiffer: Set<String> = ["threads"]

    /// The invocation of `command` with `arguments` parsed against `specs`.
    init(command: String, arguments: [String], specs: [OptionSpec]) {
        self.command = command
        if arguments.contains("--help") || arguments.contains("-h") {
            help = true
            return
        }
        do {
            options = try ParsedOptions(arguments, specs: specs, command: command).all(excluding: Self.mayDiffer)
        } catch {
            usageError = "\(error)\n(see 'sparge \(command) --help')"
        }
    }

    /// An invocation without a command of its own (`sparge`, `sparge --help`, `sparge frobnicate`).
    init(command: String, help: Bool = false, usageError: String? = nil) {
        self.command = command
        self.help = help
        self.usageError = usageError
    }
}

/// How the invocations of the ranks differ, said once for all: nil when they agree.
///
/// Every rank builds the same message from the same gathered invocations, so it reads the same everywhere.
struct ArgumentMismatch: Error, CustomStringConvertible {
    let description: String

    init?(_ all: [Invocation]) {
        guard let rank = all.indices.first(where: { all[$0] != all[0] }) else { return nil }
        let (first, other) = (all[0], all[rank])
        let advice = "; every rank must run the same command"
        func shown(command: String) -> String { command.isEmpty ? "no command" : "'\(command)'" }
        if first.command != other.command {
            description = "the ranks were given different commands: \(shown(command: first.command)) on rank 0 "
                + "but \(shown(command: other.command)) on rank \(rank)" + advice
        } else if first.help != other.help {
            let (with, without) = first.help ? (0, rank) : (rank, 0)
            description = "the ranks were given different options: --help is given on rank \(with) but not on "
                + "rank \(without)" + advice
        } else {
            let name = Set(first.options.keys).union(other.options.keys).sorted().first {
                first.options[$0] != other.options[$0]
            } ?? "?"
            func shown(_ value: String?) -> String { value.map { $0.isEmpty ? "given" : "'\($0)'" } ?? "not given" }
            description = "the ranks were given different options: --\(name) is \(shown(first.options[name])) on "
                + "rank 0 but \(shown(other.options[name])) on rank \(rank)" + advice
        }
    }
}

extension Command {
    /// Settles an invocation on every rank and returns the context to run the command in, or ends the
    /// process: after printing help (status 0), a usage error (status 2) or a disagreement (status 1).
    ///
    /// Without a launcher this happens before MPI, as for any tool. Under a launcher MPI starts first,
    /// even for `--help`: a rank must not exit before MPI while others may already be inside it. Then the
    /// ranks gather their invocations; usage errors are printed once by rank 0 (naming the ranks when not
    /// all had them), then any difference between ranks, then help; every rank exits with the same status.
    static func start(_ invocation: Invocation, help: String) -> CommandContext {
        if !CommandContext.isLaunched {
            if invocation.help { print(help); exit(0) }
            if let message = invocation.usageError { printError(message); exit(2) }
        }
        let ctx: CommandContext
        do {
            ctx = try CommandContext()
        } catch {
            printError("cannot start MPI: \(error)")
            exit(1)
        }
        let all = ctx.gather(invocation)
        if all.contains(where: { $0.usageError != nil }) {
            ctx.agree(invocation.usageError.map(UsageMessage.init), status: 2)
        }
        ctx.agree(ArgumentMismatch(all))
        if invocation.help {
            ctx.say(help)
            ctx.exit(0)
        }
        return ctx
    }
}

/// A usage error already phrased (with its hint to `--help`).
struct UsageMessage: Error, CustomStringConvertible {
    let description: String
    init(_ text: String) { description = text }
}

extension CommandContext {
    /// Collective: every rank's invocation, by rank.
    func gather(_ invocation: Invocation) -> [Invocation] {
        guard comm.size > 1 else { return [invocation] }
        let mine = (try? JSONEncoder().encode(invocation)).map { Array($0) } ?? []
        return comm.allgather(bytes: mine).map {
            // A rank whose invocation cannot be read back differs from every other: show it as such.
            (try? JSONDecoder().decode(Invocation.self, from: Data($0))) ?? Invocation(command: "(unreadable)")
        }
    }
}
