import Foundation
import FinchFormats
import FinchModels
import FinchNN
import FinchTensor

/// Scores a prompt/completion JSON-lines file, or a chat file by its last assistant reply: the mean cross-entropy
/// of the completion tokens (and the end token after them) given the prompt, and the exact-match accuracy of greedy
/// generation — the generated text, up to the end token, equal to the completion after trimming surrounding
/// whitespace.
public enum CompletionEvaluation {
    public struct Result: Sendable {
        public let loss: Double
        public let exactMatch: Double
        public let examples: Int
        public let seconds: Double
        /// Each example's greedy completion, in file order.
        public let predictions: [Prediction]
        /// With `perExample`: each example's summed completion-token losses and its number of completion tokens,
        /// in file order (what a paired comparison of two models resamples); empty otherwise.
        public var exampleLossSums: [Double] = []
        public var exampleTokens: [Int] = []
    }

    public struct Prediction: Sendable {
        public let prompt: String
        public let expected: String
        public let generated: String
        public var correct: Bool {
            generated.trimmingCharacters(in: .whitespacesAndNewlines) == expected.trimmingCharacters(in: .whitespacesAndNewlines)
        }
    }

    public struct Example: Sendable {
        public let prompt: String
        public let completion: String
        /// Its line in the file (1-based), for errors.
        public var line: Int = 0
    }

    /// An example as the model sees it: the prompt's ids, the completion's ids through its end token, the text the
    /// completion must equal, and the tokens that end a generated one.
    struct Scored {
        let prompt: String
        let promptIds: [Int]
        let completionIds: [Int]
        let expected: String
        let stopTokens: Set<Int>
        let line: Int
    }

    /// A prompt/completion file's examples with the prompt's special tokens and EOS after the completion.
    static func scored(_ examples: [Example], tokenizer: Tokenizer, model: any CausalLanguageModel) -> [Scored] {
        let eos = model.config.eosTokenIds.first ?? 0
        return examples.map { e in
            Scored(prompt: e.prompt, promptIds: tokenizer.encode(e.prompt, addSpecialTokens: true),
                   completionIds: tokenizer.encode(e.completion, addSpecialTokens: false) + [eos], expected: e.completion,
                   stopTokens: Set(model.config.eosTokenIds), line: e.line)
        }
    }

    /// A chat file's conversations, each scored on its last assistant reply: the prompt is everything before the
    /// reply (the template's generation prompt included), the completion the reply's tokens through its end-of-turn
    /// token.
    static func scored(chatFile path: String, format: ChatFormat, tokenizer: Tokenizer, model: any CausalLanguageModel,
                       limit: Int?) throws -> [Scored] {
        var out: [Scored] = []
        let text = try TrainingData.readText(path)
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            if let limit, out.count >= limit { break }
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty { continue }
            guard let object = (try? JSONValue.parse(Data(trimmed.utf8), file: path))?.object else {
                throw RecipeError(file: path, line: index + 1, "expected one JSON object per line")
            }
            let messages = try TrainingData.chatMessages(object, path: path, line: index + 1)
            guard let last = messages.lastIndex(where: { $0.role == "assistant" }) else {
                throw RecipeError(file: path, line: index + 1, "the conversation has no assistant reply to score")
            }
            let encoded: (ids: [Int], targets: [Bool])
            do {
                encoded = try format.encode(Array(messages[...last]), tokenizer: tokenizer, loss: .lastAssistant)
            } catch let error as ChatTemplateError {
                throw RecipeError(file: path, line: index + 1, error.message)
            }
            guard let first = encoded.targets.firstIndex(of: true) else {
                throw RecipeError(file: path, line: index + 1, "the last assistant reply has no tokens to score")
            }
            let end = encoded.targets[first...].firstIndex(of: false) ?? encoded.targets.count
            let completion = Array(encoded.ids[first..<end])
            out.append(Scored(prompt: last > 0 ? messages[last - 1].content : "", promptIds: Array(encoded.ids[..<first]),
                              completionIds: completion, expected: messages[last].content,
                              stopTokens: Set(model.config.eosTokenIds).union([completion.last!]), line: index + 1))
        }
        return out
    }

    public static func examples(path: String) throws -> [Example] {
        guard let text = FileManager.default.contents(atPath: path).flatMap({ String(data: $0, encoding: .utf8) }) else {
            throw RecipeError(file: path, "cannot read the file as UTF-8 text")
        }
        var out: [Example] = []
        for (i, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty { continue }
            guard let o = (try? JSONValue.parse(Data(trimmed.utf8), file: path))?.object,
                  let p = o["prompt"]?.string, let c = o["completion"]?.string else {
                throw RecipeError(file: path, line: i + 1, "expected {\"prompt\": …, \"completion\": …}")
            }
            out.append(Example(prompt: p, completion: c, line: i + 1))
        }
        return out
    }

    /// With `wholeCompletions` false, generation stops as soon as the text can no longer equal the expected completion
    /// (the exact match is the same; the predictions then hold the text up to where it departed).
    /// `chat`: the model's chat format, to score a chat file (nil: a prompt/completion file).
    public static func run(model: any CausalLanguageModel, tokenizer: Tokenizer, path: String, prefix: AttentionPrefix?,
                           maxExamples: Int? = nil, maxNewTokens: Int = 64, wholeCompletions: Bool = true,
                           chat: ChatFormat? = nil, perExample: Bool = false) throws -> Result {
        let chosen: [Scored]
        if let chat {
            chosen = try scored(chatFile: path, format: chat, tokenizer: tokenizer, model: model, limit: maxExamples)
        } else {
            let all = try examples(path: path)
            chosen = scored(Array(all.prefix(maxExamples ?? all.count)), tokenizer: tokenizer, model: model)
        }
        guard !chosen.isEmpty else { throw RecipeError(file: path, "holds no examples") }
        // Positions a prompt, its completion and what is generated may use (a prefix's virtual tokens take the first).
        let positions = model.config.maxPositions - (prefix?.length ?? 0)
        let start = Date()
        var total = 0.0, count = 0
        var generated = [String](repeating: "", count: chosen.count)
        var exampleLossSums = [Double](repeating: 0, count: perExample ? chosen.count : 0)
        try GradientMode.withoutGradients {
            for example in chosen {
                guard !example.promptIds.isEmpty else {
                    throw RecipeError(file: path, line: example.line, "the prompt has no tokens to generate from")
                }
                guard example.promptIds.count + example.completionIds.count <= positions else {
                    throw RecipeError(file: path, line: example.line, "the prompt and completion are "
                                      + "\(example.promptIds.count + example.completionIds.count) tokens (with the end token); the model has \(positions) positions")
                }
            }
            // The loss in batches of examples of similar whole length, padded on the right (causal attention keeps
            // the padding out of every real position): each position's target is the next token where that token
            // belongs to the completion.
            for batch in batches(byLength: chosen.map { $0.promptIds.count + $0.completionIds.count }) {
                let length = batch.map { chosen[$0].promptIds.count + chosen[$0].completionIds.count }.max()!
                var tokens: [Int32] = [], targets: [Int32] = []
                var scored = 0
                for index in batch {
                    let p = chosen[index].promptIds, c = chosen[index].completionIds
                    let pad = length - p.count - c.count
                    tokens += (p + c).map(Int32.init) + [Int32](repeating: Int32(c.last!), count: pad)
                    targets += [Int32](repeating: Int32(Losses.ignoreIndex), count: p.count - 1) + c.map(Int32.init)
                        + [Int32](repeating: Int32(Losses.ignoreIndex), count: 1 + pad)
                    scored += c.count
                }
                let loss = try model.loss(tokens, batch: batch.count, length: length, targets: targets, prefix: prefix)
                total += Double(try loss.item()) * Double(scored)
                count += scored
                if perExample {
                    let positions = try model.positionLosses(tokens, batch: batch.count, length: length, targets: targets, prefix: prefix)
                    for (row, index) in batch.enumerated() {
                        exampleLossSums[index] = positions[(row * length)..<(row * length + length)].reduce(0, +)
                    }
                }
            }
            // Greedy generation in batches of prompts of similar length (`Generation.greedy` pads them on the left).
            for batch in batches(byLength: chosen.map(\.promptIds.count)) {
                let outputs = try Generation.greedy(
                    model: model, prompts: batch.map { chosen[$0].promptIds },
                    maxTokens: batch.map { min(maxNewTokens, positions - chosen[$0].promptIds.count + 1) },
                    stopTokens: batch.map { chosen[$0].stopTokens },
                    prefix: prefix, continuing: { row, produced in
                        wholeCompletions || stillMatching(tokenizer.decode(produced, skipSpecialTokens: true),
                                                          chosen[batch[row]].expected)
                    })
                for (row, index) in batch.enumerated() {
                    let stops = chosen[index].stopTokens
                    generated[index] = tokenizer.decode(outputs[row].filter { !stops.contains($0) }, skipSpecialTokens: true)
                }
            }
        }
        let predictions = chosen.indices.map {
            Prediction(prompt: chosen[$0].prompt, expected: chosen[$0].expected, generated: generated[$0])
        }
        let correct = predictions.filter(\.correct).count
        var result = Result(loss: total / Double(max(count, 1)), exactMatch: Double(correct) / Double(chosen.count),
                            examples: chosen.count, seconds: Date().timeIntervalSince(start), predictions: predictions)
        if perExample {
            result.exampleLossSums = exampleLossSums
            result.exampleTokens = chosen.map(\.completionIds.count)
        }
        return result
    }

    /// The examples' indices sorted by `lengths` (the prompts' for `Generation.greedy`, the whole examples' for the
    /// loss; file order among equal ones) and cut into batches of at most `batchSize`, so a batch's rows need little
    /// padding.
    static func batches(byLength lengths: [Int]) -> [[Int]] {
        let order = lengths.indices.sorted { (lengths[$0], $0) < (lengths[$1], $1) }
        return stride(from: 0, to: order.count, by: batchSize).map { Array(order[$0..<min($0 + batchSize, order.count)]) }
    }

    /// Examples run together: enough that a decoding step reads the weights once for many tokens, few enough that
    /// the key/value cache and the head's logits stay small.
    static let batchSize = 64

    /// Whether text generated so far can still become `expected` (both compared as `Prediction.correct` does): the
    /// text, without surrounding whitespace and an unfinished character, begins `expected`'s.
    static func stillMatching(_ text: String, _ expected: String) -> Bool {
        var partial = Substring(text)
        while partial.hasSuffix("\u{FFFD}") { partial = partial.dropLast() }
        let sofar = partial.trimmingCharacters(in: .whitespacesAndNewlines)
        return expected.trimmingCharacters(in: .whitespacesAndNewlines).hasPrefix(sofar)
    }
}
