import Foundation

/// Learns a byte-level BPE vocabulary (GPT-2 style) from text and writes it as a `tokenizer.json` that
/// the Hugging Face `tokenizers` library loads and runs identically.
///
/// Text is split by GPT-2's pattern and written in the byte alphabet; starting from the 256 byte
/// symbols, the most frequent adjacent pair (over all words, weighted by count; ties broken by the
/// pair's text, so the result is deterministic) is merged until the vocabulary is full.
public struct BPETrainer {
    public let vocabularySize: Int
    public let specialTokens: [String]

    public init(vocabularySize: Int, specialTokens: [String] = ["<|endoftext|>"]) throws {
        guard vocabularySize >= 256 + specialTokens.count else {
            throw FormatError(file: "tokenizer", "vocabulary size \(vocabularySize) is below the 256 byte symbols plus \(specialTokens.count) special tokens")
        }
        self.vocabularySize = vocabularySize
        self.specialTokens = specialTokens
    }

    public struct Result {
        /// Token strings by id: specials, the 256 byte symbols, then one per merge.
        public let tokens: [String]
        public let merges: [(String, String)]
    }

    /// Word counts of `texts` after GPT-2 pre-tokenization, in the byte alphabet.
    public static func countWords(_ texts: [String]) -> [String: Int] {
        var counts: [String: Int] = [:]
        let splitter = PreTokenizer.byteLevel(addPrefixSpace: false, useRegex: true)
        for text in texts {
            // Line by line keeps the regex on short strings; GPT-2's pattern never joins across "\n" except in
            // whitespace runs, which become their own pieces either way.
            for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
                for piece in splitter.apply([String(line) + "\n"],
                                            isFirstSegment: true) { counts[piece, default: 0] += 1 }
            }
        }
        return counts
    }

    public func train(words counts: [String: Int]) -> Result {
        var tokens = specialTokens + ByteLevelAlphabet.byteToScalar.map { String($0) }
        var id: [String: Int] = [:]
        for (i, t) in tokens.enumerated() { id[t] = i }
        // Words as symbol-id arrays, in a fixed order.
        let entries = counts.sorted { $0.key < $1.key }
        var words: [[Int]] = entries.map { w in w.key.unicodeScalars.map { id[String($0)]! } }
        let frequency = entries.map(\.value)

        struct Pair: Hashable { let a: Int, b: Int }
        var pairCounts: [Pair: Int] = [:]
        var wordsWith: [Pair: Set<Int>] = [:]
        func add(_ w: Int, _ sign: Int) {
            let s = words[w]
            guard s.count > 1 else { return }
            for i in 0..<(s.count - 1) {
                let p = Pair(a: s[i], b: s[i + 1])
                pairCounts[p, default: 0] += sign * frequency[w]
                if sign > 0 { wordsWith[p, default: []].insert(w) }
            }
        }
        for w in words.indices { add(w, 1) }

        var merges: [(String, String)] = []
        while tokens.count < vocabularySize {
            var best: (Pair, Int)?
            for (p, c) in pairCounts where c > 0 {
                if let (bp, bc) = best {
                    if c < bc { continue }
                    if c == bc && (tokens[p.a], tokens[p.b]) >= (tokens[bp.a], tokens[bp.b]) { continue }
                }
                best = (p, c)
            }
            guard let (pair, _) = best else { break }
            let merged = tokens[pair.a] + tokens[pair.b]
            let newId = tokens.count
            tokens.append(merged)
            id[merged] = newId
            merges.append((tokens[pair.a], tokens[pair.b]))
            for w in wordsWith[pair] ?? [] {
                add(w, -1)
                var s = words[w], out: [Int] = [], i = 0
                while i < s.count {
                    if i + 1 < s.count && s[i] == pair.a && s[i + 1] == pair.b {
                        out.append(newId)
                        i += 2
                    } else {
                        out.append(s[i])
                        i += 1
                    }
                }
                s = out
                words[w] = s
                add(w, 1)
            }
            pairCounts[pair] = nil
            wordsWith[pair] = nil
        }
        return Result(tokens: tokens, merges: merges)
    }

    /// tokenizer.json for a trained vocabulary: byte-level pre-tokenizer, decoder and post-processor, as GPT-2's.
    public func tokenizerJSON(_ result: Result) throws -> Data {
        var vocab: [String: Int] = [:]
        for (i, t) in result.tokens.enumerated() { vocab[t] = i }
        let byteLevel: [String: Any] = ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                                        "use_regex": true]
        let json: [String: Any] = [
            "version": "1.0",
            "truncation": NSNull(),
            "padding": NSNull(),
            "added_tokens": specialTokens.enumerated().map { i, t in
                ["id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false,
                 "special": true] as [String: Any]
            },
            "normalizer": NSNull(),
            "pre_tokenizer": byteLevel,
            "post_processor": ["type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true],
            "decoder": byteLevel,
            "model": [
                "type": "BPE", "dropout": NSNull(), "unk_token": NSNull(), "continuing_subword_prefix": NSNull(),
                "end_of_word_suffix": NSNull(), "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": vocab, "merges": result.merges.map { [$0.0, $0.1] },
            ] as [String: Any],
        ]
        return try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys, .withoutEscapingSlashes])
    }
}
