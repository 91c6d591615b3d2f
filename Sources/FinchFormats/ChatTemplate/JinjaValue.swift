import Foundation

/// A value inside a chat template, with Python's and Jinja's meaning of truth, equality, printing and `tojson`.
indirect enum JinjaValue: Equatable {
    case undefined
    case none
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([JinjaValue])
    /// Keys in insertion order (`tojson` and `items()` keep it).
    case object(JinjaObject)
    /// `namespace(...)`: the one mutable value, shared by reference.
    case namespace(JinjaNamespace)
    /// A function the template can call (`raise_exception`, `namespace`, a string's `strip`, …).
    case function(JinjaFunction)

    var isTrue: Bool {
        switch self {
        case .undefined, .none: return false
        case .bool(let b): return b
        case .int(let i): return i != 0
        case .double(let d): return d != 0
        case .string(let s): return !s.isEmpty
        case .array(let a): return !a.isEmpty
        case .object(let o): return !o.keys.isEmpty
        case .namespace, .function: return true
        }
    }

    /// What `{{ value }}` prints: Python's `str`.
    func printed() throws -> String {
        switch self {
        case .undefined: return ""
        case .none: return "None"
        case .bool(let b): return b ? "True" : "False"
        case .int(let i): return String(i)
        case .double(let d): return Self.pythonFloat(d)
        case .string(let s): return s
        case .array(let a): return "[" + (try a.map { try $0.pythonRepr() }).joined(separator: ", ") + "]"
        case .object(let o):
            return "{" + (try o.keys.map { "\(JinjaValue.string($0).pythonReprOfString()): \(try o.values[$0]!.pythonRepr())" }).joined(separator: ", ") + "}"
        case .namespace: return "<Namespace>"
        case .function(let f): return "<function \(f.name)>"
        }
    }

    func pythonRepr() throws -> String {
        if case .string = self { return pythonReprOfString() }
        return try printed()
    }

    /// Python's repr of a string: single quotes unless the text holds one and no double quote.
    func pythonReprOfString() -> String {
        guard case .string(let s) = self else { return "" }
        let quote: Character = s.contains("'") && !s.contains("\"") ? "\"" : "'"
        var out = String(quote)
        for c in s.unicodeScalars {
            switch c {
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if Character(c) == quote { out += "\\" + String(quote) } else { out.unicodeScalars.append(c) }
            }
        }
        return out + String(quote)
    }

    static func pythonFloat(_ d: Double) -> String {
        if d.isNaN { return "nan" }
        if d.isInfinite { return d > 0 ? "inf" : "-inf" }
        if d == d.rounded(), abs(d) < 1e16 { return String(format: "%.1f", d) }
        return "\(d)"
    }

    var typeName: String {
        switch self {
        case .undefined: return "undefined"
        case .none: return "none"
        case .bool: return "boolean"
        case .int, .double: return "number"
        case .string: return "string"
        case .array: return "list"
        case .object: return "mapping"
        case .namespace: return "namespace"
        case .function: return "function"
        }
    }

    /// The value of a JSON document (messages, tools), keeping the key order of the text.
    init(json: JSONValue) {
        switch json {
        case .null: self = .none
        case .bool(let b): self = .bool(b)
        case .int(let i): self = .int(i)
        case .double(let d): self = .double(d)
        case .string(let s): self = .string(s)
        case .array(let a): self = .array(a.map(JinjaValue.init(json:)))
        case .object(let o):
            // JSONValue's objects do not keep order; keys are sorted so rendering is deterministic.
            let keys = o.keys.sorted()
            self = .object(JinjaObject(keys: keys, values: o.mapValues(JinjaValue.init(json:))))
        }
    }

    static func == (a: JinjaValue, b: JinjaValue) -> Bool {
        switch (a, b) {
        case (.undefined, .undefined), (.none, .none): return true
        case let (.bool(x), .bool(y)): return x == y
        case let (.int(x), .int(y)): return x == y
        case let (.double(x), .double(y)): return x == y
        case let (.int(x), .double(y)), let (.double(y), .int(x)): return Double(x) == y
        case let (.bool(x), .int(y)), let (.int(y), .bool(x)): return (x ? 1 : 0) == y
        case let (.string(x), .string(y)): return x == y
        case let (.array(x), .array(y)): return x == y
        case let (.object(x), .object(y)): return Set(x.keys) == Set(y.keys) && x.values == y.values
        case let (.namespace(x), .namespace(y)): return x === y
        default: return false
        }
    }
}

struct JinjaObject: Equatable {
    var keys: [String]
    var values: [String: JinjaValue]

    init(keys: [String] = [], values: [String: JinjaValue] = [:]) {
        self.keys = keys
        self.values = values
    }

    subscript(key: String) -> JinjaValue? { values[key] }

    mutating func set(_ key: String, _ value: JinjaValue) {
        if values[key] == nil { keys.append(key) }
        values[key] = value
    }
}

final class JinjaNamespace {
    var attributes: [String: JinjaValue]
    init(_ attributes: [String: JinjaValue]) { self.attributes = attributes }
}

struct JinjaFunction: Equatable {
    let name: String
    let call: ([JinjaValue], [String: JinjaValue]) throws -> JinjaValue

    static func == (a: JinjaFunction, b: JinjaFunction) -> Bool { a.name == b.name }
}
