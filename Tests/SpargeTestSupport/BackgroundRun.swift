import Foundation
import XCTest

/// A `sparge` run (one process, or `mpirun`) that a test watches while it runs: to send it a signal, or to
/// change a file, at a moment the run announces on standard error (see `SPARGE_TEST_PAUSE`).
///
/// Output goes to files, so that it can be read while the run goes on. Every wait has a deadline; `finish`
/// kills the process group if it is still running, so a hang is a failure, not a stuck test.
public final class BackgroundRun {
    public let process = Process()
    private let outPath: String, errPath: String

    /// Starts `sparge args…` as one process (`ranks` nil) or under `mpirun -np ranks`, with `environment`
    /// added to the usual one.
    public init(_ args: [String], ranks: Int?, environment extra: [String: String], folder: String) throws {
        let (executable, arguments, environment) = try ranks.map { try mpirunCommand([args], np: $0) }
            ?? singleCommand(args)
        outPath = "\(folder)/run-\(UUID().uuidString).out"
        errPath = outPath.replacingOccurrences(of: ".out", with: ".err")
        FileManager.default.createFile(atPath: outPath, contents: nil)
        FileManager.default.createFile(atPath: errPath, contents: nil)
        process.executableURL = executable
        process.arguments = arguments
        process.environment = environment.merging(extra) { $1 }
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle(forWritingAtPath: outPath)
        process.standardError = FileHandle(forWritingAtPath: errPath)
        try process.run()
    }

    /// What the run printed on standard error so far.
    public var stderr: String { (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "" }

    /// Waits until standard error holds `text` (true), or the run ended or `timeout` passed (false).
    public func wait(for text: String, timeout: TimeInterval) -> Bool {
        let deadline = Date(timeIntervalSinceNow: timeout)
        while Date() < deadline {
            if stderr.contains(text) { return true }
            if !process.isRunning { return stderr.contains(text) }
            usleep(20_000)
        }
        return false
    }

    /// The pids of the ranks, from their `sparge: test: rank R pid P …` announcements.
    public var rankPIDs: [Int: Int32] {
        var out: [Int: Int32] = [:]
        for line in stderr.split(separator: "\n") where line.hasPrefix("sparge: test: rank ") {
            let words = line.split(separator: " ")
            if words.count > 5, let rank = Int(words[3]), let pid = Int32(words[5]) { out[rank] = pid }
        }
        return out
    }

    /// Waits at most `timeout` for the end (then kills the process group and throws), and returns how it
    /// ended: the exit status, or the signal number when a signal ended it.
    public func finish(timeout: TimeInterval) throws -> MPIRunResult {
        let deadline = Date(timeIntervalSinceNow: timeout)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning {
            kill(-process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            throw MPIRunTimeout(command: process.arguments?.joined(separator: " ") ?? "", timeout: timeout,
                                stdout: (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "", stderr: stderr)
        }
        process.waitUntilExit()
        let stdout = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
        try? FileManager.default.removeItem(atPath: outPath)
        let err = stderr
        try? FileManager.default.removeItem(atPath: errPath)
        return (process.terminationStatus, stdout, err)
    }
}
