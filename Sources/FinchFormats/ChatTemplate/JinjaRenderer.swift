import Foundation

/// Runs parsed template nodes with Jinja's rules: a loop's body has its own scope (a `set` inside does not
/// reach outside, which is what `namespace()` is for), missing keys and names are undefined (printing as
/// nothing, false in a test), and operators follow Python.
struct JinjaRenderer {
    private var scopes: [[String: JinjaValue]]
    private var output = ""

    enum Jump: Error { case breakLoop, continueLoop }

    /// The most text (in UTF-8 bytes) a template may write, and the most loop turns it may take: far beyond any
    /// conversation, short of exhausting memory or time.
    static let maximumOutput = 8 << 20
    static let maximumIterations = 1 << 20
    private var iterations = 0

    init(globals: [String: JinjaValue]) { scopes = [globals] }

    static func render(_ nodes: [JinjaNode], globals: [String: JinjaValue]) throws -> String {
        var renderer = JinjaRenderer(globals: globals)
        do {
            try renderer.run(nodes)
        } catch is Jump {
            throw ChatTemplateError("{% break %} or {% continue %} outside a loop")
        }
        return renderer.output
    }

    func lookup(_ name: String) -> JinjaValue {
        for scope in scopes.reversed() { if let v = scope[name] { return v } }
        return .undefined
    }

    mutating func run(_ nodes: [JinjaNode]) throws {
        for node in nodes {
            switch node {
            case .text(let t): output += t
            case .output(let e): output += try evaluate(e).printed()
            case .conditional(let branches, let otherwise):
                var done = false
                for (condition, body) in branches where try evaluate(condition).isTrue {
                    try run(body)
                    done = true
                    break
                }
                if !done { try run(otherwise) }
            case let .loop(targets, over, filter, body, otherwise):
                try loop(targets: targets, over: over, filter: filter, body: body, otherwise: otherwise)
            case let .assign(name, attribute, e):
                let value = try evaluate(e)
                if let attribute {
                    guard case .namespace(let ns) = lookup(name) else {
                        throw ChatTemplateError("cannot set '\(name).\(attribute)': '\(name)' is not a namespace()")
                    }
                    ns.attributes[attribute] = value
                } else {
                    scopes[scopes.count - 1][name] = value
                }
            case .breakLoop: throw Jump.breakLoop
            case .continueLoop: throw Jump.continueLoop
            }
            guard output.utf8.count <= Self.maximumOutput else {
                throw ChatTemplateError("the template writes more than \(Self.maximumOutput) bytes")
            }
        }
    }

    mutating func loop(targets: [String], over: JinjaExpression, filter: JinjaExpression?, body: [JinjaNode],
                       otherwise: [JinjaNode]) throws {
        var items = try Self.iterate(try evaluate(over))
        if let filter {
            items = try items.filter { item in
                scopes.append(try bind(targets, item))
                defer { scopes.removeLast() }
                return try evaluate(filter).isTrue
            }
        }
        if items.isEmpty { try run(otherwise); return }
        for (i, item) in items.enumerated() {
            iterations += 1
            guard iterations <= Self.maximumIterations else {
                throw ChatTemplateError("the template's loops run more than \(Self.maximumIterations) times")
            }
            var scope = try bind(targets, item)
            let n = items.count
            scope["loop"] = .object(JinjaObject(
                keys: ["index", "index0", "revindex", "revindex0", "first", "last", "length", "previtem", "nextitem"],
                values: ["index": .int(i + 1), "index0": .int(i), "revindex": .int(n - i), "revindex0": .int(n - i - 1),
                         "first": .bool(i == 0), "last": .bool(i == n - 1), "length": .int(n),
                         "previtem": i > 0 ? items[i - 1] : .undefined, "nextitem": i < n - 1 ? items[i + 1] : .undefined]))
            scopes.append(scope)
            defer { scopes.removeLast() }
            do {
                try run(body)
            } catch Jump.breakLoop {
                break
            } catch Jump.continueLoop {
                continue
            }
        }
    }

    func bind(_ targets: [String], _ item: JinjaValue) throws -> [String: JinjaValue] {
        if targets.count == 1 { return [targets[0]: item] }
        let parts = try Self.iterate(item)
        guard parts.count == targets.count else {
            throw ChatTemplateError("cannot unpack \(parts.count) values into \(targets.joined(separator: ", "))")
        }
        return Dictionary(uniqueKeysWithValues: zip(targets, parts))
    }

    /// What a `for` walks: a list's items, a mapping's keys, a string's characters.
    static func iterate(_ value: JinjaValue) throws -> [JinjaValue] {
        switch value {
        case .array(let a): return a
        case .object(let o): return o.keys.map(JinjaValue.string)
        case .string(let s): return s.map { .string(String($0)) }
        case .undefined: return []
        default: throw ChatTemplateError("a \(value.typeName) cannot be iterated")
        }
    }

    // MARK: - Expressions

    mutating func evaluate(_ e: JinjaExpression) throws -> JinjaValue {
        switch e {
        case .literal(let v): return v
        case .name(let n): return lookup(n)
        case .list(let items): return .array(try items.map { try evaluate($0) })
        case .dictionary(let pairs):
            var object = JinjaObject()
            for (k, v) in pairs {
                guard case .string(let key) = try evaluate(k) else { throw ChatTemplateError("dictionary keys must be strings") }
                object.set(key, try evaluate(v))
            }
            return .object(object)
        case .attribute(let base, let name):
            return try Self.member(try evaluate(base), name)
        case .index(let base, let index):
            return try Self.item(try evaluate(base), try evaluate(index))
        case let .slice(base, start, stop, step):
            return try Self.slice(try evaluate(base), try start.map { try evaluate($0) }, try stop.map { try evaluate($0) },
                                  try step.map { try evaluate($0) })
        case let .call(function, args, kwargs):
            let f = try evaluate(function)
            guard case .function(let callable) = f else {
                throw ChatTemplateError("\(Self.describe(function)) is \(f == .undefined ? "undefined" : "a \(f.typeName)"), not a function")
            }
            return try callable.call(try args.map { try evaluate($0) },
                                     Dictionary(try kwargs.map { ($0.0, try evaluate($0.1)) }, uniquingKeysWith: { a, _ in a }))
        case let .filter(base, name, args, kwargs):
            return try JinjaBuiltins.filter(name, try evaluate(base), try args.map { try evaluate($0) },
                                            Dictionary(try kwargs.map { ($0.0, try evaluate($0.1)) }, uniquingKeysWith: { a, _ in a }))
        case let .test(base, name, args, negated):
            let result = try JinjaBuiltins.test(name, try evaluate(base), try args.map { try evaluate($0) })
            return .bool(result != negated)
        case let .unary(op, operand):
            let v = try evaluate(operand)
            switch op {
            case "not": return .bool(!v.isTrue)
            case "-":
                switch v {
                case .int(let i): return .int(0 &- i)
                case .double(let d): return .double(-d)
                default: throw ChatTemplateError("cannot negate a \(v.typeName)")
                }
            default: return v
            }
        case let .binary(op, l, r):
            if op == "and" { let a = try evaluate(l); return a.isTrue ? try evaluate(r) : a }
            if op == "or" { let a = try evaluate(l); return a.isTrue ? a : try evaluate(r) }
            return try JinjaBuiltins.binary(op, try evaluate(l), try evaluate(r))
        case let .conditional(then, condition, otherwise):
            if try evaluate(condition).isTrue { return try evaluate(then) }
            return try otherwise.map { try evaluate($0) } ?? .undefined
        }
    }

    static func describe(_ e: JinjaExpression) -> String {
        switch e {
        case .name(let n): return "'\(n)'"
        case .attribute(let b, let n): return "\(describe(b).dropLast()).\(n)'"
        default: return "the expression"
        }
    }

    /// `value.name`: a mapping's key, a namespace's attribute, or a method of a string, list or mapping.
    static func member(_ value: JinjaValue, _ name: String) throws -> JinjaValue {
        switch value {
        case .object(let o):
            if let v = o[name] { return v }
            return JinjaBuiltins.method(value, name) ?? .undefined
        case .namespace(let ns): return ns.attributes[name] ?? .undefined
        case .undefined: throw ChatTemplateError("cannot read '\(name)' of an undefined value")
        case .none: throw ChatTemplateError("cannot read '\(name)' of none")
        default: return JinjaBuiltins.method(value, name) ?? .undefined
        }
    }

    static func item(_ value: JinjaValue, _ index: JinjaValue) throws -> JinjaValue {
        switch (value, index) {
        case let (.object(o), .string(k)): return o[k] ?? JinjaBuiltins.method(value, k) ?? .undefined
        case let (.namespace(ns), .string(k)): return ns.attributes[k] ?? .undefined
        case let (.array(a), .int(i)):
            let j = i < 0 ? a.count + i : i
            return a.indices.contains(j) ? a[j] : .undefined
        case let (.string(s), .int(i)):
            let chars = Array(s)
            let j = i < 0 ? chars.count + i : i
            return chars.indices.contains(j) ? .string(String(chars[j])) : .undefined
        case (.undefined, _): throw ChatTemplateError("cannot index an undefined value")
        case (.none, _): throw ChatTemplateError("cannot index none")
        default:
            if case .string(let k) = index { return try member(value, k) }
            throw ChatTemplateError("cannot index a \(value.typeName) with a \(index.typeName)")
        }
    }

    /// Python's slicing, on lists and strings.
    static func slice(_ value: JinjaValue, _ start: JinjaValue?, _ stop: JinjaValue?, _ step: JinjaValue?) throws -> JinjaValue {
        func integer(_ v: JinjaValue?) throws -> Int? {
            switch v {
            case nil, .some(.none): return nil
            case .some(.int(let i)): return i
            default: throw ChatTemplateError("slice bounds must be integers")
            }
        }
        let stride = try integer(step) ?? 1
        guard stride != 0 else { throw ChatTemplateError("a slice step cannot be zero") }
        func indices(_ count: Int) throws -> [Int] {
            func clamp(_ i: Int?, _ fallback: Int) -> Int {
                guard let i else { return fallback }
                let j = i < 0 ? i + count : i
                return stride > 0 ? min(max(j, 0), count) : min(max(j, -1), count - 1)
            }
            let lo = clamp(try integer(start), stride > 0 ? 0 : count - 1)
            let hi = clamp(try integer(stop), stride > 0 ? count : -1)
            return Array(Swift.stride(from: lo, to: hi, by: stride))
        }
        switch value {
        case .array(let a): return .array(try indices(a.count).map { a[$0] })
        case .string(let s):
            let chars = Array(s)
            return .string(String(try indices(chars.count).map { chars[$0] }))
        default: throw ChatTemplateError("a \(value.typeName) cannot be sliced")
        }
    }
}
