import Foundation
import FinchFormats

/// One training sequence: `tokens` and, per token, whether it is a prediction target (false on prompts
/// of completion data and on padding); for JSON-lines records packed into one window, where each token's
/// record starts (each record attends only to itself, as it would alone).
public struct TokenSequence: Equatable, Sendable {
    public var tokens: [Int32]
    public var targetMask: [Bool]
    public var recordStarts: [Int32]? = nil

    public init(tokens: [Int32], targetMask: [Bool], recordStarts: [Int32]? = nil) {
        self.tokens = tokens
        self.targetMask = targetMask
        self.recordStarts = recordStarts
    }
}

/// A data file turned into fixed-length token sequences.
///
/// - text (`.txt`): the whole file tokenized without special tokens, cut into consecutive windows.
/// - jsonl (`{"text": …}` per line): each record with the tokenizer's special tokens and an EOS.
/// - completion (`{"prompt": …, "completion": …}` per line): the loss falls on the completion (and its EOS) only.
/// - chat (`{"messages": [{"role": …, "content": …}, …]}` per line): each conversation written with the model's
///   chat template; the loss falls on the assistant's replies and their end-of-turn tokens (or the last reply's).
/// With packing, JSON-lines records are placed whole into windows, in file order, as many as fit; the rest
/// of a window is padding, and only a record longer than a window is cut across windows (a completion record
/// whose prompt fills a window is refused: no completion token would be trained with its prompt); a record
/// attends only to itself, not to the records before it in its window. Without packing, each record is one sequence, truncated or padded. Padding is
/// never a target. Plain text is one stream cut into consecutive windows.
public struct TrainingData: Sendable {
    public let path: String
    public let format: Recipe.DataFormat
    public let sequences: [TokenSequence]
    public let sequenceLength: Int

    /// Data already in sequences (`load` makes them from a file); `path` names it in messages.
    public init(path: String, format: Recipe.DataFormat, sequences: [TokenSequence], sequenceLength: Int) {
        self.path = path
        self.format = format
        self.sequences = sequences
        self.sequenceLength = sequenceLength
    }

    /// A 64-bit FNV-1a hash of every sequence's tokens, loss mask and record starts: what the batches are
    /// made of, so a checkpoint can tell whether it is resumed on the same data.
    public var fingerprint: String {
        var f = Fingerprint()
        for s in sequences {
            f.add(Int64(s.tokens.count))
            for t in s.tokens { f.add(Int64(t)) }
            for m in s.targetMask { f.add(Int64(m ? 1 : 0)) }
            f.add(Int64(s.recordStarts?.count ?? -1))
            for r in s.recordStarts ?? [] { f.add(Int64(r)) }
        }
        return f.hex
    }

    /// How chat records are written: the model's chat format (nil when it has none) and which replies train.
    public struct Chat {
        public let format: () throws -> ChatFormat?
        public let loss: ChatFormat.Loss
        public init(format: @escaping () throws -> ChatFormat?, loss: ChatFormat.Loss) {
            self.format = format
            self.loss = loss
        }
    }

    public static func load(path: String, format requested: Recipe.DataFormat, tokenizer: Tokenizer,
                            sequenceLength: Int,
                            packing: Bool, endOfText: Int32, chat: Chat? = nil) throws -> TrainingData {
        let text = try readText(path)
        let format = try resolveFormat(requested, path: path, text: text)
        let (records, lines) = try tokenize(text, format: format, path: path, tokenizer: tokenizer,
                                            endOfText: endOfText, chat: chat)
        guard records.contains(where: { $0.tokens.count >= 2 }) else {
            throw RecipeError(file: path, "holds fewer than 2 tokens; nothing to train on")
        }
        if format == .completion || format == .chat {
            // A prompt that fills a window leaves no completion token beside it: truncated (no packing) the record
            // trains on nothing, and cut across windows (packing) its windows of prompt train on nothing while its
            // completion is learned without the prompt it answers.
            let lost = records.indices.filter { !records[$0].targetMask.prefix(sequenceLength).contains(true) }
            if let first = lost.first {
                throw RecipeError(file: path, line: lines[first],
                                  "the \(format == .chat ? "conversation before the first trained reply" : "prompt") is \(records[first].targetMask.firstIndex(of: true) ?? records[first].tokens.count) tokens, so with "
                                  + "data.seq_len \(sequenceLength) no \(format == .chat ? "reply token fits in a window with the conversation before it" : "completion token fits in a window with its prompt")"
                                  + (lost.count > 1 ? " (\(lost.count) records are so)" : "") + "; raise data.seq_len or shorten the prompt")
            }
        }
        let sequences: [TokenSequence]
        switch (format, packing) {
        case (.text, _), (.auto, _): sequences = pack(records, length: sequenceLength, pad: endOfText)
        case (_, true): sequences = packWhole(records, length: sequenceLength, pad: endOfText)
        case (_, false): sequences = records.map { fit($0, length: sequenceLength, pad: endOfText) }
        }
        return TrainingData(path: path, format: format, sequences: sequences, sequenceLength: sequenceLength)
    }

    /// The file's records as token sequences, with each JSON-lines record's line in the file: plain text is one
    /// record without special tokens; a "text" record gets the tokenizer's special tokens and `endOfText`; a
    /// prompt/completion record is a target only on the completion and its `endOfText`.
    public static func tokenize(_ text: String, format: Recipe.DataFormat, path: String, tokenizer: Tokenizer,
                                endOfText: Int32, chat: Chat? = nil) throws -> (records: [TokenSequence], lines: [Int]) {
        var records: [TokenSequence] = []
        var lines: [Int] = []
        switch format {
        case .text, .auto:
            let ids = tokenizer.encode(text, addSpecialTokens: false).map(Int32.init)
            records = [TokenSequence(tokens: ids, targetMask: [Bool](repeating: true, count: ids.count))]
        case .chat:
            guard let chat else { throw RecipeError(file: path, "chat records need the model's chat template") }
            guard let chatFormat = try chat.format() else {
                throw RecipeError(file: path, "holds chat records (\"messages\"), but the model has no chat template "
                                  + "(tokenizer.chat_template in a GGUF file, chat_template in tokenizer_config.json)")
            }
            for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                let trimmed = line.trimmingCharacters(in: .whitespaces)
                if trimmed.isEmpty { continue }
                guard let object = (try? JSONValue.parse(Data(trimmed.utf8), file: path))?.object else {
                    throw RecipeError(file: path, line: index + 1, "expected one JSON object per line")
                }
                let messages = try chatMessages(object, path: path, line: index + 1)
                do {
                    let (ids, targets) = try chatFormat.encode(messages, tokenizer: tokenizer, loss: chat.loss)
                    records.append(TokenSequence(tokens: ids.map(Int32.init), targetMask: targets))
                    lines.append(index + 1)
                } catch let error as ChatTemplateError {
                    throw RecipeError(file: path, line: index + 1, error.message)
                }
            }
        case .jsonl, .completion:
            for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                let trimmed = line.trimmingCharacters(in: .whitespaces)
                if trimmed.isEmpty { continue }
                guard let object = (try? JSONValue.parse(Data(trimmed.utf8), file: path))?.object else {
                    throw RecipeError(file: path, line: index + 1, "expected one JSON object per line")
                }
                lines.append(index + 1)
                if format == .jsonl {
                    guard let t = object["text"]?.string else {
                        throw RecipeError(file: path, line: index + 1, "expected a \"text\" string")
                    }
                    let ids = tokenizer.encode(t, addSpecialTokens: true).map(Int32.init) + [endOfText]
                    records.append(TokenSequence(tokens: ids, targetMask: [Bool](repeating: true, count: ids.count)))
                } else {
                    guard let prompt = object["prompt"]?.string, let completion = object["completion"]?.string else {
                        throw RecipeError(file: path, line: index + 1, "expected \"prompt\" and \"completion\" strings")
                    }
                    let p = tokenizer.encode(prompt, addSpecialTokens: true).map(Int32.init)
                    let c = tokenizer.encode(completion, addSpecialTokens: false).map(Int32.init) + [endOfText]
                    records.append(TokenSequence(tokens: p + c, targetMask: [Bool](repeating: false, count: p.count) + [Bool](repeating: true, count: c.count)))
                }
            }
        }
        return (records, lines)
    }

    /// A data file's text, or an error naming the file (and the line of the first byte that is not UTF-8).
    public static func readText(_ path: String) throws -> String {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw RecipeError(file: path, "cannot read the data file")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            // The first line that does not decode, for the message.
            var line = 1
            for piece in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
                if String(data: Data(piece), encoding: .utf8) == nil { break }
                line += 1
            }
            throw RecipeError(file: path, line: line, "is not UTF-8 text")
        }
        return text
    }

    /// The format of the data file at `path`, whose text is `text` (from `readText`), as `auto` resolves it: by
    /// extension, and for JSON lines by the fields of the first record. Refuses a JSON-lines file without records.
    public static func format(of path: String, text: String) throws -> Recipe.DataFormat {
        try resolveFormat(.auto, path: path, text: text)
    }

    static func resolveFormat(_ requested: Recipe.DataFormat, path: String, text: String) throws -> Recipe.DataFormat {
        guard requested == .auto else { return requested }
        let ext = (path as NSString).pathExtension.lowercased()
        guard ext == "jsonl" || ext == "json" else { return .text }
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        guard let index = lines.firstIndex(where: { !$0.trimmingCharacters(in: .whitespaces).isEmpty }) else {
            throw RecipeError(file: path, "holds no records (a JSON-lines file with only blank lines)")
        }
        guard let object = (try? JSONValue.parse(Data(lines[index].utf8), file: path))?.object else {
            throw RecipeError(file: path, line: index + 1, "expected one JSON object per line")
        }
        if object["prompt"] != nil && object["completion"] != nil { return .completion }
        if object["text"] != nil { return .jsonl }
        if object["messages"] != nil { return .chat }
        throw RecipeError(file: path, line: index + 1,
                          "a JSON-lines record needs \"text\", \"prompt\" and \"completion\", or \"messages\"")
    }

    /// A chat record's messages: each an object with a string "role" and a string "content" (other fields go to the
    /// template as they are).
    static func chatMessages(_ object: [String: JSONValue], path: String, line: Int) throws -> [ChatTemplate.Message] {
        guard let list = object["messages"]?.array, !list.isEmpty else {
            throw RecipeError(file: path, line: line, "expected \"messages\": a non-empty list of {\"role\", \"content\"} objects")
        }
        return try list.enumerated().map { i, entry in
            guard let m = entry.object, let role = m["role"]?.string, let content = m["content"]?.string else {
                throw RecipeError(file: path, line: line, "message \(i + 1) needs a string \"role\" and a string \"content\"")
            }
            return ChatTemplate.Message(role: role, content: content, extra: m.filter { $0.key != "role" && $0.key != "content" })
        }
    }

    /// Concatenates records and cuts full windows; a stream shorter than one window becomes one padded sequence.
    static func pack(_ records: [TokenSequence], length: Int, pad: Int32) -> [TokenSequence] {
        var tokens: [Int32] = [], mask: [Bool] = []
        for r in records {
            tokens += r.tokens
            mask += r.targetMask
        }
        if tokens.count < length { return [fit(TokenSequence(tokens: tokens, targetMask: mask), length: length, pad: pad)] }
        return stride(from: 0, through: tokens.count - length, by: length).map {
            TokenSequence(tokens: Array(tokens[$0..<($0 + length)]), targetMask: Array(mask[$0..<($0 + length)]))
        }
    }

    /// Fills windows with whole records in order; a record that does not fit in what is left of a window
    /// starts the next one, and one longer than a window is cut into window-sized pieces. Every window says
    /// where each token's record (or piece of one) starts; padding counts as part of the last record.
    static func packWhole(_ records: [TokenSequence], length: Int, pad: Int32) -> [TokenSequence] {
        var out: [TokenSequence] = []
        var current = TokenSequence(tokens: [], targetMask: [], recordStarts: [])
        func flush() {
            if !current.tokens.isEmpty { out.append(fit(current, length: length, pad: pad)) }
            current = TokenSequence(tokens: [], targetMask: [], recordStarts: [])
        }
        for r in records {
            if r.tokens.count > length {
                flush()
                out += pack([r], length: length, pad: pad).map {
                    TokenSequence(tokens: $0.tokens, targetMask: $0.targetMask,
                                  recordStarts: [Int32](repeating: 0, count: length))
                }
                let cut = r.tokens.count / length * length
                if cut < r.tokens.count {
                    current = TokenSequence(tokens: Array(r.tokens[cut...]), targetMask: Array(r.targetMask[cut...]),
                                            recordStarts: [Int32](repeating: 0, count: r.tokens.count - cut))
                }
                continue
            }
            if current.tokens.count + r.tokens.count > length { flush() }
            current.recordStarts! += [Int32](repeating: Int32(current.tokens.count), count: r.tokens.count)
            current.tokens += r.tokens
            current.targetMask += r.targetMask
        }
        flush()
        return out
    }

    static func fit(_ r: TokenSequence, length: Int, pad: Int32) -> TokenSequence {
        let n = min(r.tokens.count, length)
        return TokenSequence(tokens: Array(r.tokens.prefix(n)) + [Int32](repeating: pad, count: length - n),
                             targetMask: Array(r.targetMask.prefix(n)) + [Bool](repeating: false, count: length - n),
                             recordStarts: r.recordStarts.map { s in Array(s.prefix(n)) + [Int32](repeating: s.prefix(n).last ?? 0, count: length - n) })
    }
}
