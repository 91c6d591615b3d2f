import Foundation

/// The `pre_tokenizer` section of tokenizer.json: splits normalized text into the pieces BPE sees.
indirect enum PreTokenizer {
    enum SplitBehavior: String {
        case removed = "Removed", isolated = "Isolated", mergedWithPrevious = "MergedWithPrevious", mergedWithNext = "MergedWithNext"
        /// Keeps the matches and drops what lies between them (the Whitespace pre-tokenizer).
        case matchesOnly = "-"
    }

    case sequence([PreTokenizer])
    /// GPT-2's byte-level split; each piece's bytes are then written in the byte alphabet.
    case byteLevel(addPrefixSpace: Bool, useRegex: Bool)
    case split(pattern: TextPattern, behavior: SplitBehavior)
    case metaspace(replacement: String, prependScheme: String, split: Bool)

    /// GPT-2's pattern: contractions, letters, numbers, other symbols, each optionally after one space;
    /// runs of whitespace, leaving the last space of a run to the word that follows.
    static let gpt2Pattern = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#

    init(_ json: JSONValue, file: String) throws {
        guard let type = json["type"]?.string else { throw FormatError(file: file, "pre_tokenizer without a \"type\"") }
        if json["behavior"]?.string == "-" { throw FormatError(file: file, "Split pre_tokenizer behavior \"-\" is not supported") }
        switch type {
        case "Sequence":
            guard let list = json["pretokenizers"]?.array else { throw FormatError(file: file, "Sequence pre_tokenizer without \"pretokenizers\"") }
            self = .sequence(try list.map { try PreTokenizer($0, file: file) })
        case "ByteLevel":
            self = .byteLevel(addPrefixSpace: json["add_prefix_space"]?.bool ?? true,
                              useRegex: json["use_regex"]?.bool ?? true)
        case "Split":
            if json["invert"]?.bool == true { throw FormatError(file: file, "Split pre_tokenizer with \"invert\": true is not supported") }
            let name = json["behavior"]?.string ?? "Isolated"
            guard let behavior = SplitBehavior(rawValue: name) else {
                throw FormatError(file: file, "Split pre_tokenizer behavior \"\(name)\" is not supported (Finch implements Removed, Isolated, MergedWithPrevious, MergedWithNext)")
            }
            self = .split(pattern: try TextPattern(json["pattern"], file: file, owner: "Split pre_tokenizer"),
                          behavior: behavior)
        case "Metaspace":
            let replacement = json["replacement"]?.string ?? "▁"
            var scheme = json["prepend_scheme"]?.string ?? "always"
            if let legacy = json["add_prefix_space"]?.bool, json["prepend_scheme"] == nil { scheme = legacy ? "always" : "never" }
            guard ["always", "first", "never"].contains(scheme) else {
                throw FormatError(file: file, "Metaspace prepend_scheme \"\(scheme)\" is not supported")
            }
            self = .metaspace(replacement: replacement, prependScheme: scheme, split: json["split"]?.bool ?? true)
        case "Digits":
            let pattern = (json["individual_digits"]?.bool ?? false) ? #"\p{N}"# : #"\p{N}+"#
            self = .split(pattern: TextPattern(regex: try NSRegularExpression(pattern: pattern)), behavior: .isolated)
        case "Whitespace":
            self = .split(pattern: TextPattern(regex: try NSRegularExpression(pattern: #"\w+|[^\w\s]+"#)),
                          behavior: .matchesOnly)
        case "WhitespaceSplit":
            self = .split(pattern: TextPattern(regex: try NSRegularExpression(pattern: #"\s+"#)), behavior: .removed)
        default:
            throw FormatError(file: file, "pre_tokenizer \"\(type)\" is not supported (Finch implements Sequence, ByteLevel, Split, Metaspace, Digits, Whitespace, WhitespaceSplit)")
        }
    }

    /// Splits each piece; `isFirst` says whether the pieces start the original text.
    func apply(_ pieces: [String], isFirstSegment: Bool) -> [String] {
        switch self {
        case .sequence(let list):
            return list.reduce(pieces) { $1.apply($0, isFirstSegment: isFirstSegment) }
        case let .byteLevel(addPrefixSpace, useRegex):
            let gpt2 = PreTokenizer.gpt2Regex
            return pieces.flatMap { piece -> [String] in
                var p = piece
                if addPrefixSpace && !p.hasPrefix(" ") { p = " " + p }
                let parts = useRegex ? PreTokenizer.split(p, gpt2, .isolated) : [p]
                return parts.map { ByteLevelAlphabet.encode(Substring($0)) }
            }
        case let .split(pattern, behavior):
            return pieces.flatMap { PreTokenizer.split($0, pattern, behavior) }
        case let .metaspace(replacement, scheme, split):
            return pieces.enumerated().flatMap { index, piece -> [String] in
                var p = piece.replacingOccurrences(of: " ", with: replacement)
                let prepend = scheme == "always" || (scheme == "first" && isFirstSegment && index == 0)
                if prepend && !p.hasPrefix(replacement) { p = replacement + p }
                guard split else { return [p] }
                let marker = TextPattern(regex: try! NSRegularExpression(pattern: NSRegularExpression.escapedPattern(for: replacement)))
                return PreTokenizer.split(p, marker, .mergedWithNext)
            }
        }
    }

    static let gpt2Regex = TextPattern(regex: try! NSRegularExpression(pattern: gpt2Pattern))

    static func split(_ text: String, _ pattern: TextPattern, _ behavior: SplitBehavior) -> [String] {
        var out: [String] = []
        var pending = ""  // for MergedWithNext
        var cursor = text.startIndex
        for m in pattern.matches(in: text) where !m.isEmpty {
            let gap = String(text[cursor..<m.lowerBound])
            let match = String(text[m])
            switch behavior {
            case .isolated:
                out.append(gap)
                out.append(match)
            case .removed:
                out.append(gap)
            case .matchesOnly:
                out.append(match)
            case .mergedWithPrevious:
                out.append(gap + match)
            case .mergedWithNext:
                out.append(pending + gap)
                pending = match
            }
            cursor = m.upperBound
        }
        let tail = String(text[cursor...])
        if behavior != .matchesOnly { out.append(behavior == .mergedWithNext ? pending + tail : tail) }
        return out.filter { !$0.isEmpty }
    }
}
