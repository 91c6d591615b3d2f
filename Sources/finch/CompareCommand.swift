import ArgumentParser
import Foundation
import FinchAdapters
import FinchFormats
import FinchModels
import FinchTraining

struct CompareCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compare",
        abstract: "A/B test two models or adapters on the same examples: each metric for both, the difference with a 95 % interval from a paired test, and which is better or that the data cannot tell.",
        discussion: """
            Both are scored on every example of a prompt/completion (or chat) JSON-lines file: the completion loss, \
            compared by a paired bootstrap over examples (the difference of per-token mean losses, B − A, and its \
            2.5th–97.5th percentiles over --resamples draws), and greedy exact match, compared by McNemar's exact test \
            on the examples only one of them gets right, with the paired difference's interval. A winner is named only \
            when the interval excludes zero (for exact match, and McNemar's p < 0.05). On plain text (or "text" \
            records) the examples are windows of --seq-len tokens and the loss is the only metric.
            """)

    @Option(help: "Model A: a Hugging Face folder or a GGUF file.")
    var model: String

    @Option(name: .customLong("adapter-a"), help: "A PEFT adapter applied to model A.")
    var adapterA: String?

    @Option(name: .customLong("model-b"), help: "Model B (default: the same as --model).")
    var modelB: String?

    @Option(name: .customLong("adapter-b"), help: "A PEFT adapter applied to model B.")
    var adapterB: String?

    @Option(help: "The evaluation data: a prompt/completion or chat JSON-lines file.")
    var data: String

    @Option(name: .customLong("max-examples"), help: "Score only the first N examples (windows, for text).")
    var maxExamples: Int?

    @Option(name: .customLong("seq-len"), help: "For text: the window length in tokens.")
    var seqLen: Int = 256

    @Option(help: "Bootstrap resamples for the loss's interval.")
    var resamples: Int = 10_000

    @Option(help: "Seed of the bootstrap's draws.")
    var seed: UInt64 = 0

    @Option(help: "Hold both frozen bases quantised (as --quantize elsewhere).")
    var quantize: String = BaseQuantization.none.rawValue

    @Flag(help: "Print one JSON object on stdout.")
    var json = false

    func validate() throws {
        guard resamples >= 100 else { throw OptionError("--resamples must be at least 100, got \(resamples)") }
        if let maxExamples, maxExamples < 1 { throw OptionError("--max-examples must be at least 1, got \(maxExamples)") }
        guard adapterA != nil || adapterB != nil || (modelB != nil && modelB != model) else {
            throw OptionError("A and B are the same model: give --adapter-a, --adapter-b or --model-b")
        }
    }

    func run() throws {
        let text = try TrainingData.readText(data)
        let format = try TrainingData.format(of: data, text: text)
        guard format == .completion || format == .chat else { return try compareText(text, format: format) }
        let a = try score(model: model, adapter: adapterA, format: format)
        let b = try score(model: modelB ?? model, adapter: adapterB, format: format)
        guard a.examples == b.examples else { throw RecipeError(file: data, "A scored \(a.examples) examples and B \(b.examples)") }
        let n = a.examples
        let rightA = a.predictions.map(\.correct), rightB = b.predictions.map(\.correct)
        let onlyA = zip(rightA, rightB).filter { $0 && !$1 }.count, onlyB = zip(rightA, rightB).filter { !$0 && $1 }.count
        let mcnemar = PairedStatistics.mcnemarExact(onlyA: onlyA, onlyB: onlyB)
        let match = PairedStatistics.pairedProportionDifference(onlyA: onlyA, onlyB: onlyB, n: n)
        let loss = PairedStatistics.pairedBootstrap(lossSumsA: a.exampleLossSums, lossSumsB: b.exampleLossSums,
                                                    tokens: a.exampleTokens, resamples: resamples, seed: seed)
        let lossVerdict = loss.high < 0 ? "B" : loss.low > 0 ? "A" : nil  // lower loss is better
        let matchVerdict = mcnemar.p < 0.05 ? (match.low > 0 ? "B" : match.high < 0 ? "A" : nil) : nil
        let meanA = a.exampleLossSums.reduce(0, +) / Double(max(a.exampleTokens.reduce(0, +), 1))
        let meanB = b.exampleLossSums.reduce(0, +) / Double(max(b.exampleTokens.reduce(0, +), 1))
        if json {
            try Output.json([
                "examples": n,
                "a": ["model": model, "adapter": adapterA as Any, "loss": meanA, "exact_match": a.exactMatch],
                "b": ["model": modelB ?? model, "adapter": adapterB as Any, "loss": meanB, "exact_match": b.exactMatch],
                "loss": ["difference": loss.difference, "interval": [loss.low, loss.high], "test": "paired bootstrap",
                         "resamples": resamples, "better": lossVerdict as Any],
                "exact_match": ["difference": match.difference, "interval": [match.low, match.high],
                                "mcnemar_p": mcnemar.p, "only_a": onlyA, "only_b": onlyB, "better": matchVerdict as Any],
            ])
            return
        }
        func verdict(_ v: String?) -> String { v.map { "\($0) is better" } ?? "the data cannot tell" }
        print("A: \(model)\(adapterA.map { " + \($0)" } ?? "")")
        print("B: \(modelB ?? model)\(adapterB.map { " + \($0)" } ?? "")")
        print("\(n) examples of \(data)")
        print("completion loss  A \(Output.fixed(meanA, 4))  B \(Output.fixed(meanB, 4))  B − A \(Output.fixed(loss.difference, 4)) "
            + "[\(Output.fixed(loss.low, 4)), \(Output.fixed(loss.high, 4))] (paired bootstrap, \(resamples) resamples): \(verdict(lossVerdict))")
        print("exact match      A \(Output.fixed(100 * a.exactMatch, 1)) %  B \(Output.fixed(100 * b.exactMatch, 1)) %  B − A "
            + "\(Output.fixed(100 * match.difference, 1)) points [\(Output.fixed(100 * match.low, 1)), \(Output.fixed(100 * match.high, 1))], "
            + "McNemar p \(Output.fixed(mcnemar.p, 4)) (right only for A: \(onlyA), only for B: \(onlyB)): \(verdict(matchVerdict))")
    }

    /// Plain text: both models' losses on the same windows, compared by the paired bootstrap.
    private func compareText(_ text: String, format: Recipe.DataFormat) throws {
        guard seqLen >= 2 else { throw OptionError("--seq-len must be at least 2, got \(seqLen)") }
        func windows(_ path: String, _ adapter: String?) throws -> (sums: [Double], tokens: [Int]) {
            let base = try PretrainedModel.load(path, requireTokenizer: true, quantization: try BaseQuantization(option: quantize))
            let applied = try adapter.map { try PEFTFormat.load($0, into: base.model) }
            let eos = Int32(base.config.eosTokenIds.first ?? 0)
            let records = try TrainingData.tokenize(text, format: format, path: data, tokenizer: try base.requireTokenizer(),
                                                    endOfText: eos).records
            return try Evaluation.windowLosses(model: base.model, tokens: records.flatMap { $0.tokens.map(Int.init) },
                                               sequenceLength: seqLen, maxWindows: maxExamples, prefix: applied?.attentionPrefix)
        }
        let a = try windows(model, adapterA), b = try windows(modelB ?? model, adapterB)
        guard a.tokens == b.tokens else {
            throw RecipeError(file: data, "A and B cut the text into different windows (\(a.tokens.count) and \(b.tokens.count)): do they share a tokenizer?")
        }
        let loss = PairedStatistics.pairedBootstrap(lossSumsA: a.sums, lossSumsB: b.sums, tokens: a.tokens, resamples: resamples, seed: seed)
        let count = Double(a.tokens.reduce(0, +))
        let meanA = a.sums.reduce(0, +) / count, meanB = b.sums.reduce(0, +) / count
        let verdict = loss.high < 0 ? "B" : loss.low > 0 ? "A" : nil
        if json {
            try Output.json([
                "windows": a.tokens.count, "seq_len": seqLen,
                "a": ["model": model, "adapter": adapterA as Any, "loss": meanA, "perplexity": Foundation.exp(meanA)],
                "b": ["model": modelB ?? model, "adapter": adapterB as Any, "loss": meanB, "perplexity": Foundation.exp(meanB)],
                "loss": ["difference": loss.difference, "interval": [loss.low, loss.high], "test": "paired bootstrap",
                         "resamples": resamples, "better": verdict as Any],
            ])
            return
        }
        print("A: \(model)\(adapterA.map { " + \($0)" } ?? "")")
        print("B: \(modelB ?? model)\(adapterB.map { " + \($0)" } ?? "")")
        print("\(a.tokens.count) windows of \(seqLen) tokens of \(data)")
        print("loss  A \(Output.fixed(meanA, 4)) (perplexity \(Output.fixed(Foundation.exp(meanA), 2)))  B \(Output.fixed(meanB, 4)) "
            + "(perplexity \(Output.fixed(Foundation.exp(meanB), 2)))  B − A \(Output.fixed(loss.difference, 4)) "
            + "[\(Output.fixed(loss.low, 4)), \(Output.fixed(loss.high, 4))] (paired bootstrap over windows, \(resamples) resamples): "
            + (verdict.map { "\($0) is better" } ?? "the data cannot tell"))
    }

    private func score(model path: String, adapter: String?, format: Recipe.DataFormat) throws -> CompletionEvaluation.Result {
        let base = try PretrainedModel.load(path, requireTokenizer: true, quantization: try BaseQuantization(option: quantize))
        let applied = try adapter.map { try PEFTFormat.load($0, into: base.model) }
        var chat: ChatFormat?
        if format == .chat {
            guard let template = try base.chatFormat() else {
                throw RecipeError(file: data, "holds chat records (\"messages\"), but \(path) has no chat template")
            }
            chat = template
        }
        return try CompletionEvaluation.run(model: base.model, tokenizer: try base.requireTokenizer(), path: data,
                                            prefix: applied?.attentionPrefix, maxExamples: maxExamples, chat: chat,
                                            perExample: true)
    }
}
