import Foundation

indirect enum JinjaExpression {
    case literal(JinjaValue)
    case name(String)
    case list([JinjaExpression])
    case dictionary([(JinjaExpression, JinjaExpression)])
    case attribute(JinjaExpression, String)
    case index(JinjaExpression, JinjaExpression)
    case slice(JinjaExpression, JinjaExpression?, JinjaExpression?, JinjaExpression?)
    case call(JinjaExpression, [JinjaExpression], [(String, JinjaExpression)])
    case filter(JinjaExpression, String, [JinjaExpression], [(String, JinjaExpression)])
    case test(JinjaExpression, String, [JinjaExpression], negated: Bool)
    case unary(String, JinjaExpression)
    case binary(String, JinjaExpression, JinjaExpression)
    case conditional(then: JinjaExpression, condition: JinjaExpression, otherwise: JinjaExpression?)
}

indirect enum JinjaNode {
    case text(String)
    case output(JinjaExpression)
    case conditional([(JinjaExpression, [JinjaNode])], otherwise: [JinjaNode])
    case loop(targets: [String], over: JinjaExpression, filter: JinjaExpression?, body: [JinjaNode], otherwise: [JinjaNode])
    /// `{% set name = … %}` or `{% set namespace.attribute = … %}`.
    case assign(name: String, attribute: String?, JinjaExpression)
    case breakLoop, continueLoop
}

/// Reads a template into nodes. Everything the published chat templates use is here; anything else (macros,
/// includes, block assignments, unknown filters or tests) is refused by name before anything renders.
struct JinjaParser {
    static let filters: Set<String> = ["trim", "length", "count", "upper", "lower", "capitalize", "title", "tojson", "string",
                                       "list", "first", "last", "join", "default", "d", "items", "selectattr", "rejectattr",
                                       "map", "replace", "int", "float", "abs", "reverse", "safe", "unique", "sort", "indent",
                                       "wordcount", "round", "dictsort", "batch", "sum", "min", "max"]
    static let tests: Set<String> = ["defined", "undefined", "none", "string", "number", "integer", "float", "mapping",
                                     "iterable", "sequence", "boolean", "true", "false", "equalto", "eq", "==", "ne", "!=",
                                     "lt", "<", "gt", ">", "le", "<=", "ge", ">=", "in", "odd", "even", "divisibleby",
                                     "lower", "upper", "callable", "sameas"]

    /// How deep expressions and blocks may nest (published templates nest a handful deep); deeper is refused
    /// rather than run the parser out of stack.
    static let maximumDepth = 64

    private var tokens: [JinjaToken] = []
    private var position = 0
    private var depth = 0
    private var line = 0
    private var source = ""

    static func parse(_ template: String) throws -> [JinjaNode] {
        let pieces = try TemplateSplitter.split(template)
        var index = 0
        var blockDepth = 0
        let nodes = try parseBlock(pieces, &index, until: [], depth: &blockDepth)
        if index < pieces.count, case .statement(let s, let line) = pieces[index] {
            throw ChatTemplateError("line \(line): {% \(s.trimmingCharacters(in: .whitespacesAndNewlines)) %} has no block to end")
        }
        return nodes
    }

    /// Nodes until a statement whose first word is in `until` (left at `index`), or the end.
    private static func parseBlock(_ pieces: [TemplatePiece], _ index: inout Int, until: Set<String>,
                                   depth: inout Int) throws -> [JinjaNode] {
        depth += 1
        defer { depth -= 1 }
        if depth > maximumDepth {
            throw ChatTemplateError("blocks nest more than \(maximumDepth) deep")
        }
        var nodes: [JinjaNode] = []
        while index < pieces.count {
            switch pieces[index] {
            case .text(let t):
                nodes.append(.text(t))
                index += 1
            case .output(let source, let line):
                var p = try JinjaParser(source, line: line)
                nodes.append(.output(try p.expressionToEnd()))
                index += 1
            case .statement(let source, let line):
                var p = try JinjaParser(source, line: line)
                guard case .name(let keyword) = p.peek else { throw p.error("a statement must start with a keyword") }
                if until.contains(keyword) { return nodes }
                p.position += 1
                index += 1
                switch keyword {
                case "if":
                    var branches = [(try p.expressionToEnd(), [JinjaNode]())]
                    var otherwise: [JinjaNode] = []
                    while true {
                        branches[branches.count - 1].1 = try parseBlock(pieces, &index, until: ["elif", "else", "endif"], depth: &depth)
                        var end = try statementParser(pieces, index, closing: "if", line: line)
                        index += 1
                        guard case .name(let word) = end.peek else { break }
                        end.position += 1
                        if word == "elif" { branches.append((try end.expressionToEnd(), [])); continue }
                        if word == "else" {
                            try end.expectEnd()
                            otherwise = try parseBlock(pieces, &index, until: ["endif"], depth: &depth)
                            _ = try statementParser(pieces, index, closing: "if", line: line)
                            index += 1
                        } else {
                            try end.expectEnd()
                        }
                        break
                    }
                    nodes.append(.conditional(branches, otherwise: otherwise))
                case "for":
                    var targets = [try p.name()]
                    while p.accept(.op(",")) { targets.append(try p.name()) }
                    guard p.acceptName("in") else { throw p.error("expected 'in' after the loop variable") }
                    let over = try p.conditionalFree()
                    let filter = p.acceptName("if") ? try p.expression() : nil
                    if p.acceptName("recursive") { throw p.error("recursive loops are not implemented") }
                    try p.expectEnd()
                    let body = try parseBlock(pieces, &index, until: ["else", "endfor"], depth: &depth)
                    var end = try statementParser(pieces, index, closing: "for", line: line)
                    index += 1
                    var otherwise: [JinjaNode] = []
                    if end.acceptName("else") {
                        try end.expectEnd()
                        otherwise = try parseBlock(pieces, &index, until: ["endfor"], depth: &depth)
                        _ = try statementParser(pieces, index, closing: "for", line: line)
                        index += 1
                    }
                    nodes.append(.loop(targets: targets, over: over, filter: filter, body: body, otherwise: otherwise))
                case "set":
                    let name = try p.name()
                    var attribute: String?
                    if p.accept(.op(".")) { attribute = try p.name() }
                    guard p.accept(.op("=")) else {
                        throw p.error("a block {% set %} … {% endset %} is not implemented by Finch's template subset")
                    }
                    nodes.append(.assign(name: name, attribute: attribute, try p.expressionToEnd()))
                case "break":
                    try p.expectEnd()
                    nodes.append(.breakLoop)
                case "continue":
                    try p.expectEnd()
                    nodes.append(.continueLoop)
                case "generation":
                    // transformers' marker for the assistant's tokens: rendered as its body.
                    try p.expectEnd()
                    nodes.append(contentsOf: try parseBlock(pieces, &index, until: ["endgeneration"], depth: &depth))
                    _ = try statementParser(pieces, index, closing: "generation", line: line)
                    index += 1
                case _ where keyword.hasPrefix("end") || keyword == "elif" || keyword == "else":
                    throw ChatTemplateError("line \(line): {% \(keyword) %} has no block to end")
                default:
                    throw ChatTemplateError("line \(line): {% \(keyword) %} is not implemented by Finch's template subset (it implements if, for, set, break, continue, generation)")
                }
            }
        }
        return nodes
    }

    /// The parser of the statement at `index`, which must be `{% endNAME %}` or an `elif`/`else` of it.
    private static func statementParser(_ pieces: [TemplatePiece], _ index: Int, closing name: String, line: Int) throws -> JinjaParser {
        guard index < pieces.count, case .statement(let source, let at) = pieces[index] else {
            throw ChatTemplateError("line \(line): {% \(name) %} is never closed with {% end\(name) %}")
        }
        var p = try JinjaParser(source, line: at)
        if p.acceptName("end" + name) { try p.expectEnd(); p.position = p.tokens.count - 1; return p }
        return p
    }

    init(_ source: String, line: Int) throws {
        self.source = source.trimmingCharacters(in: .whitespacesAndNewlines)
        self.line = line
        tokens = try JinjaLexer.tokens(source, line: line)
    }

    var peek: JinjaToken { tokens[position] }

    func error(_ what: String) -> ChatTemplateError { ChatTemplateError("line \(line): \(what) in \"\(source)\"") }

    mutating func accept(_ token: JinjaToken) -> Bool {
        if peek == token { position += 1; return true }
        return false
    }

    mutating func acceptName(_ word: String) -> Bool { accept(.name(word)) }

    mutating func expect(_ token: JinjaToken, _ what: String) throws {
        guard accept(token) else { throw error("expected \(what)") }
    }

    mutating func name() throws -> String {
        guard case .name(let n) = peek else { throw error("expected a name") }
        position += 1
        return n
    }

    mutating func expectEnd() throws {
        guard peek == .end else { throw error("unexpected text after the statement") }
    }

    mutating func expressionToEnd() throws -> JinjaExpression {
        let e = try expression()
        try expectEnd()
        return e
    }

    mutating func expression() throws -> JinjaExpression {
        depth += 1
        defer { depth -= 1 }
        guard depth <= Self.maximumDepth else { throw error("expressions nest more than \(Self.maximumDepth) deep") }
        let value = try or()
        guard acceptName("if") else { return value }
        let condition = try or()
        let otherwise = acceptName("else") ? try expression() : nil
        return .conditional(then: value, condition: condition, otherwise: otherwise)
    }

    /// An expression without a trailing `if` (a loop's iterable, which may be followed by its filter).
    mutating func conditionalFree() throws -> JinjaExpression { try or() }

    mutating func or() throws -> JinjaExpression {
        var left = try and()
        while acceptName("or") { left = .binary("or", left, try and()) }
        return left
    }

    mutating func and() throws -> JinjaExpression {
        var left = try not()
        while acceptName("and") { left = .binary("and", left, try not()) }
        return left
    }

    mutating func not() throws -> JinjaExpression {
        if acceptName("not") {
            depth += 1
            defer { depth -= 1 }
            guard depth <= Self.maximumDepth else { throw error("expressions nest more than \(Self.maximumDepth) deep") }
            return .unary("not", try not())
        }
        return try compare()
    }

    mutating func compare() throws -> JinjaExpression {
        var left = try sum()
        while true {
            if case .op(let op) = peek, ["==", "!=", "<", ">", "<=", ">="].contains(op) {
                position += 1
                left = .binary(op, left, try sum())
            } else if acceptName("in") {
                left = .binary("in", left, try sum())
            } else if peek == .name("not"), tokens[position + 1] == .name("in") {
                position += 2
                left = .unary("not", .binary("in", left, try sum()))
            } else {
                return left
            }
        }
    }

    mutating func sum() throws -> JinjaExpression {
        var left = try concatenation()
        while case .op(let op) = peek, op == "+" || op == "-" {
            position += 1
            left = .binary(op, left, try concatenation())
        }
        return left
    }

    mutating func concatenation() throws -> JinjaExpression {
        var left = try product()
        while accept(.op("~")) { left = .binary("~", left, try product()) }
        return left
    }

    mutating func product() throws -> JinjaExpression {
        var left = try power()
        while case .op(let op) = peek, ["*", "/", "//", "%"].contains(op) {
            position += 1
            left = .binary(op, left, try power())
        }
        return left
    }

    mutating func power() throws -> JinjaExpression {
        var left = try unary()
        while accept(.op("**")) { left = .binary("**", left, try unary()) }
        return left
    }

    mutating func unary() throws -> JinjaExpression {
        if peek == .op("-") || peek == .op("+") {
            depth += 1
            defer { depth -= 1 }
            guard depth <= Self.maximumDepth else { throw error("expressions nest more than \(Self.maximumDepth) deep") }
            let op = accept(.op("-")) ? "-" : { position += 1; return "+" }()
            return .unary(op, try unary())
        }
        return try filtered(try postfix(try primary()))
    }

    mutating func primary() throws -> JinjaExpression {
        let token = peek
        position += 1
        switch token {
        case .string(var s):
            while case .string(let more) = peek { s += more; position += 1 }  // adjacent literals join
            return .literal(.string(s))
        case .int(let i): return .literal(.int(i))
        case .double(let d): return .literal(.double(d))
        case .name(let n):
            switch n {
            case "true", "True": return .literal(.bool(true))
            case "false", "False": return .literal(.bool(false))
            case "none", "None": return .literal(.none)
            default: return .name(n)
            }
        case .op("("):
            let e = try expression()
            if accept(.op(",")) {  // a tuple, held as a list
                var items = [e]
                while peek != .op(")") { items.append(try expression()); if !accept(.op(",")) { break } }
                try expect(.op(")"), "')'")
                return .list(items)
            }
            try expect(.op(")"), "')'")
            return e
        case .op("["):
            var items: [JinjaExpression] = []
            while peek != .op("]") {
                items.append(try expression())
                if !accept(.op(",")) { break }
            }
            try expect(.op("]"), "']'")
            return .list(items)
        case .op("{"):
            var pairs: [(JinjaExpression, JinjaExpression)] = []
            while peek != .op("}") {
                let key = try expression()
                try expect(.op(":"), "':' in a dictionary")
                pairs.append((key, try expression()))
                if !accept(.op(",")) { break }
            }
            try expect(.op("}"), "'}'")
            return .dictionary(pairs)
        default:
            throw error("unexpected \(Self.describe(token))")
        }
    }

    static func describe(_ token: JinjaToken) -> String {
        switch token {
        case .name(let n): return "'\(n)'"
        case .string(let s): return "the string \(JinjaValue.string(s).pythonReprOfString())"
        case .int(let i): return "\(i)"
        case .double(let d): return "\(d)"
        case .op(let o): return "'\(o)'"
        case .end: return "end of the tag"
        }
    }

    mutating func postfix(_ base: JinjaExpression) throws -> JinjaExpression {
        var e = base
        while true {
            if accept(.op(".")) {
                e = .attribute(e, try name())
            } else if accept(.op("[")) {
                var parts: [JinjaExpression?] = [nil]
                var isSlice = false
                while peek != .op("]") {
                    if accept(.op(":")) { isSlice = true; parts.append(nil); continue }
                    parts[parts.count - 1] = try expression()
                }
                try expect(.op("]"), "']'")
                if isSlice {
                    guard parts.count <= 3 else { throw error("a slice has at most three parts") }
                    while parts.count < 3 { parts.append(nil) }
                    e = .slice(e, parts[0], parts[1], parts[2])
                } else {
                    guard let index = parts[0] else { throw error("an empty subscript") }
                    e = .index(e, index)
                }
            } else if peek == .op("(") {
                let (args, kwargs) = try arguments()
                e = .call(e, args, kwargs)
            } else {
                return e
            }
        }
    }

    mutating func arguments() throws -> ([JinjaExpression], [(String, JinjaExpression)]) {
        try expect(.op("("), "'('")
        var args: [JinjaExpression] = [], kwargs: [(String, JinjaExpression)] = []
        while peek != .op(")") {
            if case .name(let n) = peek, tokens[position + 1] == .op("=") {
                position += 2
                kwargs.append((n, try expression()))
            } else {
                args.append(try expression())
            }
            if !accept(.op(",")) { break }
        }
        try expect(.op(")"), "')'")
        return (args, kwargs)
    }

    mutating func filtered(_ base: JinjaExpression) throws -> JinjaExpression {
        var e = base
        while true {
            if accept(.op("|")) {
                let name = try self.name()
                guard Self.filters.contains(name) else {
                    throw error("the filter '\(name)' is not implemented by Finch's template subset")
                }
                var args: [JinjaExpression] = [], kwargs: [(String, JinjaExpression)] = []
                if peek == .op("(") { (args, kwargs) = try arguments() }
                e = .filter(e, name, args, kwargs)
            } else if acceptName("is") {
                let negated = acceptName("not")
                var name: String
                switch peek {
                case .name(let n): name = n; position += 1
                case .op(let o) where ["==", "!=", "<", ">", "<=", ">="].contains(o): name = o; position += 1
                case .name("none"): name = "none"; position += 1
                default: throw error("expected a test name after 'is'")
                }
                if name == "None" { name = "none" }
                guard Self.tests.contains(name) else {
                    throw error("the test '\(name)' is not implemented by Finch's template subset")
                }
                var args: [JinjaExpression] = []
                if peek == .op("(") {
                    args = try arguments().0
                } else if case .name(let n) = peek, !["and", "or", "else", "if", "not", "in", "is"].contains(n) {
                    args = [try primary()]
                } else if case .string = peek {
                    args = [try primary()]
                } else if case .int = peek {
                    args = [try primary()]
                }
                e = .test(e, name, args, negated: negated)
            } else {
                return e
            }
        }
    }
}
