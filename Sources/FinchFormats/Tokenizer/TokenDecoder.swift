import Foundation

/// The `decoder` section of tokenizer.json: token strings back to text, as a chain over the token list.
indirect enum TokenDecoder {
    case sequence([TokenDecoder])
    case byteLevel
    case replace(pattern: TextPattern, content: String)
    case byteFallback
    case fuse
    case strip(content: Character, start: Int, stop: Int)
    case metaspace(replacement: String, prependScheme: String)

    init(_ json: JSONValue, file: String) throws {
        guard let type = json["type"]?.string else { throw FormatError(file: file, "decoder without a \"type\"") }
        switch type {
        case "Sequence":
            guard let list = json["decoders"]?.array else { throw FormatError(file: file, "Sequence decoder without \"decoders\"") }
            self = .sequence(try list.map { try TokenDecoder($0, file: file) })
        case "ByteLevel": self = .byteLevel
        case "Replace":
            self = .replace(pattern: try TextPattern(json["pattern"], file: file, owner: "Replace decoder"),
                            content: json["content"]?.string ?? "")
        case "ByteFallback": self = .byteFallback
        case "Fuse": self = .fuse
        case "Strip":
            guard let c = json["content"]?.string, c.count == 1 else { throw FormatError(file: file, "Strip decoder needs a one-character \"content\"") }
            self = .strip(content: c.first!, start: json["start"]?.int ?? 0, stop: json["stop"]?.int ?? 0)
        case "Metaspace":
            var scheme = json["prepend_scheme"]?.string ?? "always"
            if let legacy = json["add_prefix_space"]?.bool, json["prepend_scheme"] == nil { scheme = legacy ? "always" : "never" }
            self = .metaspace(replacement: json["replacement"]?.string ?? "▁", prependScheme: scheme)
        default:
            throw FormatError(file: file, "decoder \"\(type)\" is not supported (Finch implements Sequence, ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace)")
        }
    }

    /// Whether the chain turns byte-level characters back into bytes.
    var isByteLevel: Bool {
        switch self {
        case .byteLevel: return true
        case .sequence(let list): return list.contains { $0.isByteLevel }
        default: return false
        }
    }

    func apply(_ tokens: [String]) -> [String] {
        switch self {
        case .sequence(let list):
            return list.reduce(tokens) { $1.apply($0) }
        case .byteLevel:
            let bytes = tokens.flatMap { ByteLevelAlphabet.decodeBytes($0) }
            return [String(decoding: bytes, as: UTF8.self)]
        case let .replace(pattern, content):
            return tokens.map { pattern.replaceAll(in: $0, with: content) }
        case .byteFallback:
            var out: [String] = []
            var pending: [UInt8] = []
            func flush() {
                guard !pending.isEmpty else { return }
                if let s = String(validating: pending, as: UTF8.self) {
                    out.append(s)
                } else {
                    out.append(contentsOf: pending.map { _ in "\u{FFFD}" })
                }
                pending = []
            }
            for t in tokens {
                if let b = TokenDecoder.byteToken(t) { pending.append(b) } else { flush(); out.append(t) }
            }
            flush()
            return out
        case .fuse:
            return [tokens.joined()]
        case let .strip(content, start, stop):
            return tokens.map { token in
                var s = Substring(token)
                for _ in 0..<start { if s.first == content { s = s.dropFirst() } else { break } }
                for _ in 0..<stop { if s.last == content { s = s.dropLast() } else { break } }
                return String(s)
            }
        case let .metaspace(replacement, scheme):
            return tokens.enumerated().map { i, token in
                var t = token.replacingOccurrences(of: replacement, with: " ")
                if i == 0 && scheme != "never" && t.hasPrefix(" ") { t.removeFirst() }
                return t
            }
        }
    }

    /// The byte of a `<0xNN>` token.
    static func byteToken(_ t: String) -> UInt8? {
        guard t.count == 6, t.hasPrefix("<0x"), t.hasSuffix(">") else { return nil }
        return UInt8(t.dropFirst(3).prefix(2), radix: 16)
    }
}
