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
            guard let id = value.int, Tokenizer.validIds.contains(id) else {
                throw FormatError(file: file, "vocab entry \"\(token)\" must map to an integer id from 0 to \(Tokenizer.validIds.upperBound), got \(value.summary)")
            }
            vocabulary[token] = id
        }
        guard !vocabulary.isEmpty else { throw FormatError(file: file, "the BPE \"vocab\" is empty: no text could be encoded") }
        // One id per token: two tokens on one id would decode that id as either of them.
        var tokens: [Int: String] = [:]
        for (token, id) in vocabulary.sorted(by: { $0.key < $1.key }) {
            if let other = tokens[id] {
                throw FormatError(file: file, "vocab entries \"\(other)\" and \"\(token)\" share id \(id); each token needs its own id")
            }
            tokens[id] = token
        }
        self.vocabulary = vocabulary
        self.tokens = tokens
        for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
            if let v = json[key], !v.isNull, v.string != "" {
                throw FormatError(file: file, "BPE \"\(key)\" is not supported")
            }
        }
        if let dropout = json["dropout"]?.number, dropout > 0 {
            throw FormatError(file: file,
                              "BPE dropout \(dropout) is not supported (tokenization must be deterministic)")
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
                throw FormatError(file: file,
                                  "merge \(rank) (\(parts[0]) \(parts[1])) uses a token missing from the vocabulary")
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
        guard piece.utf8.count <= 256 else { return ids }  // long pieces (no pre-tokenizer) are not worth keeping
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
        return applyMerges(symbols)
    }

    /// Merges ranked pairs, lowest rank first and leftmost among equals, as a linked list with a heap
    /// of candidate pairs: O(n log n), so a text with no pre-tokenizer (one long piece) stays fast.
    private func applyMerges(_ initial: [Int]) -> [Int] {
        let n = initial.count
        guard n > 1 else { return initial }
        var ids = initial
        var next = Array(1...n)          // n means none
        var previous = Array(-1..<(n - 1))
        var alive = [Bool](repeating: true, count: n)
        var heap = MinHeap()
        for i in 0..<(n - 1) {
            if let m = merges[Pair(a: ids[i],
                                   b: ids[i + 1])] { heap.push(Candidate(rank: m.rank, left: i, right: i + 1)) }
        }
        while let c = heap.pop() {
            guard alive[c.left], alive[c.right], next[c.left] == c.right,
                  let m = merges[Pair(a: ids[c.left], b: ids[c.right])], m.rank == c.rank else { continue }
            ids[c.left] = m.id
            alive[c.right] = false
            let after = next[c.right]
            next[c.left] = after
            if after < n { previous[after] = c.left }
            let before = previous[c.left]
            if before >= 0, let p = merges[Pair(a: ids[before], b: ids[c.left])] {
                heap.push(Candidate(rank: p.rank, left: before, right: c.left))
            }
            if after < n, let p = merges[Pair(a: ids[c.left], b: ids[after])] {
                heap.push(Candidate(rank: p.rank, left: c.left, right: after))
            }
        }
        var out: [Int] = []
        var i = 0
        while i < n {
            out.append(ids[i])
            i = next[i]
        }
        return out
    }

    struct Candidate {
        let rank: Int, left: Int, right: Int
        static func < (a: Candidate, b: Candidate) -> Bool { (a.rank, a.left) < (b.rank, b.left) }
    }

    /// A binary min-heap of merge candidates.
    struct MinHeap {
        private var items: [Candidate] = []

        mutating func push(_ c: Candidate) {
            items.append(c)
            var i = items.count - 1
            while i > 0 {
                let parent = (i - 1) / 2
                guard items[i] < items[parent] else { break }
                items.swapAt(i, parent)
                i = parent
            }
        }

        mutating func pop() -> Candidate? {
            guard let top = items.first else { return nil }
            let last = items.removeLast()
            if !items.isEmpty {
                items[0] = last
                var i = 0
                while true {
                    let l = 2 * i + 1, r = l + 1
                    var smallest = i
                    if l < items.count && items[l] < items[smallest] { smallest = l }
                    if r < items.count && items[r] < items[smallest] { smallest = r }
                    if smallest == i { break }
                    items.swapAt(i, smallest)
                    i = smallest
                }
            }
            return top
        }
    }
}
