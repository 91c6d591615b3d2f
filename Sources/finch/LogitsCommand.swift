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

    @Option(help: "Compute the logits as decoding does: the first N tokens in one call, then each following token alone through the key/value cache (over Q4_0, Q4_1 or Q8_0 blocks with 8-bit activations, as in `finch generate`).")
    var decode: Int?

    @Flag(help: "With --decode: keep every product in float32 (see `finch generate --float-activations`).")
    var floatActivations = false

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
        if floatActivations && decode == nil { throw OptionError("--float-activations is about --decode: give --decode N too") }
        let rows: [[Double]]
        if let decode {
            guard decode >= 1, decode <= tokens.count else {
                throw OptionError("--decode must be from 1 to the \(tokens.count) tokens given, got \(decode)")
            }
            rows = try GradientMode.withoutGradients {
                try QuantizedMatrix.withQuantizedActivations(!floatActivations) {
                    let cache = base.model.makeCache(), prefix = applied?.attentionPrefix
                    let first = try base.model.logits(tokens.prefix(decode).map(Int32.init), batch: 1, length: decode,
                                                      cache: cache, prefix: prefix)
                    let v = first.shape[2], values = first.scalars
                    var rows = (0..<decode).map { p in values[(p * v)..<((p + 1) * v)].map(Double.init) }
                    for token in tokens.dropFirst(decode) {
                        rows.append(try base.model.lastLogits([Int32(token)], cache: cache, prefix: prefix).map(Double.init))
                    }
                    return rows
                }
            }
        } else {
            let logits = try GradientMode.withoutGradients {
                try base.model.logits(tokens.map(Int32.init), batch: 1, length: tokens.count, cache: nil,
                                      prefix: applied?.attentionPrefix)
            }
            let vocabulary = logits.shape[2], values = logits.scalars
            rows = (0..<tokens.count).map { p in values[(p * vocabulary)..<((p + 1) * vocabulary)].map(Double.init) }
        }
        try Output.json(["ids": tokens, "logits": rows])
    }
}
