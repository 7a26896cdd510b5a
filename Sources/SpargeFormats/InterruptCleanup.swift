#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Temporary output files (`*.partial-*`) to remove when the process is stopped by SIGINT, SIGTERM or
/// SIGHUP, so that an interrupted run leaves no partial file behind.
///
/// `StagedFile` registers each temporary file it creates or opens and unregisters it once committed or
/// removed; nothing happens on a signal until a program calls ``install(announcement:)`` (the `sparge`
/// tool does; a library caller keeps its own signal handling). SIGKILL cannot be caught: a run killed
/// with it leaves its `*.partial-*` files.
///
/// The handler is async-signal-safe: the paths are kept as C strings built when they are registered, and
/// it calls only `unlink`, `write`, `signal` and `raise`. While outputs are being committed (a few
/// renames, see ``deferringSignals(_:)``) a signal is held back and delivered right after.
public enum InterruptCleanup {
    /// The most temporary files known at once; a run has at most a few.
    static let capacity = 64
    /// The signals handled.
    static let signals: [Int32] = [SIGINT, SIGTERM, SIGHUP]

    /// Registered paths (nil: a free slot). Never freed, so that a handler that read a pointer can use it.
    private static let slots: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?> = {
        let p = UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>.allocate(capacity: capacity)
        p.initialize(repeating: nil, count: capacity)
        return p
    }()
    /// [0]: signals are deferred; [1]: the deferred signal (0: none); [2]: print the announcement.
    private static let state: UnsafeMutablePointer<sig_atomic_t> = {
        let p = UnsafeMutablePointer<sig_atomic_t>.allocate(capacity: 3)
        p.initialize(repeating: 0, count: 3)
        return p
    }()
    /// The message printed for each signal number, prebuilt.
    private static let messages: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?> = {
        let p = UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>.allocate(capacity: 65)
        p.initialize(repeating: nil, count: 65)
        return p
    }()

    /// Installs the handlers. `announcement`, when given, is printed on standard error as
    /// `<announcement> SIGTERM` before the process ends by the signal (pass nil on ranks that stay quiet).
    /// A signal that was ignored when the program started (`nohup`) stays ignored.
    public static func install(announcement: String?) {
        _ = (slots, state)
        state[2] = announcement == nil ? 0 : 1
        for (sig, name) in zip(signals, ["SIGINT", "SIGTERM", "SIGHUP"]) {
            if let announcement, messages[Int(sig)] == nil { messages[Int(sig)] = strdup("\(announcement) \(name)\n") }
            var previous = sigaction()
            sigaction(sig, nil, &previous)
            guard unsafeBitCast(previous.__sigaction_handler.sa_handler, to: Int.self) != 1 else { continue }  // SIG_IGN
            signal(sig) { InterruptCleanup.stop($0) }
        }
    }

    /// Stops announcing signals: for a process that has already said why it ends and is on its way out (a
    /// launcher may then stop it with SIGTERM, which is no news to the user).
    public static func stopAnnouncing() { state[2] = 0 }

    /// Adds `path` to the files removed on a signal.
    static func register(_ path: String) {
        guard let slot = (0..<capacity).first(where: { slots[$0] == nil }) else { return }
        slots[slot] = strdup(path)
    }

    /// Removes `path` from the files removed on a signal (it was committed or removed).
    static func unregister(_ path: String) {
        for i in 0..<capacity {
            if let p = slots[i], String(cString: p) == path { slots[i] = nil }  // the string is never freed
        }
    }

    /// Removes every registered file now: for error paths that end the process without unwinding.
    public static func removeAll() {
        for i in 0..<capacity {
            if let p = slots[i] { unlink(p); slots[i] = nil }
        }
    }

    /// Runs `body` with SIGINT, SIGTERM and SIGHUP held back, then delivers one that came meanwhile: used
    /// around the commit of several outputs, which must complete or roll back, not stop halfway.
    public static func deferringSignals<T>(_ body: () throws -> T) rethrows -> T {
        state[0] = 1
        defer {
            state[0] = 0
            let pending = state[1]
            state[1] = 0
            if pending != 0 { raise(pending) }
        }
        return try body()
    }

    /// The handler: removes the registered files, announces, and ends the process by the same signal.
    private static func stop(_ sig: Int32) {
        if state[0] != 0 {
            state[1] = sig
            return
        }
        for i in 0..<capacity {
            if let p = slots[i] { unlink(p) }
        }
        if state[2] != 0, sig >= 0, sig < 65, let message = messages[Int(sig)] { _ = write(2, message, strlen(message)) }
        signal(sig, SIG_DFL)
        raise(sig)
    }
}
