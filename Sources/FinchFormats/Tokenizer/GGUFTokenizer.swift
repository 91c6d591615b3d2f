import Foundation

extension Tokenizer {
    /// The tokenizer a GGUF file's `tokenizer.ggml.*` metadata describes, built as the equivalent tokenizer.json
    /// (see `GGUFTokenizer`) so it runs through the same normalizer, pre-tokenizer and BPE code as a Hugging Face
    /// folder's.
    public convenience init(gguf file: GGUFFile) throws {
        try self.init(json: try GGUFTokenizer.tokenizerJSON(file), path: file.path)
    }
}

/// Translates a GGUF tokenizer into tokenizer.json form.
///
/// - `tokenizer.ggml.model = gpt2`: byte-level BPE from `tokens` and `merges`, split first by the pre-tokenizer
///   `tokenizer.ggml.pre` names (llama.cpp's names; each is the regex the original model's tokenizer.json uses).
/// - `tokenizer.ggml.model = llama`: SentencePiece pieces with `scores`. A merge list is made from the scores the
///   way transformers converts a SentencePiece model (every split of a piece into two pieces, ranked by the
///   piece's score), spaces become `▁` with one added before the text (unless `add_space_prefix` is false), and
///   unknown characters fall back to `<0xNN>` byte tokens.
///
/// In both, tokens of type control (3) become special added tokens and user-defined (4) plain added tokens,
/// so they are cut out of the raw text as llama.cpp does; `add_bos_token`/`add_eos_token` decide the special
/// tokens put around an encoded text (absent: a BOS for `llama`, none for `gpt2`, as the converters write them).
public enum GGUFTokenizer {
    /// The pre-tokenizer names Finch knows, with the tokenizer.json pre-tokenizer each stands for.
    static func preTokenizer(named name: String) -> JSONValue? {
        func byteLevel(useRegex: Bool) -> JSONValue {
            .object(["type": .string("ByteLevel"), "add_prefix_space": .bool(false), "use_regex": .bool(useRegex)])
        }
        func split(_ regex: String) -> JSONValue {
            .object(["type": .string("Split"), "pattern": .object(["Regex": .string(regex)]),
                     "behavior": .string("Isolated"), "invert": .bool(false)])
        }
        let digits: JSONValue = .object(["type": .string("Digits"), "individual_digits": .bool(true)])
        // LLaMA-3's and Qwen2's patterns differ only in how many digits a number piece holds.
        let contractions = #"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"#
        func modern(numbers: String) -> String {
            contractions + #"|[^\r\n\p{L}\p{N}]?\p{L}+|"# + numbers + #"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
        }
        switch name {
        case "default", "gpt-2":
            return byteLevel(useRegex: true)
        case "smollm", "starcoder":
            return .object(["type": .string("Sequence"), "pretokenizers": .array([digits, byteLevel(useRegex: true)])])
        case "llama-bpe", "llama3":
            return .object(["type": .string("Sequence"),
                            "pretokenizers": .array([split(modern(numbers: #"\p{N}{1,3}"#)), byteLevel(useRegex: false)])])
        case "qwen2":
            return .object(["type": .string("Sequence"),
                            "pretokenizers": .array([split(modern(numbers: #"\p{N}"#)), byteLevel(useRegex: false)])])
        default:
            return nil
        }
    }

    static let knownPreTokenizers = ["default", "gpt-2", "smollm", "starcoder", "llama-bpe", "llama3", "qwen2"]

    /// The chat template the file carries (`tokenizer.chat_template`), if any.
    public static func chatTemplate(_ file: GGUFFile) -> String? { file["tokenizer.chat_template"]?.string }

    enum TokenType: Int { case normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6 }

    static func tokenizerJSON(_ file: GGUFFile) throws -> JSONValue {
        let path = file.path
        guard let model = file["tokenizer.ggml.model"]?.string else {
            throw FormatError(file: path, "missing tokenizer.ggml.model: the file carries no tokenizer")
        }
        guard let tokenValues = file["tokenizer.ggml.tokens"]?.array, !tokenValues.isEmpty else {
            throw FormatError(file: path, "missing tokenizer.ggml.tokens (an array of strings)")
        }
        var tokens: [String] = []
        tokens.reserveCapacity(tokenValues.count)
        for (i, value) in tokenValues.enumerated() {
            guard let s = value.string else { throw FormatError(file: path, "tokenizer.ggml.tokens[\(i)] is not a string") }
            tokens.append(s)
        }
        var types = [Int](repeating: TokenType.normal.rawValue, count: tokens.count)
        if let list = file["tokenizer.ggml.token_type"]?.array {
            guard list.count == tokens.count else {
                throw FormatError(file: path, "tokenizer.ggml.token_type has \(list.count) entries, expected one per token (\(tokens.count))")
            }
            for (i, v) in list.enumerated() {
                guard let t = v.integer, TokenType(rawValue: t) != nil else {
                    throw FormatError(file: path, "tokenizer.ggml.token_type[\(i)] is \(v), expected 1 to 6")
                }
                types[i] = t
            }
        }
        func tokenId(_ key: String) throws -> Int? {
            guard let v = file[key] else { return nil }
            guard let id = v.integer, tokens.indices.contains(id) else {
                throw FormatError(file: path, "\(key) is \(v), expected a token id below \(tokens.count)")
            }
            return id
        }
        let bos = try tokenId("tokenizer.ggml.bos_token_id"), eos = try tokenId("tokenizer.ggml.eos_token_id")
        let unknown = try tokenId("tokenizer.ggml.unknown_token_id")

        // Each string keeps its first id; a later duplicate is reachable only as an added token.
        var vocab: [String: JSONValue] = [:]
        vocab.reserveCapacity(tokens.count)
        for (i, t) in tokens.enumerated() where vocab[t] == nil { vocab[t] = .int(i) }
        var added: [JSONValue] = []
        for (i, t) in tokens.enumerated() where !t.isEmpty
            && (types[i] == TokenType.control.rawValue || types[i] == TokenType.userDefined.rawValue) {
            added.append(.object(["id": .int(i), "content": .string(t),
                                  "special": .bool(types[i] == TokenType.control.rawValue)]))
        }

        var json: [String: JSONValue] = ["added_tokens": .array(added)]
        let addBos: Bool, addEos: Bool
        switch model {
        case "gpt2":
            let name = file["tokenizer.ggml.pre"]?.string ?? "default"
            guard let pre = preTokenizer(named: name) else {
                throw FormatError(file: path, "tokenizer.ggml.pre \"\(name)\" is not supported (Finch implements \(knownPreTokenizers.joined(separator: ", ")))")
            }
            guard let mergeValues = file["tokenizer.ggml.merges"]?.array else {
                throw FormatError(file: path, "missing tokenizer.ggml.merges (a gpt2 tokenizer needs its BPE merges)")
            }
            var merges: [JSONValue] = []
            merges.reserveCapacity(mergeValues.count)
            for (i, v) in mergeValues.enumerated() {
                guard let s = v.string else { throw FormatError(file: path, "tokenizer.ggml.merges[\(i)] is not a string") }
                merges.append(.string(s))
            }
            json["model"] = .object(["type": .string("BPE"), "vocab": .object(vocab), "merges": .array(merges),
                                     "unk_token": .null, "byte_fallback": .bool(false), "ignore_merges": .bool(false)])
            json["pre_tokenizer"] = pre
            json["decoder"] = .object(["type": .string("ByteLevel")])
            addBos = file["tokenizer.ggml.add_bos_token"]?.bool ?? false
            addEos = file["tokenizer.ggml.add_eos_token"]?.bool ?? false
        case "llama":
            guard let scoreValues = file["tokenizer.ggml.scores"]?.array, scoreValues.count == tokens.count else {
                throw FormatError(file: path, "tokenizer.ggml.scores must hold one number per token (\(tokens.count)) for a llama tokenizer")
            }
            var scores: [Double] = []
            scores.reserveCapacity(tokens.count)
            for (i, v) in scoreValues.enumerated() {
                guard let s = v.number, s.isFinite else { throw FormatError(file: path, "tokenizer.ggml.scores[\(i)] is \(v), expected a finite number") }
                scores.append(s)
            }
            let unknownToken = unknown.map { tokens[$0] } ?? types.firstIndex(of: TokenType.unknown.rawValue).map { tokens[$0] }
            json["model"] = .object(["type": .string("BPE"), "vocab": .object(vocab),
                                     "merges": .array(sentencePieceMerges(tokens: tokens, types: types, scores: scores)),
                                     "unk_token": unknownToken.map(JSONValue.string) ?? .null,
                                     "byte_fallback": .bool(true), "fuse_unk": .bool(true)])
            // As llama.cpp and SentencePiece do: one ▁ before the text even when it starts with a space (transformers'
            // Metaspace leaves such a text as it is), and every space written as ▁.
            let prefix = file["tokenizer.ggml.add_space_prefix"]?.bool ?? true
            let spaces: JSONValue = .object(["type": .string("Replace"), "pattern": .object(["String": .string(" ")]),
                                             "content": .string("▁")])
            json["normalizer"] = !prefix ? spaces : .object(["type": .string("Sequence"), "normalizers": .array([
                .object(["type": .string("Prepend"), "prepend": .string("▁")]), spaces])])
            var decoders: [JSONValue] = [
                .object(["type": .string("Replace"), "pattern": .object(["String": .string("▁")]), "content": .string(" ")]),
                .object(["type": .string("ByteFallback")]), .object(["type": .string("Fuse")]),
            ]
            if prefix { decoders.append(.object(["type": .string("Strip"), "content": .string(" "), "start": .int(1), "stop": .int(0)])) }
            json["decoder"] = .object(["type": .string("Sequence"), "decoders": .array(decoders)])
            addBos = file["tokenizer.ggml.add_bos_token"]?.bool ?? true
            addEos = file["tokenizer.ggml.add_eos_token"]?.bool ?? false
        default:
            throw FormatError(file: path, "tokenizer.ggml.model \"\(model)\" is not supported (Finch reads \"gpt2\" and \"llama\" tokenizers)")
        }

        var single: [JSONValue] = []
        var special: [String: JSONValue] = [:]
        func specialToken(_ id: Int?, _ key: String) throws {
            guard let id else { throw FormatError(file: path, "tokenizer.ggml.add_\(key)_token is true but tokenizer.ggml.\(key)_token_id is missing") }
            single.append(.object(["SpecialToken": .object(["id": .string(tokens[id]), "type_id": .int(0)])]))
            special[tokens[id]] = .object(["id": .string(tokens[id]), "ids": .array([.int(id)]), "tokens": .array([.string(tokens[id])])])
        }
        if addBos { try specialToken(bos, "bos") }
        single.append(.object(["Sequence": .object(["id": .string("A"), "type_id": .int(0)])]))
        if addEos { try specialToken(eos, "eos") }
        if addBos || addEos {
            json["post_processor"] = .object(["type": .string("TemplateProcessing"), "single": .array(single),
                                              "special_tokens": .object(special)])
        }
        return .object(json)
    }

    /// Merges for a SentencePiece vocabulary: for each normal or user-defined piece, every way to write it as two
    /// pieces of the vocabulary, pieces with higher scores first (ties in id order, then by the ids of the parts).
    static func sentencePieceMerges(tokens: [String], types: [Int], scores: [Double]) -> [JSONValue] {
        var firstId: [String: Int] = [:]
        for (i, t) in tokens.enumerated() where firstId[t] == nil { firstId[t] = i }
        var candidates: [(score: Double, id: Int, left: Int, right: Int, pair: [String])] = []
        for (id, piece) in tokens.enumerated()
            where types[id] == TokenType.normal.rawValue || types[id] == TokenType.userDefined.rawValue {
            let scalars = Array(piece.unicodeScalars)
            guard scalars.count > 1 else { continue }
            for cut in 1..<scalars.count {
                var l = String.UnicodeScalarView(), r = String.UnicodeScalarView()
                l.append(contentsOf: scalars[..<cut]); r.append(contentsOf: scalars[cut...])
                let left = String(l), right = String(r)
                if let a = firstId[left], let b = firstId[right] {
                    candidates.append((scores[id], id, a, b, [left, right]))
                }
            }
        }
        candidates.sort { x, y in
            if x.score != y.score { return x.score > y.score }
            if x.id != y.id { return x.id < y.id }
            return (x.left, x.right) < (y.left, y.right)
        }
        return candidates.map { .array($0.pair.map(JSONValue.string)) }
    }
}
