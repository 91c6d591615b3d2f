import Foundation

/// A chat template that cannot be read or run: one line naming what was wrong and where.
public struct ChatTemplateError: Error, CustomStringConvertible, Equatable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// The template's text cut into literal text, `{{ … }}` outputs and `{% … %}` statements, with the whitespace rules
/// transformers renders chat templates with: `trim_blocks` (the newline right after a statement or comment is
/// dropped), `lstrip_blocks` (spaces and tabs before a statement or comment on its own line are dropped), and
/// `-` on a tag's side dropping all whitespace on that side.
enum TemplatePiece: Equatable {
    case text(String)
    case output(String, line: Int)
    case statement(String, line: Int)
}

enum TemplateSplitter {
    static func split(_ source: String) throws -> [TemplatePiece] {
        enum Kind { case text, output, statement, comment }
        struct Raw { var kind: Kind; var body: String; var line: Int; var trimLeft = false, trimRight = false, plus = false }
        var raws: [Raw] = []
        let chars = Array(source.unicodeScalars)
        var i = 0, line = 1, text = String.UnicodeScalarView()
        func flushText() { raws.append(Raw(kind: .text, body: String(text), line: line)); text = .init() }
        while i < chars.count {
            if chars[i] == "{", i + 1 < chars.count, "{%#".unicodeScalars.contains(chars[i + 1]) {
                let open = chars[i + 1]
                let close: Unicode.Scalar = open == "{" ? "}" : open
                let kind: Kind = open == "{" ? .output : open == "%" ? .statement : .comment
                flushText()
                let startLine = line
                var j = i + 2
                var raw = Raw(kind: kind, body: "", line: startLine)
                if j < chars.count, chars[j] == "-" { raw.trimLeft = true; j += 1 } else if j < chars.count, chars[j] == "+" { raw.plus = true; j += 1 }
                var body = String.UnicodeScalarView()
                var closed = false
                var quote: Unicode.Scalar? = nil
                while j < chars.count {
                    let c = chars[j]
                    if kind != .comment {
                        if let q = quote {
                            if c == "\\" , j + 1 < chars.count { body.append(c); body.append(chars[j + 1]); j += 2; continue }
                            if c == q { quote = nil }
                        } else if c == "'" || c == "\"" {
                            quote = c
                        }
                    }
                    if quote == nil, c == close, j + 1 < chars.count, chars[j + 1] == "}" {
                        if let last = body.last, last == "-" { raw.trimRight = true; body.removeLast() }
                        else if let last = body.last, last == "+" { body.removeLast() }
                        closed = true
                        j += 2
                        break
                    }
                    if c == "\n" { line += 1 }
                    body.append(c)
                    j += 1
                }
                guard closed else {
                    throw ChatTemplateError("line \(startLine): a tag opened with {\(Character(open)) is never closed")
                }
                raw.body = String(body)
                raws.append(raw)
                i = j
                continue
            }
            if chars[i] == "\n" { line += 1 }
            text.append(chars[i])
            i += 1
        }
        flushText()

        // Whitespace control on the text beside each tag, decided on the text as written: how many scalars go from
        // each text's start (the tag before it) and from its end (the tag after it).
        for k in raws.indices where raws[k].kind == .text {
            let scalars = Array(raws[k].body.unicodeScalars)
            var drop = (front: 0, back: 0)
            if k > 0 {
                let tag = raws[k - 1]
                if tag.trimRight {
                    drop.front = scalars.prefix { CharacterSet.whitespacesAndNewlines.contains($0) }.count
                } else if tag.kind == .statement || tag.kind == .comment {
                    if scalars.starts(with: ["\r", "\n"]) { drop.front = 2 } else if scalars.first == "\n" { drop.front = 1 }
                }
            }
            if k + 1 < raws.count {
                let tag = raws[k + 1]
                if tag.trimLeft {
                    drop.back = scalars.reversed().prefix { CharacterSet.whitespacesAndNewlines.contains($0) }.count
                } else if (tag.kind == .statement || tag.kind == .comment) && !tag.plus {
                    // Only spaces and tabs between a line's start (or the template's) and the tag: they go.
                    let run = scalars.reversed().prefix { $0 == " " || $0 == "\t" }.count
                    let atLineStart = run == scalars.count ? k == 0 : scalars[scalars.count - run - 1] == "\n"
                    if atLineStart { drop.back = run }
                }
            }
            let kept = drop.front + drop.back >= scalars.count ? [] : Array(scalars[drop.front..<(scalars.count - drop.back)])
            raws[k].body = String(String.UnicodeScalarView(kept))
        }
        return raws.compactMap { raw in
            switch raw.kind {
            case .text: return raw.body.isEmpty ? nil : .text(raw.body)
            case .output: return .output(raw.body, line: raw.line)
            case .statement: return .statement(raw.body, line: raw.line)
            case .comment: return nil
            }
        }
    }
}

/// Tokens of the expression language.
enum JinjaToken: Equatable {
    case name(String)
    case string(String)
    case int(Int)
    case double(Double)
    case op(String)
    case end
}

enum JinjaLexer {
    static let operators = ["//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<", ">", "(", ")", "[", "]",
                            "{", "}", ".", ",", ":", "|", "="]

    static func tokens(_ source: String, line: Int) throws -> [JinjaToken] {
        let s = Array(source.unicodeScalars)
        var i = 0
        var out: [JinjaToken] = []
        func fail(_ what: String) -> ChatTemplateError { ChatTemplateError("line \(line): \(what) in \"\(source.trimmingCharacters(in: .whitespacesAndNewlines))\"") }
        while i < s.count {
            let c = s[i]
            if CharacterSet.whitespacesAndNewlines.contains(c) { i += 1; continue }
            if CharacterSet.letters.contains(c) || c == "_" {
                var name = String.UnicodeScalarView()
                while i < s.count, CharacterSet.alphanumerics.contains(s[i]) || s[i] == "_" { name.append(s[i]); i += 1 }
                out.append(.name(String(name)))
                continue
            }
            if CharacterSet.decimalDigits.contains(c) {
                var digits = String.UnicodeScalarView()
                var isFloat = false
                while i < s.count, CharacterSet.decimalDigits.contains(s[i]) || s[i] == "_" || (s[i] == "." && !isFloat && i + 1 < s.count && CharacterSet.decimalDigits.contains(s[i + 1])) {
                    if s[i] == "." { isFloat = true }
                    if s[i] != "_" { digits.append(s[i]) }
                    i += 1
                }
                let text = String(digits)
                if isFloat { out.append(.double(Double(text)!)) } else {
                    guard let v = Int(text) else { throw fail("the number \(text) is too large") }
                    out.append(.int(v))
                }
                continue
            }
            if c == "'" || c == "\"" {
                var value = String.UnicodeScalarView()
                i += 1
                var closed = false
                while i < s.count {
                    let d = s[i]
                    if d == c { closed = true; i += 1; break }
                    if d == "\\", i + 1 < s.count {
                        let e = s[i + 1]
                        i += 2
                        switch e {
                        case "n": value.append("\n")
                        case "t": value.append("\t")
                        case "r": value.append("\r")
                        case "\\": value.append("\\")
                        case "'": value.append("'")
                        case "\"": value.append("\"")
                        case "0": value.append("\0")
                        case "u", "x":
                            let count = e == "u" ? 4 : 2
                            guard i + count <= s.count, let code = UInt32(String(String.UnicodeScalarView(s[i..<(i + count)])), radix: 16),
                                  let scalar = Unicode.Scalar(code) else { throw fail("a bad \\\(e) escape") }
                            value.append(scalar)
                            i += count
                        default:
                            value.append("\\")
                            value.append(e)
                        }
                        continue
                    }
                    value.append(d)
                    i += 1
                }
                guard closed else { throw fail("a string is never closed") }
                out.append(.string(String(value)))
                continue
            }
            if let op = operators.first(where: { op in
                let o = Array(op.unicodeScalars)
                return i + o.count <= s.count && Array(s[i..<(i + o.count)]) == o
            }) {
                out.append(.op(op))
                i += op.unicodeScalars.count
                continue
            }
            throw fail("unexpected character '\(Character(c))'")
        }
        out.append(.end)
        return out
    }
}
