import ArgumentParser
import Foundation
import FinchFormats
import FinchTraining

struct TokenizerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenizer", abstract: "Tokenizer tools.", subcommands: [Train.self])

    struct Train: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "train",
            abstract: "Learn a byte-level BPE tokenizer (GPT-2 style) from text files and write tokenizer.json.")

        @Option(name: .customLong("corpus"), help: "A UTF-8 text file to learn from (repeat for several).")
        var corpora: [String]

        @Option(parsing: .unconditional, help: "Vocabulary size: special tokens + 256 byte symbols + merges.")
        var vocabSize: Int = 2048

        @Option(name: .customLong("special"), help: "A special token (repeat for several; default <|endoftext|>).")
        var specials: [String] = []

        @Option(help: "Where to write tokenizer.json.")
        var out: String

        func run() throws {
            guard !corpora.isEmpty else { throw ValidationError("give at least one --corpus file") }
            let trainer = try BPETrainer(vocabularySize: vocabSize,
                                         specialTokens: specials.isEmpty ? ["<|endoftext|>"] : specials)
            let start = Date()
            let texts = try corpora.map { try TrainingData.readText($0) }
            guard texts.contains(where: { !$0.allSatisfy(\.isWhitespace) }) else {
                throw FormatError(file: corpora.joined(separator: ", "),
                                  "no text to learn from (the corpus is empty or only whitespace)")
            }
            let words = BPETrainer.countWords(texts)
            let result = trainer.train(words: words)
            try AtomicFile.write(try trainer.tokenizerJSON(result), to: out)
            print("\(out): \(result.tokens.count) tokens (\(result.merges.count) merges) from \(words.count) distinct words in \(Output.fixed(Date().timeIntervalSince(start), 1)) s")
        }
    }
}
