import Foundation

/// The `model` section of tokenizer.json when its type is BPE: a vocabulary and ranked merges.
///
/// A piece is split into Unicode scalars (each looked up in the vocabulary; with byte fallback an unknown
/// scalar becomes its UTF-8 bytes as `<0xNN>` tokens, otherwise the unknown token), then the adjacent pair
/// with the lowest merge rank is merged, leftmost first, until no ranked pair remains.
final class BPEModel: @unchecked Sendable {
    let vocabulary: [String: Int]
    let tokens: [Int: String]
    /// (left id, right id) → (rank, merged id)
    private let merges: [Pair: (rank: Int, id: Int)]
    let unknownToken: String?
    let byteFallback: Bool
    let fuseUnknown: Bool
    let ignoreMerges: Bool
    private var cache: [String: [Int]] = [:]
    private let cacheLock = NSLock()

    struct Pair: Hashable { let a: Int, b: Int }

    init(_ json: JSONValue, file: String) throws {
        guard json["type"]?.string == "BPE" else {
            throw FormatError(file: file, "model type \(json["type"]?.summary ?? "missing") is not supported (Finch implements BPE)")
        }
        guard let vocab = json["vocab"]?.object else { throw FormatError(file: file, "BPE model without a \"vocab\" object") }
        var vocabulary: [String: Int] = [:]
        for (token, value) in vocab {
            guard let id = value.int, id >= 0 else { throw FormatError(file: file, "vocab entry \"\(token)\" must map to a non-negative integer id") }
            vocabulary[token] = id
        }
        self.vocabulary = vocabulary
        tokens = Dictionary(vocabulary.map { ($1, $0) }, uniquingKeysWith: { a, _ in a })
        for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
            if let v = json[key], !v.isNull, v.string != "" {
                throw FormatError(file: file, "BPE \"\(key)\" is not supported")
            }
        }
        if let dropout = json["dropout"]?.number, dropout > 0 {
            throw FormatError(file: file, "BPE dropout \(dropout) is not supported (tokenization must be deterministic)")
        }
        unknownToken = json["unk_token"]?.string
        byteFallback = json["byte_fallback"]?.bool ?? false
        fuseUnknown = json["fuse_unk"]?.bool ?? false
        ignoreMerges = json["ignore_merges"]?.bool ?? false

        var merges: [Pair: (Int, Int)] = [:]
        for (rank, entry) in (json["merges"]?.array ?? []).enumerated() {
            let parts: [String]
            if let pair = entry.array, pair.count == 2, let a = pair[0].string, let b = pair[1].string {
                parts = [a, b]
            } else if let text = entry.string {
                let split = text.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
                guard split.count == 2 else { throw FormatError(file: file, "merge \(rank) \"\(text)\" is not two tokens separated by a space") }
                parts = split
            } else {
                throw FormatError(file: file, "merge \(rank) must be [\"a\", \"b\"] or \"a b\"")
            }
            guard let a = vocabulary[parts[0]], let b = vocabulary[parts[1]] else {
                throw FormatError(file: file, "merge \(rank) (\(parts[0]) \(parts[1])) uses a token missing from the vocabulary")
            }
            guard let merged = vocabulary[parts[0] + parts[1]] else {
                throw FormatError(file: file, "merge \(rank) (\(parts[0]) \(parts[1])) makes \"\(parts[0] + parts[1])\", which is missing from the vocabulary")
            }
            if merges[Pair(a: a, b: b)] == nil { merges[Pair(a: a, b: b)] = (rank, merged) }
        }
        self.merges = merges.mapValues { (rank: $0.0, id: $0.1) }
        if let unknownToken, vocabulary[unknownToken] == nil {
            throw FormatError(file: file, "unk_token \"\(unknownToken)\" is not in the vocabulary")
        }
    }

    func tokenize(_ piece: String) -> [Int] {
        cacheLock.lock()
        if let hit = cache[piece] { cacheLock.unlock(); return hit }
        cacheLock.unlock()
        let ids = merge(piece)
        cacheLock.lock()
        if cache.count > 50_000 { cache.removeAll(keepingCapacity: true) }
        cache[piece] = ids
        cacheLock.unlock()
        return ids
    }

    private func merge(_ piece: String) -> [Int] {
        if ignoreMerges, let id = vocabulary[piece] { return [id] }
        var symbols: [Int] = []
        let unknown = unknownToken.flatMap { vocabulary[$0] }
        var lastWasUnknown = false
        for scalar in piece.unicodeScalars {
            let s = String(scalar)
            if let id = vocabulary[s] {
                symbols.append(id)
                lastWasUnknown = false
                continue
            }
            if byteFallback {
                let bytes = Array(s.utf8).map { vocabulary[String(format: "<0x%02X>", $0)] }
                if bytes.allSatisfy({ $0 != nil }) {
                    symbols.append(contentsOf: bytes.map { $0! })
                    lastWasUnknown = false
                    continue
                }
            }
            if let unknown {
                if !(fuseUnknown && lastWasUnknown) { symbols.append(unknown) }
                lastWasUnknown = true
            }
        }
        while symbols.count > 1 {
            var best: (rank: Int, index: Int, id: Int)?
            for i in 0..<(symbols.count - 1) {
                if let m = merges[Pair(a: symbols[i], b: symbols[i + 1])], m.rank < (best?.rank ?? Int.max) {
                    best = (m.rank, i, m.id)
                }
            }
            guard let best else { break }
            symbols[best.index] = best.id
            symbols.remove(at: best.index + 1)
        }
        return symbols
    }
}
