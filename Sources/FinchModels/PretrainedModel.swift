import Foundation
import FinchFormats
import FinchTensor

/// A model as `--model` or a recipe's `model:` names it: a Hugging Face folder or a GGUF file, with its tokenizer.
/// Commands and the trainer take this, so every place a model is read accepts both.
public struct PretrainedModel {
    /// Where the weights came from; export needs to know to write the result beside its own kind.
    public enum Source {
        case huggingFace(folder: String)
        case gguf(GGUFFile)
    }

    public let path: String
    public let source: Source
    public let model: any CausalLanguageModel
    /// nil when a Hugging Face folder has no tokenizer.json (commands that need text then say so).
    public let tokenizer: Tokenizer?
    public var config: ModelConfig { model.config }

    /// The file the configuration was read from (config.json, or the GGUF file), for messages.
    public var configPath: String {
        if case .huggingFace(let folder) = source { return (folder as NSString).appendingPathComponent("config.json") }
        return path
    }

    /// The GGUF file, when the model came from one.
    public var ggufFile: GGUFFile? { if case .gguf(let f) = source { return f } else { return nil } }

    /// Reads the folder or file at `path`: a regular file is read as GGUF (its magic bytes are checked), a
    /// folder as Hugging Face's. With `randomSeed` the weights are not read (see `HuggingFaceFolder.load`).
    /// `quantization` holds the decoder layers' projections quantised (`BaseQuantization`): `.keep` a GGUF file's
    /// own blocks, the others quantised at load.
    public static func load(_ path: String, requireTokenizer: Bool = false, randomSeed: UInt64? = nil,
                            quantization: BaseQuantization = .none) throws -> PretrainedModel {
        guard isFile(path) else {
            guard quantization != .keep else {
                throw FormatError(file: path, "quantize: keep keeps a GGUF file's own blocks; a Hugging Face folder is float (use nf4, q8_0 or q4_0)")
            }
            let folder = try HuggingFaceFolder.load(path, requireTokenizer: requireTokenizer, randomSeed: randomSeed)
            try QuantizedBase.quantize(folder.model, as: quantization)
            if quantization != .none { TensorStorage.resetPool() }
            return PretrainedModel(path: path, source: .huggingFace(folder: path), model: folder.model,
                                   tokenizer: folder.tokenizer)
        }
        let (model, file) = try GGUFModel.load(path, randomSeed: randomSeed, keepQuantized: quantization == .keep)
        try QuantizedBase.quantize(model, as: quantization)
        // The float weights the model was built with are gone: they must not remain the pool's bound.
        if quantization != .none { TensorStorage.resetPool() }
        let tokenizer: Tokenizer? = file["tokenizer.ggml.model"] == nil && !requireTokenizer
            ? nil : try Tokenizer(gguf: file)
        return PretrainedModel(path: path, source: .gguf(file), model: model, tokenizer: tokenizer)
    }

    /// The model's chat template and the special tokens it prints: `tokenizer.chat_template` of a GGUF file, or a
    /// folder's `chat_template.jinja` or `chat_template` in tokenizer_config.json. nil when there is none.
    public func chatFormat() throws -> ChatFormat? {
        let tokenizer = try requireTokenizer()
        switch source {
        case .gguf(let file):
            guard let source = GGUFTokenizer.chatTemplate(file) else { return nil }
            func token(_ key: String) -> String {
                file[key]?.integer.flatMap { tokenizer.token(of: $0) } ?? ""
            }
            let template: ChatTemplate
            do { template = try ChatTemplate(source) } catch let error as ChatTemplateError {
                throw FormatError(file: file.path, "tokenizer.chat_template: \(error.message)")
            }
            return ChatFormat(template: template, bosToken: token("tokenizer.ggml.bos_token_id"),
                              eosToken: token("tokenizer.ggml.eos_token_id"), origin: "\(file.path): tokenizer.chat_template")
        case .huggingFace(let folder):
            let configPath = (folder as NSString).appendingPathComponent("tokenizer_config.json")
            let jinjaPath = (folder as NSString).appendingPathComponent("chat_template.jinja")
            let config = FileManager.default.fileExists(atPath: configPath) ? try JSONValue.load(path: configPath) : nil
            var source: String?, origin = configPath + ": chat_template"
            if let text = FileManager.default.contents(atPath: jinjaPath) {
                source = String(decoding: text, as: UTF8.self)
                origin = jinjaPath
            } else if let value = config?["chat_template"] {
                if let s = value.string {
                    source = s
                } else if let list = value.array {
                    source = list.first { $0["name"]?.string == "default" }?["template"]?.string
                }
            }
            guard let source else { return nil }
            func token(_ key: String) -> String { config?[key]?.string ?? config?[key]?["content"]?.string ?? "" }
            let template: ChatTemplate
            do { template = try ChatTemplate(source) } catch let error as ChatTemplateError {
                throw FormatError(file: origin, error.message)
            }
            return ChatFormat(template: template, bosToken: token("bos_token"), eosToken: token("eos_token"), origin: origin)
        }
    }

    /// Whether `path` is an existing file rather than a folder: what `load` reads as GGUF.
    public static func isFile(_ path: String) -> Bool {
        var isFolder: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isFolder) && !isFolder.boolValue
    }

    /// The tokenizer, or an error naming what is missing.
    public func requireTokenizer() throws -> Tokenizer {
        guard let tokenizer else {
            throw FormatError(file: (path as NSString).appendingPathComponent("tokenizer.json"),
                              "missing: this command needs the model's tokenizer")
        }
        return tokenizer
    }
}
