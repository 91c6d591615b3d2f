import ArgumentParser
import Foundation
import FinchFormats
import FinchModels
import FinchTensor

struct LogitsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logits",
        abstract: "Print the next-token logits at every position of a text, to check a model against another runtime.",
        discussion: """
            One JSON object on stdout: the token ids and, for each position, the logits of every vocabulary entry \
            (float32 printed exactly). scripts/reference/compare_llamacpp.py compares them with llama.cpp's.
            """)

    @OptionGroup var source: ModelSource

    @Option(parsing: .unconditional, help: "The text (tokenized with the model's tokenizer, its special tokens added).")
    var text: String?

    @Option(help: "Token ids instead of a text, separated by commas.")
    var ids: String?

    func run() throws {
        let (base, tokenizer, applied) = try source.load()
        let tokens: [Int]
        switch (text, ids) {
        case (let text?, nil): tokens = tokenizer.encode(text, addSpecialTokens: true)
        case (nil, let list?):
            let parsed = list.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard !parsed.isEmpty, parsed.allSatisfy({ $0 != nil && $0! >= 0 && $0! < base.config.vocabularySize }) else {
                throw OptionError("--ids must be token ids from 0 to \(base.config.vocabularySize - 1) separated by commas, got '\(list)'")
            }
            tokens = parsed.map { $0! }
        default: throw OptionError("give --text or --ids (one of them)")
        }
        guard !tokens.isEmpty else { throw OptionError("the text has no tokens") }
        let logits = try GradientMode.withoutGradients {
            try base.model.logits(tokens.map(Int32.init), batch: 1, length: tokens.count, cache: nil,
                                  prefix: applied?.attentionPrefix)
        }
        let vocabulary = logits.shape[2], values = logits.scalars
        let rows: [[Double]] = (0..<tokens.count).map { p in values[(p * vocabulary)..<((p + 1) * vocabulary)].map(Double.init) }
        try Output.json(["ids": tokens, "logits": rows])
    }
}
