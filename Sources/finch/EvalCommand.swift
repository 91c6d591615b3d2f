import ArgumentParser
import Foundation
import FinchAdapters
import FinchFormats
import FinchModels
import FinchTraining

struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Score a text file: mean next-token cross-entropy over consecutive windows, and perplexity.",
        discussion: """
            A text file is tokenized whole, without special tokens (a JSON-lines file of {"text"} records: each \
            record with the tokenizer's special tokens and EOS, one after another), and cut into consecutive non-overlapping \
            windows of --seq-len tokens; every position after the first in a window is predicted from the \
            ones before it (transformers' labels=input_ids convention). A JSON-lines file of \
            {"prompt", "completion"} records is scored on the completions instead, with the exact-match \
            accuracy of greedy generation.
            """)

    @OptionGroup var source: ModelSource

    @Option(help: "The text file to score.")
    var data: String

    @Option(parsing: .unconditional, help: "Tokens per window of a text file (a prompt/completion file is scored one whole example at a time; this is not used there).")
    var seqLen: Int = 256

    @Option(parsing: .unconditional,
            help: "Score only the first K windows of a text file (on a prompt/completion file: as --max-examples).")
    var maxWindows: Int?

    @Option(parsing: .unconditional, help: "Score only the first K examples of a prompt/completion file.")
    var maxExamples: Int?

    @Option(parsing: .unconditional, help: "Windows per forward pass.")
    var batchSize: Int = 8

    @Option(help: "For a prompt/completion file: write each example's greedy completion to this JSON-lines file.")
    var predictions: String?

    @Flag(help: "Print one JSON object on stdout.")
    var json = false

    func validate() throws {
        guard seqLen >= 2 else { throw OptionError("--seq-len must be at least 2, got \(seqLen)") }
        guard batchSize >= 1 else { throw OptionError("--batch-size must be at least 1, got \(batchSize)") }
        if let maxWindows, maxWindows < 1 { throw OptionError("--max-windows must be at least 1, got \(maxWindows)") }
        if let maxExamples, maxExamples < 1 { throw OptionError("--max-examples must be at least 1, got \(maxExamples)") }
    }

    func run() throws {
        let (base, tokenizer, applied) = try source.load()
        // By extension and first record, as training reads it: a JSON-lines file is never scored as raw text.
        let text = try TrainingData.readText(data)
        let format = try TrainingData.format(of: data, text: text)
        if format == .completion || format == .chat {
            // A path that cannot be written fails now, not after minutes of generation.
            if let predictions, !FileManager.default.createFile(atPath: predictions, contents: nil) {
                throw RecipeError(file: predictions, "cannot create the predictions file (does its folder exist?)")
            }
            let r = try CompletionEvaluation.run(model: base.model, tokenizer: tokenizer, path: data,
                                                 prefix: applied?.attentionPrefix, maxExamples: maxExamples ?? maxWindows,
                                                 wholeCompletions: predictions != nil,
                                                 chat: format == .chat ? try chatFormat(base) : nil)
            if let predictions { try writePredictions(r.predictions, to: predictions) }
            // Wilson's 95 % interval for the exact match: how far another sample of examples could move it.
            let interval = PairedStatistics.wilson(successes: r.predictions.filter(\.correct).count, of: r.examples)
            if json {
                try Output.json(["loss": r.loss, "perplexity": Foundation.exp(r.loss), "exact_match": r.exactMatch,
                                 "exact_match_interval": [interval.low, interval.high],
                                 "examples": r.examples, "seconds": r.seconds])
            } else {
                print("completion loss \(Output.fixed(r.loss, 6))  perplexity \(Output.fixed(Foundation.exp(r.loss), 3))  "
                    + "exact match \(Output.fixed(100 * r.exactMatch, 1)) % [95 % interval \(Output.fixed(100 * interval.low, 1))–\(Output.fixed(100 * interval.high, 1))] "
                    + "of \(r.examples) examples (greedy)")
            }
            return
        }
        if predictions != nil || maxExamples != nil {
            let flag = predictions != nil ? "--predictions" : "--max-examples"
            throw RecipeError(file: data, "\(flag) needs a prompt/completion JSON-lines file; this one is scored as "
                + (format == .jsonl ? "\"text\" records" : "plain text"))
        }
        let positions = base.config.maxPositions - (applied?.attentionPrefix?.length ?? 0)
        guard seqLen <= positions else {
            let prefix = applied?.attentionPrefix.map { ", \(positions) after the adapter's \($0.length) virtual tokens" } ?? ""
            throw RecipeError(file: base.configPath,
                              "the model has \(base.config.maxPositions) positions\(prefix); --seq-len \(seqLen) does not fit")
        }
        // Plain text is one stream; "text" records are each tokenized as training reads them (special tokens, EOS)
        // and scored as one stream of records.
        let eos = Int32(base.config.eosTokenIds.first ?? 0)
        let records = try TrainingData.tokenize(text, format: format, path: data,
                                                tokenizer: tokenizer, endOfText: eos).records
        let tokens = records.flatMap { $0.tokens.map(Int.init) }
        let result = try Evaluation.windowedLoss(model: base.model, tokens: tokens, sequenceLength: seqLen,
                                                 maxWindows: maxWindows, batchSize: batchSize, prefix: applied?.attentionPrefix)
        if json {
            try Output.json([
                "loss": result.loss, "perplexity": result.perplexity, "windows": result.windows,
                "seq_len": result.sequenceLength, "predicted_tokens": result.predictedTokens,
                "tokens_per_second": result.tokensPerSecond, "seconds": result.seconds,
            ])
        } else {
            print("loss \(Output.fixed(result.loss, 6))  perplexity \(Output.fixed(result.perplexity, 3))  "
                + "(\(result.windows) window\(result.windows == 1 ? "" : "s") of \(result.sequenceLength) tokens, \(result.predictedTokens) predicted, "
                + "\(Output.fixed(result.tokensPerSecond, 0)) tokens/s)")
        }
    }

    /// The model's chat format, or an error naming what is missing.
    private func chatFormat(_ base: PretrainedModel) throws -> ChatFormat {
        guard let format = try base.chatFormat() else {
            throw RecipeError(file: data, "holds chat records (\"messages\"), but \(source.model) has no chat template "
                              + "(tokenizer.chat_template in a GGUF file, chat_template in tokenizer_config.json)")
        }
        return format
    }

    private func writePredictions(_ rows: [CompletionEvaluation.Prediction], to path: String) throws {
        var text = ""
        for row in rows {
            let record: [String: Any] = ["prompt": row.prompt, "expected": row.expected, "generated": row.generated,
                                         "correct": row.correct]
            let data = try JSONSerialization.data(withJSONObject: record,
                                                  options: [.sortedKeys, .withoutEscapingSlashes])
            text += String(decoding: data, as: UTF8.self) + "\n"
        }
        do {
            try text.write(toFile: path, atomically: true, encoding: .utf8)
        } catch {
            throw RecipeError(file: path, "cannot write the predictions: \(error.localizedDescription)")
        }
    }
}
