/// A JSON value as written, for headers that must be read strictly (`.safetensors`).
///
/// Unlike `JSONSerialization`, objects keep every member in order (so that a repeated key can be refused)
/// and numbers keep their text (so that `2.5` or `1e3` is never taken for an integer, and an integer too
/// large for `Int` is never rounded).
indirect enum JSONValue: Equatable {
    case object([(key: String, value: JSONValue)])
    case array([JSONValue])
    case string(String)
    case number(String)
    case bool(Bool)
    case null

    /// The integer this value is written as, or nil for anything else (a fraction, an exponent, a number
    /// outside `Int`, a string).
    var integer: Int? {
        if case .number(let text) = self { return Int(text) }
        return nil
    }

    static func == (a: JSONValue, b: JSONValue) -> Bool {
        switch (a, b) {
        case (.object(let x), .object(let y)):
            x.count == y.count && zip(x, y).allSatisfy { $0.key == $1.key && $0.value == $1.value }
        case (.array(let x), .array(let y)): x == y
        case (.string(let x), .string(let y)), (.number(let x), .number(let y)): x == y
        case (.bool(let x), .bool(let y)): x == y
        case (.null, .null): true
        default: false
        }
    }
}

/// Why a text is not JSON, and at which byte.
struct JSONSyntaxError: Error, CustomStringConvertible {
    let offset: Int
    let reason: String
    var description: String { "\(reason) at byte \(offset)" }
}

/// A strict recursive-descent JSON parser (RFC 8259) with a nesting limit, so that a hostile header cannot
/// exhaust the stack.
struct JSONParser {
    private let bytes: [UInt8]
    private var at = 0
    private var depth = 0
    static let maximumDepth = 64

    /// Parses `bytes` as one JSON value, surrounded by nothing but whitespace.
    static func parse(_ bytes: [UInt8]) throws -> JSONValue {
        var parser = JSONParser(bytes: bytes)
        let value = try parser.value()
        parser.skipWhitespace()
        guard parser.at == bytes.count else { throw parser.error("unexpected text after the JSON value") }
        return value
    }

    private init(bytes: [UInt8]) { self.bytes = bytes }

    private func error(_ reason: String) -> JSONSyntaxError { JSONSyntaxError(offset: at, reason: reason) }

    private mutating func skipWhitespace() {
        while at < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[at]) { at += 1 }
    }

    private mutating func value() throws -> JSONValue {
        skipWhitespace()
        guard at < bytes.count else { throw error("unexpected end") }
        switch bytes[at] {
        case UInt8(ascii: "{"): return try nested { try $0.object() }
        case UInt8(ascii: "["): return try nested { try $0.array() }
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        default: return .number(try number())
        }
    }

    private mutating func nested(_ body: (inout JSONParser) throws -> JSONValue) throws -> JSONValue {
        depth += 1
        defer { depth -= 1 }
        guard depth <= Self.maximumDepth else { throw error("nested deeper than \(Self.maximumDepth) levels") }
        return try body(&self)
    }

    private mutating func expect(_ c: Character) throws {
        skipWhitespace()
        guard at < bytes.count, bytes[at] == c.asciiValue! else { throw error("expected '\(c)'") }
        at += 1
    }

    /// Consumes `c` (after whitespace) if it is next.
    private mutating func take(_ c: Character) -> Bool {
        skipWhitespace()
        guard at < bytes.count, bytes[at] == c.asciiValue! else { return false }
        at += 1
        return true
    }

    private mutating func object() throws -> JSONValue {
        try expect("{")
        var members: [(key: String, value: JSONValue)] = []
        if take("}") { return .object(members) }
        repeat {
            skipWhitespace()
            let key = try string()
            try expect(":")
            members.append((key, try value()))
        } while take(",")
        try expect("}")
        return .object(members)
    }

    private mutating func array() throws -> JSONValue {
        try expect("[")
        var items: [JSONValue] = []
        if take("]") { return .array(items) }
        repeat { items.append(try value()) } while take(",")
        try expect("]")
        return .array(items)
    }

    private mutating func literal(_ word: String) throws {
        let w = Array(word.utf8)
        guard at + w.count <= bytes.count, Array(bytes[at..<(at + w.count)]) == w else { throw error("invalid literal") }
        at += w.count
    }

    /// A number's text, checked against the JSON grammar `-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?`.
    private mutating func number() throws -> String {
        let start = at
        func digits() -> Int {
            let s = at
            while at < bytes.count, (0x30...0x39).contains(bytes[at]) { at += 1 }
            return at - s
        }
        if at < bytes.count, bytes[at] == UInt8(ascii: "-") { at += 1 }
        let intStart = at
        let intDigits = digits()
        guard intDigits > 0, intDigits == 1 || bytes[intStart] != UInt8(ascii: "0") else { throw error("invalid number") }
        if at < bytes.count, bytes[at] == UInt8(ascii: ".") {
            at += 1
            guard digits() > 0 else { throw error("invalid number") }
        }
        if at < bytes.count, bytes[at] == UInt8(ascii: "e") || bytes[at] == UInt8(ascii: "E") {
            at += 1
            if at < bytes.count, bytes[at] == UInt8(ascii: "+") || bytes[at] == UInt8(ascii: "-") { at += 1 }
            guard digits() > 0 else { throw error("invalid number") }
        }
        return String(decoding: bytes[start..<at], as: UTF8.self)
    }

    private mutating func string() throws -> String {
        guard at < bytes.count, bytes[at] == UInt8(ascii: "\"") else { throw error("expected a string") }
        at += 1
        var out: [UInt8] = []
        while at < bytes.count {
            let c = bytes[at]
            at += 1
            switch c {
            case UInt8(ascii: "\""):
                guard let text = String(validating: out, as: UTF8.self) else {
                    throw error("a string that is not UTF-8")
                }
                return text
            case UInt8(ascii: "\\"): try escape(into: &out)
            case 0..<0x20: throw error("a control character inside a string")
            default: out.append(c)
            }
        }
        throw error("unterminated string")
    }

    private mutating func escape(into out: inout [UInt8]) throws {
        guard at < bytes.count else { throw error("unterminated string") }
        let c = bytes[at]
        at += 1
        let simple: [UInt8: UInt8] = [0x22: 0x22, 0x5C: 0x5C, 0x2F: 0x2F, 0x62: 0x08, 0x66: 0x0C, 0x6E: 0x0A,
                                      0x72: 0x0D, 0x74: 0x09]
        if let byte = simple[c] { out.append(byte); return }
        guard c == UInt8(ascii: "u") else { throw error("invalid escape") }
        var scalar = try hex4()
        if (0xD800..<0xDC00).contains(scalar) {
            guard at + 1 < bytes.count, bytes[at] == UInt8(ascii: "\\"), bytes[at + 1] == UInt8(ascii: "u") else {
                throw error("unpaired surrogate")
            }
            at += 2
            let low = try hex4()
            guard (0xDC00..<0xE000).contains(low) else { throw error("unpaired surrogate") }
            scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
        }
        guard let u = Unicode.Scalar(scalar) else { throw error("invalid \\u escape") }
        out += Array(String(Character(u)).utf8)
    }

    private mutating func hex4() throws -> UInt32 {
        guard at + 4 <= bytes.count, let v = UInt32(String(decoding: bytes[at..<(at + 4)], as: UTF8.self), radix: 16) else {
            throw error("invalid \\u escape")
        }
        at += 4
        return v
    }
}
