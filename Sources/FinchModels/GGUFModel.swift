import FinchFormats
import FinchNN
import FinchTensor

/// A LLaMA-architecture model read from a GGUF file: the configuration from its `llama.*` metadata, every weight
/// dequantised to float32 under the Hugging Face name Finch's modules carry, and the per-head permutation of the
/// q and k rows that llama.cpp's converter applies (to interleave each head's rotary pairs) undone.
public enum GGUFModel {
    /// The model in `path` and the file it came from (its tokenizer metadata is there too). With `randomSeed`
    /// only the configuration is read and the weights start from transformers' initialisation.
    public static func load(_ path: String, randomSeed: UInt64? = nil) throws -> (model: any CausalLanguageModel, file: GGUFFile) {
        let file = try GGUFFile(path: path)
        let config = ModelConfig.llama(try llamaConfig(file))
        try ModelSize.check(config, path: path, against: nil)
        let model = try CausalLanguageModelFactory.make(config)
        if let randomSeed {
            HuggingFaceFolder.initializeRandomly(model, seed: randomSeed)
        } else {
            try loadWeights(into: model, from: file)
        }
        model.freeze()
        return (model, file)
    }

    /// The configuration GGUF's `llama.*` keys give; what they leave out takes llama.cpp's defaults.
    public static func llamaConfig(_ file: GGUFFile) throws -> LlamaConfig {
        let path = file.path
        guard let architecture = file["general.architecture"]?.string else {
            throw FormatError(file: path, "missing general.architecture (Finch reads \"llama\" GGUF models)")
        }
        guard architecture == "llama" else {
            throw FormatError(file: path, "general.architecture \"\(architecture)\" is not supported (Finch reads \"llama\" GGUF models)")
        }
        func integer(_ key: String, default value: Int? = nil) throws -> Int {
            if let v = file[key] {
                guard let i = v.integer, i > 0 else { throw FormatError(file: path, "\(key) must be a positive integer, got \(v)") }
                return i
            }
            guard let value else { throw FormatError(file: path, "missing \(key)") }
            return value
        }
        func number(_ key: String, default value: Double) throws -> Double {
            guard let v = file[key] else { return value }
            guard let d = v.number, d.isFinite, d > 0 else { throw FormatError(file: path, "\(key) must be a positive number, got \(v)") }
            return d
        }
        if let scaling = file["llama.rope.scaling.type"]?.string, scaling != "none" {
            throw FormatError(file: path, "llama.rope.scaling.type \"\(scaling)\" is not supported (Finch implements plain rotary positions)")
        }
        guard let embeddings = file.tensor(named: "token_embd.weight"), embeddings.dimensions.count == 2 else {
            throw FormatError(file: path, "missing tensor 'token_embd.weight' (the token embeddings, 2 dimensions)")
        }
        let hidden = try integer("llama.embedding_length"), heads = try integer("llama.attention.head_count")
        let eos = file["tokenizer.ggml.eos_token_id"]?.integer
        return LlamaConfig(
            vocabularySize: embeddings.dimensions[1], hiddenSize: hidden,
            intermediateSize: try integer("llama.feed_forward_length"), layerCount: try integer("llama.block_count"),
            headCount: heads, keyValueHeadCount: try integer("llama.attention.head_count_kv", default: heads),
            headDimension: try integer("llama.attention.key_length", default: hidden / max(heads, 1)),
            rmsNormEpsilon: Float(try number("llama.attention.layer_norm_rms_epsilon", default: 1e-5)),
            ropeTheta: Float(try number("llama.rope.freq_base", default: 10_000)),
            tieWordEmbeddings: file.tensor(named: "output.weight") == nil,
            attentionBias: file.tensor(named: "blk.0.attn_q.bias") != nil,
            maxPositionEmbeddings: try integer("llama.context_length", default: 2048),
            bosTokenId: file["tokenizer.ggml.bos_token_id"]?.integer, eosTokenIds: eos.map { [$0] } ?? [])
    }

    /// The GGUF name of a parameter of Finch's LLaMA (`model.layers.3.self_attn.q_proj.weight` → `blk.3.attn_q.weight`).
    public static func ggufName(_ name: String) -> String? {
        let fixed = ["model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
                     "lm_head.weight": "output.weight"]
        if let n = fixed[name] { return n }
        let parts = name.split(separator: ".").map(String.init)
        guard parts.count >= 5, parts[0] == "model", parts[1] == "layers", let layer = Int(parts[2]) else { return nil }
        let modules = ["self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
                       "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
                       "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"]
        let module = parts[3..<(parts.count - 1)].joined(separator: ".")
        return modules[module].map { "blk.\(layer).\($0).\(parts.last!)" }
    }

    /// Copies every parameter from its GGUF tensor (dequantised, q and k un-permuted); a tensor the model has no
    /// place for, or a missing one, is named.
    public static func loadWeights(into model: any CausalLanguageModel, from file: GGUFFile) throws {
        guard case .llama(let config) = model.config else {
            throw FormatError(file: file.path, "only LLaMA models are read from GGUF files")
        }
        var used = Set<String>()
        for (name, tensor) in model.namedParameters() {
            guard let key = ggufName(name), let info = file.tensor(named: key) else {
                throw FormatError(file: file.path, "missing tensor '\(ggufName(name) ?? name)' for \(name) (expected shape \(tensor.shape))")
            }
            guard info.shape == tensor.shape else {
                throw FormatError(file: file.path, "tensor '\(key)' has shape \(info.shape), expected \(tensor.shape)")
            }
            used.insert(key)
            try file.readFloats(info, into: tensor.storage.buffer)
            guard tensor.isFinite else { throw FormatError(file: file.path, "tensor '\(key)' holds NaN or infinite values") }
            if key.hasSuffix(".attn_q.weight") || key.hasSuffix(".attn_q.bias") {
                unpermute(tensor.storage.buffer, heads: config.headCount, rowLength: info.dimensions.count == 2 ? info.dimensions[0] : 1)
            } else if key.hasSuffix(".attn_k.weight") || key.hasSuffix(".attn_k.bias") {
                unpermute(tensor.storage.buffer, heads: config.keyValueHeadCount, rowLength: info.dimensions.count == 2 ? info.dimensions[0] : 1)
            }
        }
        if let extra = file.tensors.first(where: { !used.contains($0.name) }) {
            throw FormatError(file: file.path, "unexpected tensor '\(extra.name)': Finch's LLaMA has no parameter for it")
        }
    }

    /// The model's parameters under llama.cpp's names, as float32 in the order a GGUF file holds them (q and k
    /// rows in llama.cpp's interleaved order), in the model's parameter order.
    public static func ggufValues(of model: any CausalLanguageModel) throws -> [(name: String, shape: [Int], values: [Float])] {
        guard case .llama(let config) = model.config else {
            throw FormatError(file: model.config.modelType, "only LLaMA models are written as GGUF files")
        }
        return try model.namedParameters().map { name, tensor in
            guard let key = ggufName(name) else { throw FormatError(file: name, "has no GGUF tensor name") }
            var values = tensor.scalars
            let rowLength = tensor.shape.count == 2 ? tensor.shape[1] : 1
            values.withUnsafeMutableBufferPointer { buffer in
                if key.hasPrefix("blk."), key.contains(".attn_q.") {
                    permute(buffer, heads: config.headCount, rowLength: rowLength)
                } else if key.hasPrefix("blk."), key.contains(".attn_k.") {
                    permute(buffer, heads: config.keyValueHeadCount, rowLength: rowLength)
                }
            }
            return (key, tensor.shape, values)
        }
    }

    /// llama.cpp's order for each head's rows: Hugging Face's row (half, i) goes to 2·i + half (`unpermute` undone).
    public static func permute(_ values: UnsafeMutableBufferPointer<Float>, heads: Int, rowLength: Int) {
        let rows = values.count / rowLength, perHead = rows / heads, half = perHead / 2
        let stored = Array(values)
        for h in 0..<heads {
            for i in 0..<half {
                for part in 0..<2 {
                    let to = (h * perHead + 2 * i + part) * rowLength
                    let from = (h * perHead + part * half + i) * rowLength
                    for c in 0..<rowLength { values[to + c] = stored[from + c] }
                }
            }
        }
    }

    /// Puts each head's rows back in Hugging Face's order: llama.cpp stores row (i, half) of a head at 2·i + half,
    /// Hugging Face at half·(d/2) + i.
    static func unpermute(_ values: UnsafeMutableBufferPointer<Float>, heads: Int, rowLength: Int) {
        let rows = values.count / rowLength, perHead = rows / heads, half = perHead / 2
        let stored = Array(values)
        for h in 0..<heads {
            for i in 0..<half {
                for part in 0..<2 {
                    let from = (h * perHead + 2 * i + part) * rowLength
                    let to = (h * perHead + part * half + i) * rowLength
                    for c in 0..<rowLength { values[to + c] = stored[from + c] }
                }
            }
        }
    }
}
