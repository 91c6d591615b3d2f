import Foundation

/// The filters, tests, operators and methods chat templates use, with Python's and Jinja's results.
enum JinjaBuiltins {
    static func binary(_ op: String, _ a: JinjaValue, _ b: JinjaValue) throws -> JinjaValue {
        func fail() -> ChatTemplateError { ChatTemplateError("'\(op)' is not defined between a \(a.typeName) and a \(b.typeName)") }
        func numbers() -> (Double, Double)? {
            switch (a, b) {
            case let (.int(x), .int(y)): return (Double(x), Double(y))
            case let (.int(x), .double(y)): return (Double(x), y)
            case let (.double(x), .int(y)): return (x, Double(y))
            case let (.double(x), .double(y)): return (x, y)
            default: return nil
            }
        }
        switch op {
        case "==": return .bool(a == b)
        case "!=": return .bool(a != b)
        case "~": return .string(try a.printed() + b.printed())
        case "in":
            switch b {
            case .string(let s):
                guard case .string(let part) = a else { throw fail() }
                return .bool(part.isEmpty || s.contains(part))
            case .array(let list): return .bool(list.contains(a))
            case .object(let o):
                guard case .string(let key) = a else { return .bool(false) }
                return .bool(o[key] != nil)
            case .undefined: throw ChatTemplateError("'in' an undefined value")
            default: throw fail()
            }
        case "<", ">", "<=", ">=":
            var order: ComparisonResult
            if case let (.string(x), .string(y)) = (a, b) {
                order = x == y ? .orderedSame : (Array(x.unicodeScalars).lexicographicallyPrecedes(Array(y.unicodeScalars)) { $0.value < $1.value } ? .orderedAscending : .orderedDescending)
            } else if let (x, y) = numbers() {
                order = x == y ? .orderedSame : x < y ? .orderedAscending : .orderedDescending
            } else { throw fail() }
            switch op {
            case "<": return .bool(order == .orderedAscending)
            case ">": return .bool(order == .orderedDescending)
            case "<=": return .bool(order != .orderedDescending)
            default: return .bool(order != .orderedAscending)
            }
        case "+":
            switch (a, b) {
            case let (.int(x), .int(y)): return .int(x &+ y)
            case let (.string(x), .string(y)): return .string(x + y)
            case let (.array(x), .array(y)): return .array(x + y)
            default:
                if let (x, y) = numbers() { return .double(x + y) }
                throw fail()
            }
        case "-":
            if case let (.int(x), .int(y)) = (a, b) { return .int(x &- y) }
            if let (x, y) = numbers() { return .double(x - y) }
            throw fail()
        case "*":
            switch (a, b) {
            case let (.int(x), .int(y)): return .int(x &* y)
            case let (.string(s), .int(n)), let (.int(n), .string(s)):
                guard n <= JinjaRenderer.maximumOutput / max(1, s.unicodeScalars.count) else {
                    throw ChatTemplateError("repeating a string \(n) times makes more text than a chat template may")
                }
                return .string(String(repeating: s, count: max(n, 0)))
            default:
                if let (x, y) = numbers() { return .double(x * y) }
                throw fail()
            }
        case "/":
            guard let (x, y) = numbers() else { throw fail() }
            guard y != 0 else { throw ChatTemplateError("division by zero") }
            return .double(x / y)
        case "//", "%":
            if case let (.int(x), .int(y)) = (a, b) {
                guard y != 0 else { throw ChatTemplateError("division by zero") }
                var q = y == -1 ? 0 &- x : x / y
                if x.remainderReportingOverflow(dividingBy: y).partialValue != 0 && ((x < 0) != (y < 0)) { q -= 1 }  // Python floors
                return op == "//" ? .int(q) : .int(x &- q &* y)
            }
            guard let (x, y) = numbers() else { throw fail() }
            guard y != 0 else { throw ChatTemplateError("division by zero") }
            let q = (x / y).rounded(.down)
            return op == "//" ? .double(q) : .double(x - q * y)
        case "**":
            guard let (x, y) = numbers() else { throw fail() }
            if case let (.int(i), .int(j)) = (a, b), j >= 0, j <= 64 {
                var r = 1
                for _ in 0..<j { r = r &* i }
                return .int(r)
            }
            return .double(Foundation.pow(x, y))
        default:
            throw fail()
        }
    }

    static func test(_ name: String, _ v: JinjaValue, _ args: [JinjaValue]) throws -> Bool {
        func arg() throws -> JinjaValue {
            guard let a = args.first else { throw ChatTemplateError("the test '\(name)' needs an argument") }
            return a
        }
        switch name {
        case "defined": return v != .undefined
        case "undefined": return v == .undefined
        case "none": return v == .none
        case "string": if case .string = v { return true }; return false
        case "number": if case .int = v { return true }; if case .double = v { return true }; return false
        case "integer": if case .int = v { return true }; return false
        case "float": if case .double = v { return true }; return false
        case "boolean": if case .bool = v { return true }; return false
        case "true": return v == .bool(true)
        case "false": return v == .bool(false)
        case "mapping": if case .object = v { return true }; return false
        case "iterable":
            switch v { case .array, .object, .string: return true; default: return false }
        case "sequence":
            switch v { case .array, .object, .string: return true; default: return false }
        case "callable": if case .function = v { return true }; return false
        case "equalto", "eq", "==", "sameas": return v == (try arg())
        case "ne", "!=": return v != (try arg())
        case "lt", "<": return try binary("<", v, arg()).isTrue
        case "gt", ">": return try binary(">", v, arg()).isTrue
        case "le", "<=": return try binary("<=", v, arg()).isTrue
        case "ge", ">=": return try binary(">=", v, arg()).isTrue
        case "in": return try binary("in", v, arg()).isTrue
        case "odd", "even":
            guard case .int(let i) = v else { throw ChatTemplateError("the test '\(name)' needs an integer") }
            return (i % 2 != 0) == (name == "odd")
        case "divisibleby":
            guard case .int(let i) = v, case .int(let d) = try arg(), d != 0 else { throw ChatTemplateError("the test 'divisibleby' needs integers") }
            return i % d == 0
        case "lower": if case .string(let s) = v { return s == s.lowercased() }; return false
        case "upper": if case .string(let s) = v { return s == s.uppercased() }; return false
        default: throw ChatTemplateError("the test '\(name)' is not implemented")
        }
    }

    /// Python's `str.strip()` whitespace (and `strip(chars)`).
    static func strip(_ s: String, _ chars: JinjaValue?, left: Bool, right: Bool) -> String {
        let set: (Unicode.Scalar) -> Bool
        if case .string(let c)? = chars { let cs = Set(c.unicodeScalars); set = { cs.contains($0) } } else {
            set = { $0.properties.isWhitespace || ($0.value >= 0x1C && $0.value <= 0x1F) }
        }
        var scalars = Substring(s).unicodeScalars[...]
        if left { while let f = scalars.first, set(f) { scalars = scalars.dropFirst() } }
        if right { while let l = scalars.last, set(l) { scalars = scalars.dropLast() } }
        return String(String.UnicodeScalarView(scalars))
    }

    static func length(_ v: JinjaValue) throws -> Int {
        switch v {
        case .string(let s): return s.unicodeScalars.count
        case .array(let a): return a.count
        case .object(let o): return o.keys.count
        case .undefined: return 0
        default: throw ChatTemplateError("a \(v.typeName) has no length")
        }
    }

    static func filter(_ name: String, _ v: JinjaValue, _ args: [JinjaValue], _ kwargs: [String: JinjaValue]) throws -> JinjaValue {
        func string() throws -> String {
            guard case .string(let s) = v else { throw ChatTemplateError("the filter '\(name)' needs a string, not a \(v.typeName)") }
            return s
        }
        switch name {
        case "trim": return .string(strip(try v.printed(), args.first, left: true, right: true))
        case "length", "count": return .int(try length(v))
        case "upper": return .string(try string().uppercased())
        case "lower": return .string(try string().lowercased())
        case "capitalize":
            let s = try string()
            return .string(s.prefix(1).uppercased() + s.dropFirst().lowercased())
        case "title": return .string(try string().capitalized)
        case "string": return .string(try v.printed())
        case "safe": return v
        case "list": return .array(try JinjaRenderer.iterate(v))
        case "first": return try JinjaRenderer.iterate(v).first ?? .undefined
        case "last": return try JinjaRenderer.iterate(v).last ?? .undefined
        case "reverse":
            if case .string(let s) = v { return .string(String(s.reversed())) }
            return .array(try JinjaRenderer.iterate(v).reversed())
        case "join":
            let separator = try (args.first ?? kwargs["d"] ?? .string("")).printed()
            return .string(try JinjaRenderer.iterate(v).map { try $0.printed() }.joined(separator: separator))
        case "default", "d":
            let fallback = args.first ?? kwargs["default_value"] ?? .string("")
            let boolean = (args.count > 1 ? args[1] : kwargs["boolean"] ?? .bool(false)).isTrue
            return v == .undefined || (boolean && !v.isTrue) ? fallback : v
        case "items":
            guard case .object(let o) = v else { throw ChatTemplateError("the filter 'items' needs a mapping") }
            return .array(o.keys.map { .array([.string($0), o.values[$0]!]) })
        case "selectattr", "rejectattr":
            guard case .string(let attribute) = args.first ?? .undefined else { throw ChatTemplateError("\(name) needs an attribute name") }
            let items = try JinjaRenderer.iterate(v)
            let kept = try items.filter { item in
                let value = try JinjaRenderer.member(item, attribute)
                let passes: Bool
                if args.count > 1, case .string(let testName) = args[1] {
                    passes = try test(testName, value, Array(args.dropFirst(2)))
                } else {
                    passes = value.isTrue
                }
                return passes == (name == "selectattr")
            }
            return .array(kept)
        case "map":
            let items = try JinjaRenderer.iterate(v)
            if case .string(let attribute)? = kwargs["attribute"] {
                return .array(try items.map { try JinjaRenderer.member($0, attribute) })
            }
            guard case .string(let filterName)? = args.first, JinjaParser.filters.contains(filterName) else {
                throw ChatTemplateError("map needs attribute= or a filter name")
            }
            return .array(try items.map { try filter(filterName, $0, Array(args.dropFirst()), [:]) })
        case "replace":
            guard args.count >= 2, case .string(let old) = args[0], case .string(let new) = args[1] else {
                throw ChatTemplateError("replace needs two strings")
            }
            return .string(try string().replacingOccurrences(of: old, with: new))
        case "int":
            switch v {
            case .int: return v
            case .double(let d): return .int(Int(d))
            case .string(let s): return .int(Int(s.trimmingCharacters(in: .whitespaces)) ?? 0)
            case .bool(let b): return .int(b ? 1 : 0)
            default: return .int(0)
            }
        case "float":
            switch v {
            case .int(let i): return .double(Double(i))
            case .double: return v
            case .string(let s): return .double(Double(s.trimmingCharacters(in: .whitespaces)) ?? 0)
            default: return .double(0)
            }
        case "abs":
            switch v {
            case .int(let i): return .int(i == Int.min ? i : abs(i))
            case .double(let d): return .double(abs(d))
            default: throw ChatTemplateError("abs needs a number")
            }
        case "unique":
            var seen: [JinjaValue] = []
            for item in try JinjaRenderer.iterate(v) where !seen.contains(item) { seen.append(item) }
            return .array(seen)
        case "sum":
            return try JinjaRenderer.iterate(v).reduce(.int(0)) { try binary("+", $0, $1) }
        case "min", "max":
            let items = try JinjaRenderer.iterate(v)
            guard var best = items.first else { return .undefined }
            for item in items.dropFirst() where try binary(name == "min" ? "<" : ">", item, best).isTrue { best = item }
            return best
        case "tojson":
            var indent: Int? = nil
            if case .int(let i)? = kwargs["indent"] ?? args.first { indent = i }
            return .string(try toJSON(v, indent: indent, level: 0))
        case "indent":
            let width: Int
            if case .int(let w)? = args.first ?? kwargs["width"] { width = w } else { width = 4 }
            let pad = String(repeating: " ", count: width)
            let lines = try string().components(separatedBy: "\n")
            let first = ((args.count > 1 ? args[1] : kwargs["first"]) ?? .bool(false)).isTrue
            return .string(lines.enumerated().map { i, l in (i == 0 && !first) || l.isEmpty ? l : pad + l }.joined(separator: "\n"))
        default:
            throw ChatTemplateError("the filter '\(name)' is not implemented by Finch's template subset")
        }
    }

    /// transformers' `tojson`: Python's `json.dumps` with `ensure_ascii=False`, keys in their order.
    static func toJSON(_ v: JinjaValue, indent: Int?, level: Int) throws -> String {
        let (open, close, itemSeparator) = indent.map { n -> (String, String, String) in
            ("\n" + String(repeating: " ", count: n * (level + 1)), "\n" + String(repeating: " ", count: n * level), ",")
        } ?? ("", "", ", ")
        switch v {
        case .undefined, .none: return "null"
        case .bool(let b): return b ? "true" : "false"
        case .int(let i): return String(i)
        case .double(let d): return d.isFinite ? JinjaValue.pythonFloat(d) : (d.isNaN ? "NaN" : d > 0 ? "Infinity" : "-Infinity")
        case .string(let s):
            var out = "\""
            for c in s.unicodeScalars {
                switch c {
                case "\"": out += "\\\""
                case "\\": out += "\\\\"
                case "\n": out += "\\n"
                case "\r": out += "\\r"
                case "\t": out += "\\t"
                case "\u{08}": out += "\\b"
                case "\u{0C}": out += "\\f"
                default:
                    if c.value < 0x20 { out += String(format: "\\u%04x", c.value) } else { out.unicodeScalars.append(c) }
                }
            }
            return out + "\""
        case .array(let a):
            guard !a.isEmpty else { return "[]" }
            let items = try a.map { try toJSON($0, indent: indent, level: level + 1) }
            return "[" + open + items.joined(separator: itemSeparator + (indent == nil ? "" : open)) + close + "]"
        case .object(let o):
            guard !o.keys.isEmpty else { return "{}" }
            let items = try o.keys.map { k in try toJSON(.string(k), indent: nil, level: 0) + ": " + toJSON(o.values[k]!, indent: indent, level: level + 1) }
            return "{" + open + items.joined(separator: itemSeparator + (indent == nil ? "" : open)) + close + "}"
        case .namespace, .function: throw ChatTemplateError("a \(v.typeName) cannot be written as JSON")
        }
    }

    /// A string's, list's or mapping's method, bound to it.
    static func method(_ v: JinjaValue, _ name: String) -> JinjaValue? {
        func make(_ call: @escaping ([JinjaValue], [String: JinjaValue]) throws -> JinjaValue) -> JinjaValue {
            .function(JinjaFunction(name: name, call: call))
        }
        switch v {
        case .string(let s):
            switch name {
            case "strip": return make { a, _ in .string(strip(s, a.first, left: true, right: true)) }
            case "lstrip": return make { a, _ in .string(strip(s, a.first, left: true, right: false)) }
            case "rstrip": return make { a, _ in .string(strip(s, a.first, left: false, right: true)) }
            case "upper": return make { _, _ in .string(s.uppercased()) }
            case "lower": return make { _, _ in .string(s.lowercased()) }
            case "title": return make { _, _ in .string(s.capitalized) }
            case "capitalize": return make { _, _ in .string(s.prefix(1).uppercased() + s.dropFirst().lowercased()) }
            case "startswith", "endswith":
                return make { a, _ in
                    let prefixes: [JinjaValue]
                    if case .array(let list)? = a.first { prefixes = list } else { prefixes = Array(a.prefix(1)) }
                    return .bool(prefixes.contains { p in
                        guard case .string(let p) = p else { return false }
                        return name == "startswith" ? s.hasPrefix(p) : s.hasSuffix(p)
                    })
                }
            case "replace":
                return make { a, _ in
                    guard a.count >= 2, case .string(let old) = a[0], case .string(let new) = a[1] else {
                        throw ChatTemplateError("replace needs two strings")
                    }
                    return .string(s.replacingOccurrences(of: old, with: new))
                }
            case "split":
                return make { a, _ in
                    if case .string(let separator)? = a.first {
                        return .array(s.components(separatedBy: separator).map(JinjaValue.string))
                    }
                    return .array(s.split(whereSeparator: { $0.isWhitespace }).map { .string(String($0)) })
                }
            default: return nil
            }
        case .object(let o):
            switch name {
            case "items": return make { _, _ in .array(o.keys.map { .array([.string($0), o.values[$0]!]) }) }
            case "keys": return make { _, _ in .array(o.keys.map(JinjaValue.string)) }
            case "values": return make { _, _ in .array(o.keys.map { o.values[$0]! }) }
            case "get":
                return make { a, _ in
                    guard case .string(let key)? = a.first else { return .none }
                    return o[key] ?? (a.count > 1 ? a[1] : .none)
                }
            default: return nil
            }
        default:
            return nil
        }
    }
}
