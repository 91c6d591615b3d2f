import Foundation

/// The `normalizer` section of tokenizer.json: text rewrites before splitting.
indirect enum Normalizer {
    case sequence([Normalizer])
    case prepend(String)
    case replace(pattern: TextPattern, content: String)
    case nfc, nfd, nfkc, nfkd
    case lowercase
    case strip(left: Bool, right: Bool)

    init(_ json: JSONValue, file: String) throws {
        guard let type = json["type"]?.string else { throw FormatError(file: file, "normalizer without a \"type\"") }
        switch type {
        case "Sequence":
            guard let list = json["normalizers"]?.array else { throw FormatError(file: file, "Sequence normalizer without \"normalizers\"") }
            self = .sequence(try list.map { try Normalizer($0, file: file) })
        case "Prepend":
            guard let p = json["prepend"]?.string else { throw FormatError(file: file, "Prepend normalizer without \"prepend\"") }
            self = .prepend(p)
        case "Replace":
            self = .replace(pattern: try TextPattern(json["pattern"], file: file, owner: "Replace normalizer"),
                            content: json["content"]?.string ?? "")
        case "NFC": self = .nfc
        case "NFD": self = .nfd
        case "NFKC": self = .nfkc
        case "NFKD": self = .nfkd
        case "Lowercase": self = .lowercase
        case "Strip":
            self = .strip(left: json["strip_left"]?.bool ?? true, right: json["strip_right"]?.bool ?? true)
        default:
            throw FormatError(file: file, "normalizer \"\(type)\" is not supported (Finch implements Sequence, Prepend, Replace, NFC, NFD, NFKC, NFKD, Lowercase, Strip)")
        }
    }

    func apply(_ text: String) -> String {
        switch self {
        case .sequence(let list): return list.reduce(text) { $1.apply($0) }
        case .prepend(let p): return text.isEmpty ? text : p + text
        case let .replace(pattern, content): return pattern.replaceAll(in: text, with: content)
        case .nfc: return text.precomposedStringWithCanonicalMapping
        case .nfd: return text.decomposedStringWithCanonicalMapping
        case .nfkc: return text.precomposedStringWithCompatibilityMapping
        case .nfkd: return text.decomposedStringWithCompatibilityMapping
        case .lowercase: return text.lowercased()
        case let .strip(left, right):
            var s = Substring(text)
            if left { s = s.drop(while: { $0.isWhitespace }) }
            if right { while let last = s.last, last.isWhitespace { s = s.dropLast() } }
            return String(s)
        }
    }
}

/// A `pattern` field: `{"String": "..."}` matches literally, `{"Regex": "..."}` as a regular expression.
struct TextPattern {
    let regex: NSRegularExpression

    init(_ json: JSONValue?, file: String, owner: String) throws {
        if let literal = json?["String"]?.string {
            regex = try NSRegularExpression(pattern: NSRegularExpression.escapedPattern(for: literal))
        } else if let pattern = json?["Regex"]?.string {
            do {
                regex = try NSRegularExpression(pattern: pattern)
            } catch {
                throw FormatError(file: file, "\(owner): regular expression \(pattern) does not compile")
            }
        } else {
            throw FormatError(file: file, "\(owner): \"pattern\" must be {\"String\": …} or {\"Regex\": …}")
        }
    }

    init(regex: NSRegularExpression) { self.regex = regex }

    func replaceAll(in text: String, with content: String) -> String {
        regex.stringByReplacingMatches(in: text, range: NSRange(text.startIndex..., in: text),
                                       withTemplate: NSRegularExpression.escapedTemplate(for: content))
    }

    /// Ranges of every match, in order.
    func matches(in text: String) -> [Range<String.Index>] {
        regex.matches(in: text, range: NSRange(text.startIndex..., in: text)).compactMap { Range($0.range, in: text) }
    }
}
