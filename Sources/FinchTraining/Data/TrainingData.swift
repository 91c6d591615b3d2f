import Foundation
import FinchFormats

/// One training sequence: `tokens` and, per token, whether it is a prediction target (false on prompts
/// of completion data and on padding); for JSON-lines records packed into one window, where each token's
/// record starts (each record attends only to itself, as it would alone).
public struct TokenSequence: Equatable, Sendable {
    public var tokens: [Int32]
    public var targetMask: [Bool]
    public var recordStarts: [Int32]? = nil
}

/// A data file turned into fixed-length token sequences.
///
/// - text (`.txt`): the whole file tokenized without special tokens, cut into consecutive windows.
/// - jsonl (`{"text": …}` per line): each record with the tokenizer's special tokens and an EOS.
/// - completion (`{"prompt": …, "completion": …}` per line): the loss falls on the completion (and its EOS) only.
/// With packing, JSON-lines records are placed whole into windows, in file order, as many as fit; the rest
/// of a window is padding, and only a record longer than a window is cut across windows (a prompt is never
/// separated from its completion by a window edge); a record attends only to itself, not to the records
/// before it in its window. Without packing, each record is one sequence, truncated or padded. Padding is
/// never a target. Plain text is one stream cut into consecutive windows.
public struct TrainingData: Sendable {
    public let path: String
    public let format: Recipe.DataFormat
    public let sequences: [TokenSequence]
    public let sequenceLength: Int

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

    public static func load(path: String, format requested: Recipe.DataFormat, tokenizer: Tokenizer, sequenceLength: Int,
                            packing: Bool, endOfText: Int32) throws -> TrainingData {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw RecipeError(file: path, "cannot read the data file")
        }
        guard let text = String(data: data, encoding: .utf8) else { throw RecipeError(file: path, "is not UTF-8 text") }
        let format = try resolveFormat(requested, path: path, text: text)
        var records: [TokenSequence] = []
        var lines: [Int] = []  // each JSON-lines record's line in the file
        switch format {
        case .text, .auto:
            let ids = tokenizer.encode(text, addSpecialTokens: false).map(Int32.init)
            records = [TokenSequence(tokens: ids, targetMask: [Bool](repeating: true, count: ids.count))]
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
        guard records.contains(where: { $0.tokens.count >= 2 }) else {
            throw RecipeError(file: path, "holds fewer than 2 tokens; nothing to train on")
        }
        if !packing, format == .completion {
            // Truncated to a window, a record whose prompt fills it keeps no completion token: it would train on nothing.
            let lost = records.indices.filter { !records[$0].targetMask.prefix(sequenceLength).contains(true) }
            if let first = lost.first {
                throw RecipeError(file: path, line: lines[first],
                                  "the prompt is \(records[first].targetMask.firstIndex(of: true) ?? records[first].tokens.count) tokens, so with "
                                  + "data.seq_len \(sequenceLength) and data.packing false no completion token is left to train on"
                                  + (lost.count > 1 ? " (\(lost.count) records are so)" : ""))
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

    static func resolveFormat(_ requested: Recipe.DataFormat, path: String, text: String) throws -> Recipe.DataFormat {
        guard requested == .auto else { return requested }
        let ext = (path as NSString).pathExtension.lowercased()
        guard ext == "jsonl" || ext == "json" else { return .text }
        let first = text.split(separator: "\n").first { !$0.trimmingCharacters(in: .whitespaces).isEmpty }
        guard let first else { throw RecipeError(file: path, "holds no records; nothing to train on") }
        guard let object = (try? JSONValue.parse(Data(first.utf8), file: path))?.object else {
            throw RecipeError(file: path, line: 1, "expected one JSON object per line")
        }
        if object["prompt"] != nil && object["completion"] != nil { return .completion }
        if object["text"] != nil { return .jsonl }
        throw RecipeError(file: path, line: 1, "a JSON-lines record needs \"text\", or \"prompt\" and \"completion\"")
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
                    TokenSequence(tokens: $0.tokens, targetMask: $0.targetMask, recordStarts: [Int32](repeating: 0, count: length))
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
