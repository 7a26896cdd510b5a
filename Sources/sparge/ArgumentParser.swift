/// A command-line error: printed as `sparge: error: …` with a hint to `--help`, exit status 2.
struct UsageError: Error, CustomStringConvertible {
    let description: String
    init(_ message: String) { description = message }
}

/// One option a command accepts.
struct OptionSpec {
    enum Kind { case flag, value(placeholder: String) }
    let name: String
    let kind: Kind
    let help: String

    static func flag(_ name: String, _ help: String) -> OptionSpec { .init(name: name, kind: .flag, help: help) }
    static func value(_ name: String, _ placeholder: String, _ help: String) -> OptionSpec {
        .init(name: name, kind: .value(placeholder: placeholder), help: help)
    }
}

/// The parsed options of one command: `--name value`, `--name=value` and `--flag`; no positionals.
struct ParsedOptions {
    private var values: [String: String] = [:]
    private var flags: Set<String> = []

    /// Parses `arguments` against `specs`; unknown options, missing values and repeats are `UsageError`s.
    init(_ arguments: [String], specs: [OptionSpec], command: String) throws {
        let byName = Dictionary(uniqueKeysWithValues: specs.map { ($0.name, $0) })
        var i = 0
        while i < arguments.count {
            let argument = arguments[i]
            guard argument.hasPrefix("--") else {
                throw UsageError("\(command): unexpected argument '\(argument)'")
            }
            var name = String(argument.dropFirst(2))
            var inline: String?
            if let eq = name.firstIndex(of: "=") {
                inline = String(name[name.index(after: eq)...])
                name = String(name[..<eq])
            }
            guard let spec = byName[name] else {
                let close = specs.map(\.name).filter { $0.hasPrefix(String(name.prefix(3))) }
                let hint = close.isEmpty ? "" : " (did you mean \(close.map { "--\($0)" }.joined(separator: ", "))?)"
                throw UsageError("\(command): unknown option '--\(name)'\(hint)")
            }
            guard values[name] == nil, !flags.contains(name) else {
                throw UsageError("\(command): option '--\(name)' given twice")
            }
            switch spec.kind {
            case .flag:
                guard inline == nil else { throw UsageError("\(command): option '--\(name)' takes no value") }
                flags.insert(name)
            case .value:
                if let inline {
                    values[name] = inline
                } else {
                    guard i + 1 < arguments.count else {
                        throw UsageError("\(command): option '--\(name)' needs a value")
                    }
                    i += 1
                    values[name] = arguments[i]
                }
            }
            i += 1
        }
    }

    func has(_ flag: String) -> Bool { flags.contains(flag) }

    /// Every option given, as `name → value` (flags map to ""), without those in `excluding`.
    func all(excluding: Set<String> = []) -> [String: String] {
        var out = values.filter { !excluding.contains($0.key) }
        for flag in flags where !excluding.contains(flag) { out[flag] = "" }
        return out
    }

    func string(_ name: String) -> String? { values[name] }

    func required(_ name: String, command: String) throws -> String {
        guard let v = values[name] else { throw UsageError("\(command): missing required option '--\(name)'") }
        return v
    }

    func int(_ name: String, range: ClosedRange<Int> = 1...Int.max) throws -> Int? {
        guard let text = values[name] else { return nil }
        guard let v = Int(text.replacingUnderscores), range.contains(v) else {
            throw UsageError("--\(name): expected an integer in \(range.lowerBound)…\(range.upperBound == Int.max ? "" : "\(range.upperBound)"), got '\(text)'")
        }
        return v
    }

    func float(_ name: String, range: ClosedRange<Float>) throws -> Float? {
        guard let text = values[name] else { return nil }
        guard let v = Float(text), v.isFinite, range.contains(v) else {
            throw UsageError("--\(name): expected a number in \(range.lowerBound)…\(range.upperBound), got '\(text)'")
        }
        return v
    }

    func choice(_ name: String, _ allowed: [String]) throws -> String? {
        guard let v = values[name] else { return nil }
        guard allowed.contains(v) else {
            throw UsageError("--\(name): expected one of \(allowed.joined(separator: ", ")), got '\(v)'")
        }
        return v
    }
}

extension String {
    fileprivate var replacingUnderscores: String { String(filter { $0 != "_" }) }
}

/// The help text of a command: usage line, summary, then each option with its help.
func helpText(command: String, usage: String, summary: String, specs: [OptionSpec]) -> String {
    var lines = ["usage: sparge \(command) \(usage)", "", summary, "", "options:"]
    for spec in specs {
        let head: String
        switch spec.kind {
        case .flag: head = "--\(spec.name)"
        case .value(let placeholder): head = "--\(spec.name) \(placeholder)"
        }
        let pad = head.count < 26 ? String(repeating: " ", count: 26 - head.count) : "\n" + String(repeating: " ", count: 28)
        lines.append("  \(head)\(pad)\(spec.help)")
    }
    lines.append("  --help                    show this help")
    return lines.joined(separator: "\n")
}
