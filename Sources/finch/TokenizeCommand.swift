import ArgumentParser
import Foundation
import FinchModels
import FinchFormats

struct TokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize", abstract: "Show the token ids and pieces of a text.")

    @Option(help: "A Hugging Face model folder, a tokenizer.json file, or a GGUF file (its tokenizer metadata).")
    var model: String

    @Option(parsing: .unconditional, help: "The text to tokenize.")
    var text: String

    @Flag(help: "Leave out the special tokens the post-processor adds (such as LLaMA's <s>).")
    var noSpecialTokens = false

    @Flag(help: "Print one JSON object on stdout.")
    var json = false

    func run() throws {
        let tokenizer: Tokenizer
        if PretrainedModel.isFile(model), !model.hasSuffix(".json") {
            tokenizer = try Tokenizer(gguf: try GGUFFile(path: model))
        } else {
            tokenizer = try Tokenizer(path: model.hasSuffix(".json") ? model : model + "/tokenizer.json")
        }
        let ids = tokenizer.encode(text, addSpecialTokens: !noSpecialTokens)
        let pieces = tokenizer.pieces(ids)
        if json {
            try Output.json(["ids": ids, "pieces": pieces, "count": ids.count])
        } else {
            print("\(ids.count) tokens")
            for (id, piece) in zip(ids, pieces) { print("\(id)\t\(piece.debugDescription)") }
        }
    }
}
