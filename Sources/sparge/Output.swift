import Foundation

/// One JSON object with keys in insertion order (machine-readable output for `--json`).
struct JSONLine {
    private var fields: [(String, String)] = []

    mutating func add(_ key: String, _ value: Int) { fields.append((key, String(value))) }
    mutating func add(_ key: String, _ value: Bool) { fields.append((key, value ? "true" : "false")) }
    mutating func add(_ key: String, _ value: String) { fields.append((key, JSONLine.quote(value))) }
    mutating func add(_ key: String, _ value: Double?) {
        guard let value, value.isFinite else { fields.append((key, "null")); return }
        fields.append((key, String(format: "%.6g", value)))
    }

    var text: String { "{" + fields.map { "\(JSONLine.quote($0.0)): \($0.1)" }.joined(separator: ", ") + "}" }

    static func quote(_ s: String) -> String {
        var out = "\""
        for c in s.unicodeScalars {
            switch c {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case _ where c.value < 0x20: out += String(format: "\\u%04x", c.value)
            default: out.unicodeScalars.append(c)
            }
        }
        return out + "\""
    }
}

/// A plain-text table with right-aligned columns.
struct TextTable {
    let headers: [String]
    var rows: [[String]] = []

    init(_ headers: [String]) { self.headers = headers }

    mutating func add(_ row: [String]) { rows.append(row) }

    var text: String {
        let widths = headers.indices.map { c in ([headers[c]] + rows.map { $0[c] }).map(\.count).max()! }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { String(repeating: " ", count: widths[$0] - $1.count) + $1 }.joined(separator: "  ")
        }
        return ([line(headers), widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ")]
            + rows.map(line)).joined(separator: "\n")
    }
}

/// Formatting of the numbers the tables show.
enum Format {
    static func bytes(_ n: Int) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var v = Double(n)
        var u = 0
        while v >= 1024 && u < units.count - 1 { v /= 1024; u += 1 }
        return u == 0 ? "\(n) B" : String(format: "%.1f %@", v, units[u])
    }

    static func fixed(_ v: Double, _ digits: Int) -> String { String(format: "%.\(digits)f", v) }

    static func scientific(_ v: Double?) -> String { v.map { String(format: "%.2e", $0) } ?? "-" }

    /// Median of non-empty samples.
    static func median(_ xs: [Double]) -> Double {
        let s = xs.sorted()
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }
}
