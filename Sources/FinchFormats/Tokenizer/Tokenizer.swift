import Foundation

/// A Hugging Face `tokenizer.json` with a BPE model, run the way the `tokenizers` library runs it:
/// added tokens are cut out of the raw text first; every other segment is normalized, pre-tokenized and
/// split by BPE; the post-processor adds special tokens; decoding runs the decoder chain over the pieces.
public final class Tokenizer: @unchecked Sendable {
    /// Token ids Finch can carry: models read them as 32-bit integers (the tokenizers library's are 32-bit too).
    public static let validIds = 0...Int(Int32.max)

    public struct AddedToken: Sendable, Equatable {
        public let id: Int
        public let content: String
        public let special: Bool
        let leftStrip: Bool
        let rightStrip: Bool
    }

    public let path: String
    public let addedTokens: [AddedToken]
    private let model: BPEModel
    private let normalizer: Normalizer?
    private let preTokenizer: PreTokenizer?
    private let postProcessor: PostProcessor
    private let decoder: TokenDecoder?
    private let addedById: [Int: AddedToken]
    /// Added tokens by the first UTF-8 byte of their content, longest first.
    private let addedByFirstByte: [UInt8: [(bytes: [UInt8], token: AddedToken)]]

    public convenience init(path: String) throws {
        guard FileManager.default.fileExists(atPath: path) else {
            throw FormatError(file: path, "missing (a Hugging Face model folder needs tokenizer.json)")
        }
        try self.init(json: try JSONValue.load(path: path), path: path)
    }

    public init(json: JSONValue, path: String) throws {
        guard json.object != nil else { throw FormatError(file: path, "expected a JSON object") }
        self.path = path
        guard let modelJSON = json["model"] else { throw FormatError(file: path, "no \"model\" section") }
        model = try BPEModel(modelJSON, file: path)
        normalizer = try json["normalizer"].flatMap { $0.isNull ? nil : try Normalizer($0, file: path) }
        preTokenizer = try json["pre_tokenizer"].flatMap { $0.isNull ? nil : try PreTokenizer($0, file: path) }
        postProcessor = try PostProcessor(json["post_processor"], file: path)
        decoder = try json["decoder"].flatMap { $0.isNull ? nil : try TokenDecoder($0, file: path) }
        var added: [AddedToken] = []
        for entry in json["added_tokens"]?.array ?? [] {
            guard let id = entry["id"]?.int, Tokenizer.validIds.contains(id), let content = entry["content"]?.string, !content.isEmpty else {
                throw FormatError(file: path, "added token \(entry.summary) needs an integer \"id\" from 0 to \(Tokenizer.validIds.upperBound) and a non-empty \"content\"")
            }
            added.append(AddedToken(id: id, content: content, special: entry["special"]?.bool ?? false,
                                    leftStrip: entry["lstrip"]?.bool ?? false, rightStrip: entry["rstrip"]?.bool ?? false))
        }
        if let t = json["truncation"], !t.isNull { throw FormatError(file: path, "\"truncation\" is not supported; remove it (Finch windows text itself)") }
        addedTokens = added
        addedById = Dictionary(added.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        var byFirst: [UInt8: [(bytes: [UInt8], token: AddedToken)]] = [:]
        for t in added {
            let bytes = Array(t.content.utf8)
            byFirst[bytes[0], default: []].append((bytes, t))
        }
        addedByFirstByte = byFirst.mapValues { $0.sorted { $0.bytes.count > $1.bytes.count } }
    }

    /// One past the largest id the tokenizer can produce.
    public var vocabularySize: Int {
        max((model.tokens.keys.max() ?? -1), (addedTokens.map(\.id).max() ?? -1)) + 1
    }

    public func id(of token: String) -> Int? {
        addedTokens.first { $0.content == token }?.id ?? model.vocabulary[token]
    }

    public func token(of id: Int) -> String? { addedById[id]?.content ?? model.tokens[id] }

    /// Token ids of `text`; with `addSpecialTokens`, the post-processor's special tokens (LLaMA's `<s>`).
    public func encode(_ text: String, addSpecialTokens: Bool = true) -> [Int] {
        let ids = encodeSegments(text).flatMap(\.ids)
        return addSpecialTokens ? postProcessor.apply(ids) : ids
    }

    /// Each added token cut out of the text, and each stretch between them, with its ids.
    private func encodeSegments(_ text: String) -> [(segment: Segment, ids: [Int])] {
        var out: [(segment: Segment, ids: [Int])] = []
        var first = true
        for segment in splitOnAddedTokens(text) {
            switch segment {
            case .added(let token):
                out.append((segment, [token.id]))
            case .text(let raw):
                let normalized = normalizer?.apply(raw) ?? raw
                let pieces = preTokenizer?.apply([normalized], isFirstSegment: first) ?? [normalized]
                out.append((segment, pieces.filter { !$0.isEmpty }.flatMap { model.tokenize($0) }))
            }
            first = false
        }
        return out
    }

    /// Token ids of `text` (no special tokens added) and the UTF-8 byte offset in `text` where each token starts,
    /// when the tokens spell the text back byte for byte: byte-level BPE, and SentencePiece-style pieces whose `▁`
    /// stands for a space (the one put before a stretch of text counts as nothing). nil for a tokenizer whose
    /// pieces do not (a normalizer that changes the text otherwise).
    public func encodeWithOffsets(_ text: String) -> (ids: [Int], offsets: [Int])? {
        let bytes = Array(text.utf8)
        var ids: [Int] = [], offsets: [Int] = []
        var cursor = 0
        func skipSpaces(until wanted: [UInt8]) -> Bool {
            while cursor < bytes.count, !bytes[cursor...].starts(with: wanted), Self.isSpace(bytes[cursor]) { cursor += 1 }
            return bytes[cursor...].starts(with: wanted)
        }
        for (segment, segmentIds) in encodeSegments(text) {
            switch segment {
            case .added(let token):
                guard skipSpaces(until: Array(token.content.utf8)) else { return nil }
                ids.append(token.id)
                offsets.append(cursor)
                cursor += token.content.utf8.count
            case .text(let raw):
                let rawBytes = Array(raw.utf8)
                guard skipSpaces(until: rawBytes) else { return nil }
                let spelled = segmentIds.map { tokenBytes($0) }
                var local = spelled.reduce(0) { $0 + $1.count } - rawBytes.count
                // A space the normalizer or pre-tokenizer put before the text stands for nothing in it.
                guard local == 0 || (local == 1 && spelled.first?.first == 0x20 && rawBytes.first != 0x20) else { return nil }
                local = -local
                for (id, piece) in zip(segmentIds, spelled) {
                    ids.append(id)
                    offsets.append(cursor + max(local, 0))
                    local += piece.count
                }
                cursor += rawBytes.count
            }
        }
        while cursor < bytes.count, Self.isSpace(bytes[cursor]) { cursor += 1 }
        return cursor == bytes.count ? (ids, offsets) : nil
    }

    /// The bytes a token stands for in the text: an added token's content, a byte-level token's bytes, a byte
    /// fallback token's byte, or a piece with `▁` for spaces.
    func tokenBytes(_ id: Int) -> [UInt8] {
        if let added = addedById[id] { return Array(added.content.utf8) }
        guard let piece = model.tokens[id] else { return [] }
        if decoder?.isByteLevel ?? false { return ByteLevelAlphabet.decodeBytes(piece) }
        if let byte = TokenDecoder.byteToken(piece) { return [byte] }
        return Array(piece.replacingOccurrences(of: "▁", with: " ").utf8)
    }

    /// The token strings of `ids` (for display); unknown ids show as `<id>`.
    public func pieces(_ ids: [Int]) -> [String] { ids.map { token(of: $0) ?? "<\($0)>" } }

    /// Text of `ids`, through the decoder chain; special tokens are dropped with `skipSpecialTokens`.
    public func decode(_ ids: [Int], skipSpecialTokens: Bool = false) -> String {
        let kept = ids.filter { !(skipSpecialTokens && (addedById[$0]?.special ?? false)) }
        let tokens = kept.compactMap { token(of: $0) }
        guard let decoder else { return tokens.joined(separator: " ") }
        return decoder.apply(tokens).joined()
    }

    enum Segment { case text(String), added(AddedToken) }

    /// Cuts added tokens out of the text, leftmost and longest first, honouring lstrip/rstrip.
    func splitOnAddedTokens(_ text: String) -> [Segment] {
        guard !addedByFirstByte.isEmpty else { return text.isEmpty ? [] : [.text(text)] }
        let bytes = Array(text.utf8)
        var segments: [Segment] = []
        var start = 0, i = 0
        func emitText(_ range: Range<Int>) {
            if !range.isEmpty { segments.append(.text(String(decoding: bytes[range], as: UTF8.self))) }
        }
        while i < bytes.count {
            guard let candidates = addedByFirstByte[bytes[i]],
                  let hit = candidates.first(where: { c in
                      i + c.bytes.count <= bytes.count && bytes[i..<(i + c.bytes.count)].elementsEqual(c.bytes)
                  })
            else { i += 1; continue }
            var textEnd = i
            if hit.token.leftStrip {
                while textEnd > start, Self.isSpace(bytes[textEnd - 1]) { textEnd -= 1 }
            }
            emitText(start..<textEnd)
            segments.append(.added(hit.token))
            i += hit.bytes.count
            if hit.token.rightStrip { while i < bytes.count, Self.isSpace(bytes[i]) { i += 1 } }
            start = i
        }
        emitText(start..<bytes.count)
        return segments
    }

    private static func isSpace(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 || b == 0x0A || b == 0x0D }
}
