import Foundation
import FinchFormats
import FinchModels
import FinchNN
import FinchTensor

/// Scores a prompt/completion JSON-lines file: the mean cross-entropy of the completion tokens (and the
/// EOS after them) given the prompt, and the exact-match accuracy of greedy generation — the generated
/// text, up to EOS, equal to the completion after trimming surrounding whitespace.
public enum CompletionEvaluation {
    public struct Result: Sendable {
        public let loss: Double
        public let exactMatch: Double
        public let examples: Int
        public let seconds: Double
        /// Each example's greedy completion, in file order.
        public let predictions: [Prediction]
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
    public static func run(model: any CausalLanguageModel, tokenizer: Tokenizer, path: String, prefix: AttentionPrefix?,
                           maxExamples: Int? = nil, maxNewTokens: Int = 64, wholeCompletions: Bool = true) throws -> Result {
        let all = try examples(path: path)
        let chosen = Array(all.prefix(maxExamples ?? all.count))
        guard !chosen.isEmpty else { throw RecipeError(file: path, "holds no examples") }
        let eos = model.config.eosTokenIds.first ?? 0
        // Positions a prompt, its completion and what is generated may use (a prefix's virtual tokens take the first).
        let positions = model.config.maxPositions - (prefix?.length ?? 0)
        let start = Date()
        var total = 0.0, count = 0
        var predictions: [Prediction] = []
        try GradientMode.withoutGradients {
            for example in chosen {
                let p = tokenizer.encode(example.prompt, addSpecialTokens: true)
                let c = tokenizer.encode(example.completion, addSpecialTokens: false) + [eos]
                let tokens = (p + c).map(Int32.init)
                guard tokens.count <= positions else {
                    throw RecipeError(file: path, line: example.line,
                                      "the prompt and completion are \(tokens.count) tokens (with EOS); the model has \(positions) positions")
                }
                let mask = [Bool](repeating: false, count: p.count) + [Bool](repeating: true, count: c.count)
                let logits = try model.logits(tokens, batch: 1, length: tokens.count, cache: nil, prefix: prefix)
                let loss = try Losses.causalLanguageModel(logits: logits, tokens: tokens, mask: mask)
                total += Double(try loss.item()) * Double(c.count)
                count += c.count
                let generated = try Generation.generate(
                    model: model, prompt: p, options: GenerationOptions(maxTokens: min(maxNewTokens, positions - p.count + 1),
                                                                    stopTokens: Set(model.config.eosTokenIds)),
                    prefix: prefix, continuing: { produced in
                        wholeCompletions || stillMatching(tokenizer.decode(produced, skipSpecialTokens: true), example.completion)
                    })
                let text = tokenizer.decode(generated.filter { $0 != eos }, skipSpecialTokens: true)
                predictions.append(Prediction(prompt: example.prompt, expected: example.completion, generated: text))
            }
        }
        let correct = predictions.filter(\.correct).count
        return Result(loss: total / Double(max(count, 1)), exactMatch: Double(correct) / Double(chosen.count),
                      examples: chosen.count, seconds: Date().timeIntervalSince(start), predictions: predictions)
    }

    /// Whether text generated so far can still become `expected` (both compared as `Prediction.correct` does): the
    /// text, without surrounding whitespace and an unfinished character, begins `expected`'s.
    static func stillMatching(_ text: String, _ expected: String) -> Bool {
        var partial = Substring(text)
        while partial.hasSuffix("\u{FFFD}") { partial = partial.dropLast() }
        let sofar = partial.trimmingCharacters(in: .whitespacesAndNewlines)
        return expected.trimmingCharacters(in: .whitespacesAndNewlines).hasPrefix(sofar)
    }
}
