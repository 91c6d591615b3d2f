import Foundation
import ArgumentParser
import FinchAdapters
import FinchFormats
import FinchModels

/// Output helpers shared by the commands.
enum Output {
    /// One JSON object on stdout, keys sorted.
    static func json(_ object: [String: Any]) throws {
        let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
        print(String(decoding: data, as: UTF8.self))
    }

    static func standardError(_ text: String) {
        FileHandle.standardError.write(Data((text + "\n").utf8))
    }

    static func fixed(_ v: Double, _ digits: Int) -> String { String(format: "%.\(digits)f", v) }
}

/// An option's value out of its range: one line naming the option, the range and the value (ArgumentParser's
/// ValidationError adds the whole usage text after it).
struct OptionError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// `--model` and `--adapter`, shared by the commands that run a model.
struct ModelSource: ParsableArguments {
    @Option(help: "A Hugging Face model folder (config.json, model.safetensors, tokenizer.json) or a GGUF file.")
    var model: String

    @Option(help: "A PEFT adapter folder (LoRA or prefix tuning) to apply to the model.")
    var adapter: String?

    @Option(help: "Hold the frozen base quantised: none (float32), keep (a GGUF file's own blocks, token table included), nf4 (decoder projections), q8_0, q4_0 or q4_1 (projections and token table).")
    var quantize: String = BaseQuantization.none.rawValue

    /// The model with its tokenizer, and the adapter applied when one was given.
    func load() throws -> (base: PretrainedModel, tokenizer: Tokenizer, adapter: Adapter?) {
        let quantization = try BaseQuantization(option: quantize)
        let base = try PretrainedModel.load(model, requireTokenizer: true, quantization: quantization)
        let applied = try adapter.map { try PEFTFormat.load($0, into: base.model) }
        return (base, try base.requireTokenizer(), applied)
    }
}

extension BaseQuantization {
    /// The value of a `--quantize` option, or an error naming the option and its choices.
    init(option: String) throws {
        guard let mode = BaseQuantization(rawValue: option) else {
            throw OptionError("--quantize must be one of \(BaseQuantization.allCases.map(\.rawValue).joined(separator: ", ")), got '\(option)'")
        }
        self = mode
    }
}
