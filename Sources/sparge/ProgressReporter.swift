import Foundation

/// Progress of a long run on rank 0's standard error: a bar redrawn in place on a terminal, plain lines
/// every few seconds otherwise. Silent for the first two seconds, so short runs print nothing.
final class ProgressReporter {
    private let enabled: Bool
    private let terminal = isatty(2) != 0
    private let start = Date()
    private var lastLine = Date.distantPast
    private var lastPhase = ""
    private var drewBar = false

    init(enabled: Bool) { self.enabled = enabled }

    /// Reports `fraction` (0…1) done of `phase`.
    func update(_ phase: String, _ fraction: Double) {
        guard enabled else { return }
        let now = Date()
        let elapsed = now.timeIntervalSince(start)
        guard elapsed >= 2 else { lastPhase = phase; return }
        let percent = Int((min(1, max(0, fraction)) * 100).rounded())
        if terminal {
            // redraw at most ten times a second
            guard phase != lastPhase || now.timeIntervalSince(lastLine) >= 0.1 else { return }
            lastLine = now
            let width = 30
            let filled = width * percent / 100
            let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
            write("\r\(phase.padding(toLength: 10, withPad: " ", startingAt: 0)) [\(bar)] \(percent)%  \(String(format: "%.1f", elapsed)) s ")
            drewBar = true
        } else if now.timeIntervalSince(lastLine) >= 5 {
            write("sparge: \(phase) \(percent)% (\(String(format: "%.1f", elapsed)) s)\n")
            lastLine = now
        }
        lastPhase = phase
    }

    /// Ends the bar's line, if one was drawn.
    func finish() {
        if drewBar { write("\n") }
        drewBar = false
    }

    private func write(_ s: String) { FileHandle.standardError.write(Data(s.utf8)) }
}
