import Foundation
import XCTest

// Launching the built `sparge`, under `mpirun` or as one plain process, for the distributed and CLI tests.
//
// Single-node test runs pin OpenMPI to its shared-memory transport and copy-in/copy-out (unless the caller's
// environment already chose): probing network interfaces can stall for seconds in containers, and the
// single-copy mechanism (CMA, `process_vm_readv`) is refused in containers without ptrace rights. Neither
// choice changes what the tests check.

/// What a finished `sparge` (or `mpirun`) returned. `status` is the exit code, or the signal number if it was
/// killed.
public typealias MPIRunResult = (status: Int32, stdout: String, stderr: String)

/// A launch ran past its time limit: the process group was terminated, and this carries what it printed.
public struct MPIRunTimeout: Error, CustomStringConvertible {
    public var command: String
    public var timeout: TimeInterval
    public var stdout: String
    public var stderr: String
    public var description: String {
        "\(command) did not finish within \(Int(timeout)) s (killed)\n--- stdout\n\(stdout)\n--- stderr\n\(stderr)"
    }
}

/// Runs `mpirun -np <np> --oversubscribe <sparge> <args…>` and returns its exit status and output.
///
/// - Parameters:
///   - np: ranks; more than the cores is fine (`--oversubscribe`).
///   - args: the arguments for `sparge`.
///   - timeout: seconds before the run counts as hung: its process group gets SIGTERM (on which `mpirun`
///     kills its ranks), then SIGKILL 5 s later, and `MPIRunTimeout` is thrown.
/// - Throws: `XCTSkip` when `mpirun` is not on PATH; `MissingExecutable` when `sparge` has not been built
///   (a failure, not a skip: `swift test` builds it, so its absence is a broken build).
///   - reportingRankStatus: run each rank under `/bin/sh`, which prints `[rank R exited S]` on stderr when
///     the rank ends (read them with ``rankExitStatuses(_:)``): `mpirun`'s own status is only the first
///     non-zero one.
public func mpirun(np: Int, _ args: [String], timeout: TimeInterval, reportingRankStatus: Bool = false) throws -> MPIRunResult {
    try mpirunMPMD([args], np: np, timeout: timeout, reportingRankStatus: reportingRankStatus)
}

/// The exit status of each rank that reported one (see `reportingRankStatus`), by rank.
public func rankExitStatuses(_ stderr: String) -> [Int: Int32] {
    var out: [Int: Int32] = [:]
    for line in stderr.split(separator: "\n") where line.hasPrefix("[rank ") && line.hasSuffix("]") {
        let words = line.dropFirst().dropLast().split(separator: " ")
        if words.count == 4, let rank = Int(words[1]), let status = Int32(words[3]) { out[rank] = status }
    }
    return out
}

/// Runs `mpirun -np <np> sparge A… : -np <np> sparge B… : …`: one app context per element of `apps`, so
/// that ranks get different arguments (rank `i·np …` runs `apps[i]`). Used to give ranks configurations
/// that disagree.
///
/// Timeouts and skips as for ``mpirun(np:_:timeout:)``.
public func mpirunMPMD(_ apps: [[String]], np: Int = 1, timeout: TimeInterval,
                       reportingRankStatus: Bool = false) throws -> MPIRunResult {
    let (launcher, arguments, environment) = try mpirunCommand(apps, np: np, reportingRankStatus: reportingRankStatus)
    return try launch(launcher, arguments, environment: environment, timeout: timeout,
                      command: "mpirun " + arguments.joined(separator: " "))
}

/// The `mpirun` executable, arguments and environment that run `apps` (see ``mpirunMPMD(_:np:timeout:reportingRankStatus:)``).
func mpirunCommand(_ apps: [[String]], np: Int, reportingRankStatus: Bool = false) throws
    -> (URL, [String], [String: String]) {
    guard let launcher = findOnPath("mpirun") else {
        throw XCTSkip("mpirun is not on PATH: install OpenMPI (launch/setup.sh does) to run the distributed tests")
    }
    let sparge = try spargeExecutable()
    // --oversubscribe is a global option: it goes before the first app context.
    var arguments = ["--oversubscribe"]
    for (i, args) in apps.enumerated() {
        let wrapper = reportingRankStatus ? ["/bin/sh", "-c", rankStatusScript] : []
        arguments += (i > 0 ? [":"] : []) + ["-np", String(np)] + wrapper + [sparge.path] + args
    }

    var environment = ProcessInfo.processInfo.environment
    if getuid() == 0 {
        // OpenMPI refuses to start as root without both.
        environment["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
        environment["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
    }
    if environment["OMPI_MCA_btl"] == nil { environment["OMPI_MCA_btl"] = "self,vader" }
    if environment["OMPI_MCA_btl_vader_single_copy_mechanism"] == nil {
        environment["OMPI_MCA_btl_vader_single_copy_mechanism"] = "none"
    }
    return (launcher, arguments, environment)
}

/// Runs `$0 "$@"` and prints how it ended (`sh` gives 128 + N for a signal N).
private let rankStatusScript = #""$0" "$@"; s=$?; echo "[rank ${OMPI_COMM_WORLD_RANK:-?} exited $s]" >&2; exit $s"#

/// Runs `sparge <args…>` as one plain process, without `mpirun` (the CLI then uses its single-process
/// communicator). Timeouts as for ``mpirun(np:_:timeout:)``.
///
/// The variables by which `sparge` detects a launcher are removed, so that this stays a single process
/// even when the tests themselves run under `mpirun` or Slurm.
public func spargeSingle(_ args: [String], timeout: TimeInterval, addressSpaceLimitKiB: Int? = nil) throws -> MPIRunResult {
    let (executable, arguments, environment) = try singleCommand(args, addressSpaceLimitKiB: addressSpaceLimitKiB)
    return try launch(executable, arguments, environment: environment, timeout: timeout,
                      command: "sparge " + args.joined(separator: " "))
}

/// The executable, arguments and environment that run `sparge args…` as one plain process; with
/// `addressSpaceLimitKiB`, under `/bin/sh` after `ulimit -v` (what a user short of memory sees).
func singleCommand(_ args: [String], addressSpaceLimitKiB: Int? = nil) throws -> (URL, [String], [String: String]) {
    let sparge = try spargeExecutable()
    var environment = ProcessInfo.processInfo.environment
    for key in environment.keys where key.hasPrefix("OMPI_COMM_WORLD") || key.hasPrefix("PMIX_") || key.hasPrefix("PMI_") {
        environment[key] = nil
    }
    guard let limit = addressSpaceLimitKiB else { return (sparge, args, environment) }
    return (URL(fileURLWithPath: "/bin/sh"), ["-c", "ulimit -v \(limit) && exec \"$0\" \"$@\"", sparge.path] + args,
            environment)
}

/// Starts `executable` in its own process group, collects its output, and enforces `timeout`.
private func launch(_ executable: URL, _ arguments: [String], environment: [String: String],
                    timeout: TimeInterval, command: String) throws -> MPIRunResult {
    let process = Process()
    process.executableURL = executable
    process.arguments = arguments
    process.environment = environment
    process.standardInput = FileHandle.nullDevice
    let output = OutputCollector(process)

    // Foundation starts the child as the leader of its own process group: signal the group, not only the child.
    try process.run()
    let deadline = Date(timeIntervalSinceNow: timeout)
    while process.isRunning && Date() < deadline { usleep(10_000) }
    var timedOut = false
    if process.isRunning {
        timedOut = true
        let group = process.processIdentifier
        kill(-group, SIGTERM)
        let graceEnd = Date(timeIntervalSinceNow: 5)
        while process.isRunning && Date() < graceEnd { usleep(20_000) }
        if process.isRunning { kill(-group, SIGKILL) }
    }
    process.waitUntilExit()
    let (stdout, stderr) = output.finish()
    if timedOut { throw MPIRunTimeout(command: command, timeout: timeout, stdout: stdout, stderr: stderr) }
    return (process.terminationStatus, stdout, stderr)
}

/// The `sparge` built alongside the tests.
///
/// Looked for, in order: `$SPARGE_EXECUTABLE`; next to the test bundle (SwiftPM puts every product of a
/// configuration in one directory, and `swift test` builds the executable too); `.build/debug/sparge`
/// under the package root (found from this file's path).
public func spargeExecutable() throws -> URL {
    var candidates = [URL]()
    if let override = ProcessInfo.processInfo.environment["SPARGE_EXECUTABLE"], !override.isEmpty {
        candidates.append(URL(fileURLWithPath: override))
    }
    for bundle in [Bundle.main] + Bundle.allBundles where bundle.bundlePath.hasSuffix(".xctest") {
        candidates.append(bundle.bundleURL.deletingLastPathComponent().appendingPathComponent("sparge"))
    }
    if let executable = Bundle.main.executableURL {  // on Linux the .xctest is the executable itself
        candidates.append(executable.deletingLastPathComponent().appendingPathComponent("sparge"))
    }
    let packageRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    candidates.append(packageRoot.appendingPathComponent(".build/debug/sparge"))

    if let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0.path) }) {
        return found
    }
    let tried = candidates.map { "  " + $0.path }.joined(separator: "\n")
    throw MissingExecutable(message: "the sparge executable was not found (run `swift build` first); tried:\n\(tried)")
}

public struct MissingExecutable: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

/// The first executable named `name` in the directories of `$PATH`.
public func findOnPath(_ name: String) -> URL? {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
    for directory in path.split(separator: ":") where !directory.isEmpty {
        let candidate = URL(fileURLWithPath: String(directory)).appendingPathComponent(name)
        if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
    }
    return nil
}

/// Drains a child's stdout and stderr on background threads (a full pipe would block the child).
private final class OutputCollector: @unchecked Sendable {
    private let lock = NSLock()
    private let group = DispatchGroup()
    private var out = Data(), err = Data()
    private let outPipe = Pipe(), errPipe = Pipe()

    init(_ process: Process) {
        process.standardOutput = outPipe
        process.standardError = errPipe
        drain(outPipe.fileHandleForReading) { self.out = $0 }
        drain(errPipe.fileHandleForReading) { self.err = $0 }
    }

    private func drain(_ handle: FileHandle, into store: @escaping (Data) -> Void) {
        group.enter()
        DispatchQueue.global().async {
            let data = handle.readDataToEndOfFile()
            self.lock.lock()
            store(data)
            self.lock.unlock()
            self.group.leave()
        }
    }

    /// The output so far; waits at most 5 s for the pipes to close (an orphaned rank may hold them open).
    func finish() -> (String, String) {
        _ = group.wait(timeout: .now() + 5)
        lock.lock()
        defer { lock.unlock() }
        return (String(decoding: out, as: UTF8.self), String(decoding: err, as: UTF8.self))
    }
}
