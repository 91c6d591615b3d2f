import Foundation
import FinchFormats
import FinchNN
import FinchTensor

/// A Hugging Face model folder: `config.json`, `model.safetensors` (or shards with an index) and
/// `tokenizer.json`.
public struct HuggingFaceFolder {
    public let path: String
    public let config: ModelConfig
    public let model: any CausalLanguageModel
    /// nil when the folder has no tokenizer.json (commands that need text then say so).
    public let tokenizer: Tokenizer?

    /// Loads config, weights and (when present) the tokenizer. Every parameter must be in the checkpoint
    /// with its exact shape; a checkpoint tensor the model does not use is an error too.
    /// With `randomSeed`, the weights are not read: the model starts from transformers' initialisation
    /// (N(0, 0.02) for projections and embeddings, ones for norms), for pretraining from scratch.
    public static func load(_ path: String, requireTokenizer: Bool = false,
                            randomSeed: UInt64? = nil) throws -> HuggingFaceFolder {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw FormatError(file: path,
                              "is not a folder (a Hugging Face model folder holds config.json and model.safetensors)")
        }
        let configPath = (path as NSString).appendingPathComponent("config.json")
        let config = try ModelConfig.load(path: configPath)
        let checkpoint = randomSeed == nil ? try SafetensorsCheckpoint(folder: path) : nil
        try ModelSize.check(config, path: configPath, against: checkpoint)
        let model = try CausalLanguageModelFactory.make(config)
        if let checkpoint {
            try loadWeights(into: model, from: checkpoint)
        } else {
            initializeRandomly(model, seed: randomSeed ?? 0)
        }
        model.freeze()
        let tokenizerPath = (path as NSString).appendingPathComponent("tokenizer.json")
        var tokenizer: Tokenizer?
        if FileManager.default.fileExists(atPath: tokenizerPath) || requireTokenizer {
            tokenizer = try Tokenizer(path: tokenizerPath)
        }
        return HuggingFaceFolder(path: path, config: config, model: model, tokenizer: tokenizer)
    }

    /// Copies checkpoint tensors into the model's parameters, transposing `Conv1D` weights.
    public static func loadWeights(into model: any CausalLanguageModel, from checkpoint: SafetensorsCheckpoint) throws {
        var used = Set<String>()
        for (name, tensor) in model.namedParameters() {
            let key = checkpointKey(name, in: checkpoint)
            guard let entry = checkpoint.entry(named: key) else {
                throw FormatError(file: checkpoint.folder, "missing tensor '\(name)' (expected shape \(tensor.shape))")
            }
            used.insert(key)
            let transposed = model.storesTransposed(name)
            let expected = transposed ? Array(tensor.shape.reversed()) : tensor.shape
            guard entry.shape == expected else {
                throw FormatError(file: checkpoint.path(of: key),
                                  "tensor '\(key)' has shape \(entry.shape), expected \(expected)")
            }
            if transposed {
                let stored = Tensor.zeros(expected)
                try checkpoint.readFiniteFloats(key, into: stored.storage.buffer)
                try tensor.assign(stored.permuted([1, 0]))
            } else {
                try checkpoint.readFiniteFloats(key, into: tensor.storage.buffer)
            }
        }
        if let extra = checkpoint.names.first(where: { !used.contains($0) && !model.isIgnorableCheckpointKey($0) }) {
            throw FormatError(file: checkpoint.path(of: extra), "unexpected tensor '\(extra)': the \(model.config.modelType) model has no parameter of that name")
        }
    }

    /// transformers' `_init_weights` for these architectures: Linear and Embedding weights N(0, std²),
    /// biases zero, norm weights one and norm biases zero. Only modules whose path `including` accepts are set.
    public static func initializeRandomly(_ model: any CausalLanguageModel, seed: UInt64,
                                          standardDeviation: Float = 0.02, including: (String) -> Bool = { _ in true }) {
        var generator = RandomGenerator(seed: seed)
        for (path, module) in model.namedModules() where including(path) {
            switch module {
            case let linear as Linear:
                try? linear.weight.assign(Tensor.randomNormal(linear.weight.shape, standardDeviation: standardDeviation, generator: &generator))
                if let bias = linear.bias { try? bias.assign(Tensor.zeros(bias.shape)) }
            case let embedding as Embedding:
                try? embedding.weight.assign(Tensor.randomNormal(embedding.weight.shape, standardDeviation: standardDeviation, generator: &generator))
            case let norm as RMSNorm:
                try? norm.weight.assign(Tensor.ones(norm.weight.shape))
            case let norm as LayerNorm:
                try? norm.weight.assign(Tensor.ones(norm.weight.shape))
                try? norm.bias.assign(Tensor.zeros(norm.bias.shape))
            default:
                break
            }
        }
    }

    /// Old GPT-2 checkpoints name tensors without the `transformer.` prefix.
    static func checkpointKey(_ name: String, in checkpoint: SafetensorsCheckpoint) -> String {
        if checkpoint.entry(named: name) == nil, name.hasPrefix("transformer."),
           checkpoint.entry(named: String(name.dropFirst("transformer.".count))) != nil {
            return String(name.dropFirst("transformer.".count))
        }
        return name
    }

    /// The model's parameters as safetensors items under their Hugging Face names and layouts.
    public static func checkpointItems(of model: any CausalLanguageModel,
                                       dtype: SafetensorsDType) throws -> [SafetensorsWriter.Item] {
        try QuantizedBase.requireFloat(model, for: "a Hugging Face checkpoint's tensors")
        return try model.namedParameters().map { name, tensor in
            let stored = model.storesTransposed(name) ? try tensor.detached().permuted([1, 0]) : tensor
            return SafetensorsWriter.Item(name: name, tensor: stored, dtype: dtype)
        }
    }
}

/// Builds the model class a config names.
public enum CausalLanguageModelFactory {
    public static func make(_ config: ModelConfig) throws -> any CausalLanguageModel {
        switch config {
        case .llama(let c): return c.family == .cohere ? try CohereForCausalLM(c) : try LlamaForCausalLM(c)
        case .gpt2(let c): return try GPT2LMHeadModel(c)
        case .gptNeoX(let c): return try GPTNeoXForCausalLM(c)
        case .gptNeo(let c): return try GPTNeoForCausalLM(c)
        }
    }
}
