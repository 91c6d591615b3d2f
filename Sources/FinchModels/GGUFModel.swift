import FinchFormats
import FinchNN
import FinchTensor

/// A model read from or written to a GGUF file, for the llama.cpp architectures Finch implements (`llama`, `qwen2`,
/// `command-r`, `gptneox`, `gpt2`): the configuration from the `ARCH.*` metadata, every weight under llama.cpp's
/// tensor name (dequantised to float32 when read), and the row orders llama.cpp's converter changes (`RowOrder`)
/// undone on reading and applied on writing.
public enum GGUFModel {
    /// The model in `path` and the file it came from (its tokenizer metadata is there too). With `randomSeed`
    /// only the configuration is read and the weights start from transformers' initialisation.
    ///
    /// With `keepQuantized`, every projection of the decoder layers stored in a block-quantised type (Q4_0, Q4_1,
    /// Q5_0, Q5_1, Q8_0, the K-quants) stays in the file's blocks as a `QuantizedLinear`, and so does a token table
    /// stored that way (a `QuantizedEmbedding`, which a tied head reads too); an untied head, norms and float
    /// tensors are read as float32.
    public static func load(_ path: String, randomSeed: UInt64? = nil,
                            keepQuantized: Bool = false) throws -> (model: any CausalLanguageModel, file: GGUFFile) {
        let file = try GGUFFile(path: path)
        let config = try self.config(file)
        try ModelSize.check(config, path: path, against: nil)
        let model = try CausalLanguageModelFactory.make(config)
        if let randomSeed {
            HuggingFaceFolder.initializeRandomly(model, seed: randomSeed)
        } else {
            if keepQuantized { try keepQuantizedProjections(of: model, from: file) }
            try loadWeights(into: model, from: file)
            // Every weight is copied out: the file's pages need not stay in memory beside the copies.
            file.releaseResidentPages()
        }
        model.freeze()
        return (model, file)
    }

    /// The GGUF types a projection can stay in: the block types `GGUFDequantization` reads.
    static let blockTypes = Set(GGUFDequantization.supported).subtracting([.f32, .f16, .bf16])

    /// Replaces each decoder-layer Linear whose weight the file stores in a block type by a `QuantizedLinear`
    /// over the file's own bytes (rows put back in Hugging Face's order, row by row), and the token table by a
    /// `QuantizedEmbedding` when it is stored in one. `loadWeights` then reads the rest.
    static func keepQuantizedProjections(of model: any CausalLanguageModel, from file: GGUFFile) throws {
        let config = model.config
        for (path, module) in model.namedModules() {
            let linear = module as? Linear, table = module as? Embedding
            guard let key = ggufName(path + ".weight", in: config),
                  (linear != nil && key.hasPrefix("blk.")) || (table != nil && key == "token_embd.weight"),
                  let info = file.tensor(named: key),
                  blockTypes.contains(info.type) else { continue }
            let (rows, columns) = linear.map { ($0.outputDimensions, $0.inputDimensions) }
                ?? (table!.count, table!.dimensions)
            guard info.shape == [rows, columns] else {
                throw FormatError(file: file.path, "tensor '\(key)' has shape \(info.shape), expected \([rows, columns])")
            }
            let (blockValues, blockBytes) = info.type.block
            guard columns % blockValues == 0 else {
                throw FormatError(file: file.path, "tensor '\(key)' has rows of \(columns) values, not whole \(info.type.name) blocks of \(blockValues)")
            }
            let rowBytes = columns / blockValues * blockBytes
            var bytes = [UInt8](file.rawBytes(info))
            if let order = rowOrder(key, in: config) {
                bytes.withUnsafeMutableBufferPointer { order.toHuggingFace($0, rowLength: rowBytes) }
            }
            let matrix = try QuantizedBase.ggufMatrix(rows: rows, columns: columns, type: info.type, bytes: bytes,
                                                      name: "\(file.path): tensor '\(key)'")
            try model.replaceModule(at: path, with: linear.map { QuantizedLinear(matrix, bias: $0.bias) }
                                                    ?? QuantizedEmbedding(matrix))
        }
    }

    /// llama.cpp's architectures Finch reads. Mistral models are written by llama.cpp's converter as "llama" (no
    /// sliding window kept), so they load as LLaMA, as llama.cpp runs them.
    public static let architectures = ["llama", "qwen2", "command-r", "gptneox", "gpt2"]

    /// The configuration the file's metadata gives; what it leaves out takes llama.cpp's defaults.
    public static func config(_ file: GGUFFile) throws -> ModelConfig {
        let path = file.path
        let supported = "Finch reads \(architectures.map { "\"\($0)\"" }.joined(separator: ", ")) GGUF models"
        guard let architecture = file["general.architecture"]?.string else {
            throw FormatError(file: path, "missing general.architecture (\(supported))")
        }
        let fields = MetadataFields(file: file, prefix: architecture)
        guard let embeddings = file.tensor(named: "token_embd.weight"), embeddings.dimensions.count == 2 else {
            throw FormatError(file: path, "missing tensor 'token_embd.weight' (the token embeddings, 2 dimensions)")
        }
        let vocabulary = embeddings.dimensions[1]
        let bos = file["tokenizer.ggml.bos_token_id"]?.integer, eos = file["tokenizer.ggml.eos_token_id"]?.integer
        func refuseRopeScaling() throws {
            if let scaling = file["\(architecture).rope.scaling.type"]?.string, scaling != "none" {
                throw FormatError(file: path, "\(architecture).rope.scaling.type \"\(scaling)\" is not supported (Finch implements plain rotary positions)")
            }
        }
        switch architecture {
        case "llama", "qwen2", "command-r":
            try refuseRopeScaling()
            // Qwen2: biases on q, k and v, never on o (as transformers builds it); LLaMA: on all four or none.
            // Command R is Cohere's block (FinchModels/Cohere.swift): a LayerNorm where LLaMA has RMSNorm, and
            // llama.cpp's converter keeps the per-head q and k norms only where the model has them (use_qk_norm), so
            // their presence is the flag.
            let family: LlamaConfig.Family = architecture == "qwen2" ? .qwen2 : architecture == "command-r" ? .cohere : .llama
            let qkvBias = file.tensor(named: "blk.0.attn_q.bias") != nil
            let hidden = try fields.integer("embedding_length"), heads = try fields.integer("attention.head_count")
            let epsilonKey = family == .cohere ? "attention.layer_norm_epsilon" : "attention.layer_norm_rms_epsilon"
            var config = LlamaConfig(
                vocabularySize: vocabulary, hiddenSize: hidden,
                intermediateSize: try fields.integer("feed_forward_length"), layerCount: try fields.integer("block_count"),
                headCount: heads, keyValueHeadCount: try fields.integer("attention.head_count_kv", default: heads),
                headDimension: try fields.integer("attention.key_length", default: hidden / max(heads, 1)),
                rmsNormEpsilon: Float(try fields.number(epsilonKey, default: 1e-5)),
                ropeTheta: Float(try fields.number("rope.freq_base", default: 10_000)),
                tieWordEmbeddings: file.tensor(named: "output.weight") == nil,
                attentionBias: qkvBias, attentionOutputBias: family == .qwen2 ? false : qkvBias,
                maxPositionEmbeddings: try fields.integer("context_length", default: 2048),
                bosTokenId: bos, eosTokenIds: eos.map { [$0] } ?? [], family: family)
            if family == .cohere {
                config.logitScale = Float(try fields.number("logit_scale", default: nil))
                config.useQKNorm = file.tensor(named: "blk.0.attn_q_norm.weight") != nil
            }
            return .llama(config)
        case "gptneox":
            // Pythia's block (FinchModels/GPTNeoX.swift) with its exact GELU (llama.cpp computes the tanh form, within
            // 1e-3 of it). rope.dimension_count is rotary_pct times the head size.
            try refuseRopeScaling()
            let hidden = try fields.integer("embedding_length"), heads = try fields.integer("attention.head_count")
            let parallel = file["gptneox.use_parallel_residual"]
            guard parallel == nil || parallel?.bool != nil else {
                throw FormatError(file: path, "gptneox.use_parallel_residual must be a bool, got \(parallel!)")
            }
            var config = GPTNeoXConfig(
                vocabularySize: vocabulary, hiddenSize: hidden, intermediateSize: try fields.integer("feed_forward_length"),
                layerCount: try fields.integer("block_count"), headCount: heads,
                ropeTheta: Float(try fields.number("rope.freq_base", default: 10_000)),
                maxPositionEmbeddings: try fields.integer("context_length", default: 2048),
                layerNormEpsilon: Float(try fields.number("attention.layer_norm_epsilon", default: 1e-5)),
                useParallelResidual: parallel?.bool ?? true, activation: .gelu,
                attentionBias: file.tensor(named: "blk.0.attn_qkv.bias") != nil,
                tieWordEmbeddings: file.tensor(named: "output.weight") == nil, bosTokenId: bos, eosTokenIds: eos.map { [$0] } ?? [])
            guard heads > 0, hidden % heads == 0 else {
                throw FormatError(file: path, "gptneox.embedding_length \(hidden) is not a whole number of gptneox.attention.head_count \(heads) heads")
            }
            config.rotaryDimensions = try fields.integer("rope.dimension_count", default: hidden / heads)
            guard config.rotaryDimensions <= hidden / heads, config.rotaryDimensions % 2 == 0 else {
                throw FormatError(file: path, "gptneox.rope.dimension_count \(config.rotaryDimensions) must be even and at most the head size \(hidden / heads)")
            }
            return .gptNeoX(config)
        case "gpt2":
            // llama.cpp runs GPT-2 with the tanh GELU and a head tied to the token table (a converted file may
            // carry the head as a copy of the table).
            let hidden = try fields.integer("embedding_length")
            return .gpt2(GPT2Config(
                vocabularySize: vocabulary, embeddingSize: hidden, layerCount: try fields.integer("block_count"),
                headCount: try fields.integer("attention.head_count"), maxPositions: try fields.integer("context_length"),
                innerSize: try fields.integer("feed_forward_length", default: 4 * hidden),
                layerNormEpsilon: Float(try fields.number("attention.layer_norm_epsilon", default: 1e-5)),
                bosTokenId: bos, eosTokenIds: eos.map { [$0] } ?? []))
        default:
            throw FormatError(file: path, "general.architecture \"\(architecture)\" is not supported (\(supported))")
        }
    }

    /// Typed reads of `ARCH.key` metadata, with errors naming the file and key.
    struct MetadataFields {
        let file: GGUFFile
        let prefix: String

        func integer(_ key: String, default value: Int? = nil) throws -> Int {
            let name = "\(prefix).\(key)"
            if let v = file[name] {
                guard let i = v.integer, i > 0 else { throw FormatError(file: file.path, "\(name) must be a positive integer, got \(v)") }
                return i
            }
            guard let value else { throw FormatError(file: file.path, "missing \(name)") }
            return value
        }

        func number(_ key: String, default value: Double?) throws -> Double {
            let name = "\(prefix).\(key)"
            guard let v = file[name] else {
                guard let value else { throw FormatError(file: file.path, "missing \(name)") }
                return value
            }
            guard let d = v.number, d.isFinite, d > 0 else { throw FormatError(file: file.path, "\(name) must be a positive number, got \(v)") }
            return d
        }
    }

    /// The GGUF name of a parameter of one of Finch's models (`model.layers.3.self_attn.q_proj.weight` →
    /// `blk.3.attn_q.weight`, `transformer.h.3.attn.c_attn.bias` → `blk.3.attn_qkv.bias`).
    public static func ggufName(_ name: String, in config: ModelConfig) -> String? {
        let fixed: [String: String], layerPrefix: [String], modules: [String: String]
        switch config {
        case .llama:
            fixed = ["model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
                     "lm_head.weight": "output.weight"]
            layerPrefix = ["model", "layers"]
            modules = ["self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
                       "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
                       "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
                       "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm"]
        case .gpt2:
            fixed = ["transformer.wte.weight": "token_embd.weight", "transformer.wpe.weight": "position_embd.weight",
                     "transformer.ln_f.weight": "output_norm.weight", "transformer.ln_f.bias": "output_norm.bias"]
            layerPrefix = ["transformer", "h"]
            modules = ["ln_1": "attn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output", "ln_2": "ffn_norm",
                       "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"]
        case .gptNeo:
            return nil  // llama.cpp has no GPT-Neo architecture
        case .gptNeoX:
            fixed = ["gpt_neox.embed_in.weight": "token_embd.weight", "gpt_neox.final_layer_norm.weight": "output_norm.weight",
                     "gpt_neox.final_layer_norm.bias": "output_norm.bias", "embed_out.weight": "output.weight"]
            layerPrefix = ["gpt_neox", "layers"]
            modules = ["input_layernorm": "attn_norm", "attention.query_key_value": "attn_qkv", "attention.dense": "attn_output",
                       "post_attention_layernorm": "ffn_norm", "mlp.dense_h_to_4h": "ffn_up", "mlp.dense_4h_to_h": "ffn_down"]
        }
        if let n = fixed[name] { return n }
        let parts = name.split(separator: ".").map(String.init)
        guard parts.count >= 5, Array(parts[0..<2]) == layerPrefix, let layer = Int(parts[2]) else { return nil }
        let module = parts[3..<(parts.count - 1)].joined(separator: ".")
        return modules[module].map { "blk.\(layer).\($0).\(parts.last!)" }
    }

    /// The row order llama.cpp's converter gives a tensor, where it differs from Hugging Face's (`RowOrder`).
    public static func rowOrder(_ key: String, in config: ModelConfig) -> RowOrder? {
        guard key.hasPrefix("blk.") else { return nil }
        switch config {
        case .llama(let c):
            // Qwen2's and Command R's q and k are stored as Hugging Face has them.
            guard c.family == .llama || c.family == .mistral else { return nil }
            if key.hasSuffix(".attn_q.weight") || key.hasSuffix(".attn_q.bias") { return .interleavedRotary(heads: c.headCount) }
            if key.hasSuffix(".attn_k.weight") || key.hasSuffix(".attn_k.bias") { return .interleavedRotary(heads: c.keyValueHeadCount) }
        case .gptNeoX(let c):
            if key.hasSuffix(".attn_qkv.weight") || key.hasSuffix(".attn_qkv.bias") { return .groupedQKV(heads: c.headCount) }
        case .gpt2, .gptNeo:
            break
        }
        return nil
    }

    /// Copies every parameter from its GGUF tensor (dequantised, q and k un-permuted); a tensor the model has no
    /// place for, or a missing one, is named. A GPT-2 head stored as a copy of the token table is passed over.
    public static func loadWeights(into model: any CausalLanguageModel, from file: GGUFFile) throws {
        let config = model.config
        var used = Set<String>()
        for (name, tensor) in model.namedParameters() {
            guard let key = ggufName(name, in: config), let info = file.tensor(named: key) else {
                throw FormatError(file: file.path, "missing tensor '\(ggufName(name, in: config) ?? name)' for \(name) (expected shape \(tensor.shape))")
            }
            guard info.shape == tensor.shape else {
                throw FormatError(file: file.path, "tensor '\(key)' has shape \(info.shape), expected \(tensor.shape)")
            }
            used.insert(key)
            try file.readFloats(info, into: tensor.storage.buffer)
            guard tensor.isFinite else { throw FormatError(file: file.path, "tensor '\(key)' holds NaN or infinite values") }
            if let order = rowOrder(key, in: config) {
                order.toHuggingFace(tensor.storage.buffer, rowLength: info.dimensions.count == 2 ? info.dimensions[0] : 1)
            }
        }
        if case .gpt2 = config, let head = file.tensor(named: "output.weight"), let table = file.tensor(named: "token_embd.weight"),
           head.shape == table.shape {
            guard try file.floats(head).map(\.bitPattern) == file.floats(table).map(\.bitPattern) else {
                throw FormatError(file: file.path, "tensor 'output.weight' differs from 'token_embd.weight': Finch's GPT-2 ties its head to the token table")
            }
            used.insert("output.weight")
        }
        // Projections kept in the file's blocks were read by `keepQuantizedProjections`.
        for (path, module) in model.namedModules() where module is any QuantizedModule {
            if let key = ggufName(path + ".weight", in: config) { used.insert(key) }
        }
        if let extra = file.tensors.first(where: { !used.contains($0.name) }) {
            throw FormatError(file: file.path, "unexpected tensor '\(extra.name)': Finch's \(config.modelType) model has no parameter for it")
        }
    }

    /// The model's parameters under llama.cpp's names, as float32 in the order a GGUF file holds them (rows in
    /// llama.cpp's order), in the model's parameter order.
    public static func ggufValues(of model: any CausalLanguageModel) throws -> [(name: String, shape: [Int], values: [Float])] {
        let config = model.config
        try QuantizedBase.requireFloat(model, for: "a GGUF file's float tensors")
        return try model.namedParameters().map { name, tensor in
            guard let key = ggufName(name, in: config) else { throw FormatError(file: name, "has no GGUF tensor name") }
            var values = tensor.scalars
            if let order = rowOrder(key, in: config) {
                let rowLength = tensor.shape.count == 2 ? tensor.shape[1] : 1
                values.withUnsafeMutableBufferPointer { order.toGGUF($0, rowLength: rowLength) }
            }
            return (key, tensor.shape, values)
        }
    }
}

/// How llama.cpp's converter reorders the rows of a matrix (or the entries of a bias) it writes.
public enum RowOrder: Sendable, Equatable {
    /// LLaMA's and Mistral's q and k: Hugging Face keeps each head's rotary pairs as two halves (row
    /// `half·(d/2) + i`), llama.cpp interleaves them (row `2·i + half`).
    case interleavedRotary(heads: Int)
    /// GPT-NeoX's query_key_value: Hugging Face keeps q, k and v head by head (row `(head·3 + part)·d + i`),
    /// llama.cpp all q rows, then all k, then all v (row `(part·heads + head)·d + i`).
    case groupedQKV(heads: Int)

    /// The GGUF row that Hugging Face's row `row` of `rows` is stored at.
    func ggufRow(_ row: Int, of rows: Int) -> Int {
        switch self {
        case .interleavedRotary(let heads):
            let perHead = rows / heads, half = perHead / 2
            let head = row / perHead, within = row % perHead
            return head * perHead + 2 * (within % half) + within / half
        case .groupedQKV(let heads):
            let d = rows / (3 * heads)
            let head = row / (3 * d), part = (row / d) % 3, i = row % d
            return (part * heads + head) * d + i
        }
    }

    /// Puts rows of `rowLength` values (floats, or a quantised type's bytes) from Hugging Face's order into llama.cpp's.
    public func toGGUF<Element>(_ values: UnsafeMutableBufferPointer<Element>, rowLength: Int) {
        move(values, rowLength: rowLength, toGGUF: true)
    }

    /// Puts rows from llama.cpp's order back into Hugging Face's.
    public func toHuggingFace<Element>(_ values: UnsafeMutableBufferPointer<Element>, rowLength: Int) {
        move(values, rowLength: rowLength, toGGUF: false)
    }

    private func move<Element>(_ values: UnsafeMutableBufferPointer<Element>, rowLength: Int, toGGUF: Bool) {
        let rows = values.count / rowLength
        let stored = Array(values)
        for row in 0..<rows {
            let gguf = ggufRow(row, of: rows)
            let (to, from) = toGGUF ? (gguf, row) : (row, gguf)
            for c in 0..<rowLength { values[to * rowLength + c] = stored[from * rowLength + c] }
        }
    }
}
