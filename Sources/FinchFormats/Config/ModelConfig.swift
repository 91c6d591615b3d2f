import Foundation

/// A Hugging Face `config.json` for an architecture Finch implements. Anything Finch does not implement
/// (another `model_type`, a `rope_scaling` type, an activation) is refused by name, never ignored.
public enum ModelConfig: Sendable, Equatable {
    case llama(LlamaConfig)
    case gpt2(GPT2Config)
    case gptNeoX(GPTNeoXConfig)
    case gptNeo(GPTNeoConfig)

    public var modelType: String {
        switch self {
        case .llama(let c): return c.family.rawValue
        case .gpt2: return "gpt2"
        case .gptNeoX: return "gpt_neox"
        case .gptNeo: return "gpt_neo"
        }
    }

    public var vocabularySize: Int {
        switch self {
        case .llama(let c): return c.vocabularySize
        case .gpt2(let c): return c.vocabularySize
        case .gptNeoX(let c): return c.vocabularySize
        case .gptNeo(let c): return c.vocabularySize
        }
    }

    public var eosTokenIds: [Int] {
        switch self {
        case .llama(let c): return c.eosTokenIds
        case .gpt2(let c): return c.eosTokenIds
        case .gptNeoX(let c): return c.eosTokenIds
        case .gptNeo(let c): return c.eosTokenIds
        }
    }

    /// The most positions a sequence may have (cached and prefix positions counted).
    public var maxPositions: Int {
        switch self {
        case .llama(let c): return c.maxPositionEmbeddings
        case .gpt2(let c): return c.maxPositions
        case .gptNeoX(let c): return c.maxPositionEmbeddings
        case .gptNeo(let c): return c.maxPositionEmbeddings
        }
    }

    /// The decoder's shape, as the key/value cache and the adapters size themselves by it.
    public var layerCount: Int {
        switch self {
        case .llama(let c): return c.layerCount
        case .gpt2(let c): return c.layerCount
        case .gptNeoX(let c): return c.layerCount
        case .gptNeo(let c): return c.layerCount
        }
    }

    public var hiddenSize: Int {
        switch self {
        case .llama(let c): return c.hiddenSize
        case .gpt2(let c): return c.embeddingSize
        case .gptNeoX(let c): return c.hiddenSize
        case .gptNeo(let c): return c.hiddenSize
        }
    }

    /// Heads of keys and values (fewer than the query heads with grouped-query attention).
    public var keyValueHeadCount: Int {
        switch self {
        case .llama(let c): return c.keyValueHeadCount
        case .gpt2(let c): return c.headCount
        case .gptNeoX(let c): return c.headCount
        case .gptNeo(let c): return c.headCount
        }
    }

    public var headDimension: Int {
        switch self {
        case .llama(let c): return c.headDimension
        case .gpt2(let c): return c.embeddingSize / max(c.headCount, 1)
        case .gptNeoX(let c): return c.headDimension
        case .gptNeo(let c): return c.headDimension
        }
    }

    /// The config.json key that gives `maxPositions`.
    public var maxPositionsKey: String {
        switch self {
        case .llama: return "max_position_embeddings"
        case .gpt2: return "n_positions"
        case .gptNeoX, .gptNeo: return "max_position_embeddings"
        }
    }

    /// Reads `config.json` (a path to the file).
    public static func load(path: String) throws -> ModelConfig {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw FormatError(file: path, "cannot read the file (a Hugging Face model folder needs config.json)")
        }
        return try parse(data, path: path)
    }

    public static func parse(_ data: Data, path: String) throws -> ModelConfig {
        guard let object = try JSONValue.parse(data, file: path).object else {
            throw FormatError(file: path, "expected a JSON object")
        }
        let fields = ConfigFields(object: object, path: path)
        guard let type = object["model_type"]?.string else {
            throw FormatError(file: path, "missing \"model_type\" (Finch implements \(implemented))")
        }
        if let family = LlamaConfig.Family(rawValue: type) { return .llama(try LlamaConfig(fields, family: family)) }
        switch type {
        case "gpt2": return .gpt2(try GPT2Config(fields))
        case "gpt_neox": return .gptNeoX(try GPTNeoXConfig(fields))
        case "gpt_neo": return .gptNeo(try GPTNeoConfig(fields))
        default:
            throw FormatError(file: path, "model_type \"\(type)\" is not supported (Finch implements \(implemented))")
        }
    }

    /// The `model_type`s Finch reads, for messages.
    static let implemented = (LlamaConfig.Family.allCases.map(\.rawValue) + ["gpt2", "gpt_neox", "gpt_neo"]).map { "\"\($0)\"" }.joined(separator: ", ")
}

/// LLaMA-family decoders: RMSNorm, rotary positions, SwiGLU MLP, grouped-query attention. Qwen2 and Mistral are
/// the same decoder with other defaults: Qwen2 has biases on q, k and v (not o), Mistral a sliding attention window.
/// Cohere (Command R) shares the projections and the MLP and differs in its block (`FinchModels/Cohere.swift`):
/// its norm (a bias-free LayerNorm, epsilon `layer_norm_eps`) is `rmsNormEpsilon` here.
public struct LlamaConfig: Sendable, Equatable {
    /// The `model_type`s that are this decoder.
    public enum Family: String, Sendable, CaseIterable {
        case llama, qwen2, mistral, cohere
    }

    public var family: Family
    public var vocabularySize: Int
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var layerCount: Int
    public var headCount: Int
    public var keyValueHeadCount: Int
    public var headDimension: Int
    public var rmsNormEpsilon: Float
    public var ropeTheta: Float
    public var tieWordEmbeddings: Bool
    /// Biases on the q, k and v projections; `attentionOutputBias` on o.
    public var attentionBias: Bool
    public var attentionOutputBias: Bool
    public var mlpBias: Bool
    /// A query sees only this many keys up to itself (Mistral, Qwen2 with use_sliding_window); nil when it sees
    /// every earlier key.
    public var slidingWindow: Int?
    /// Cohere: the logits are the head's times this (`logit_scale`); 1 for the others.
    public var logitScale: Float = 1
    /// Cohere: q and k go through a LayerNorm per head before the rotary positions (`use_qk_norm`).
    public var useQKNorm = false
    public var maxPositionEmbeddings: Int
    public var bosTokenId: Int?
    public var eosTokenIds: [Int]

    public init(vocabularySize: Int, hiddenSize: Int, intermediateSize: Int, layerCount: Int, headCount: Int,
                keyValueHeadCount: Int, headDimension: Int? = nil, rmsNormEpsilon: Float = 1e-5, ropeTheta: Float = 10_000,
                tieWordEmbeddings: Bool = false, attentionBias: Bool = false, attentionOutputBias: Bool? = nil,
                mlpBias: Bool = false, maxPositionEmbeddings: Int = 2048, bosTokenId: Int? = 1, eosTokenIds: [Int] = [2],
                family: Family = .llama, slidingWindow: Int? = nil) {
        self.family = family
        self.slidingWindow = slidingWindow
        self.attentionOutputBias = attentionOutputBias ?? attentionBias
        self.vocabularySize = vocabularySize
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.layerCount = layerCount
        self.headCount = headCount
        self.keyValueHeadCount = keyValueHeadCount
        self.headDimension = headDimension ?? hiddenSize / headCount
        self.rmsNormEpsilon = rmsNormEpsilon
        self.ropeTheta = ropeTheta
        self.tieWordEmbeddings = tieWordEmbeddings
        self.attentionBias = attentionBias
        self.mlpBias = mlpBias
        self.maxPositionEmbeddings = maxPositionEmbeddings
        self.bosTokenId = bosTokenId
        self.eosTokenIds = eosTokenIds
    }

    init(_ f: ConfigFields, family: Family = .llama) throws {
        let hidden = try f.int("hidden_size")
        let heads = try f.int("num_attention_heads")
        // Qwen2 always has q/k/v biases and no o bias (its config has no key for them); LLaMA reads
        // attention_bias for all four; Mistral has none.
        let qkvBias = family == .qwen2 ? true : [.llama, .cohere].contains(family) ? try f.optionalBool("attention_bias") ?? false : false
        let window = try Self.slidingWindow(f, family: family)
        // Before head_dim's default divides by the head count.
        try f.requirePositive(["hidden_size": hidden, "num_attention_heads": heads])
        self.init(
            vocabularySize: try f.int("vocab_size"), hiddenSize: hidden,
            intermediateSize: try f.int("intermediate_size"), layerCount: try f.int("num_hidden_layers"),
            headCount: heads, keyValueHeadCount: try f.optionalInt("num_key_value_heads") ?? heads,
            headDimension: try f.optionalInt("head_dim"),
            rmsNormEpsilon: Float(try f.optionalDouble(family == .cohere ? "layer_norm_eps" : "rms_norm_eps") ?? (family == .cohere ? 1e-5 : 1e-6)),
            ropeTheta: 10_000,
            tieWordEmbeddings: try f.optionalBool("tie_word_embeddings") ?? (family == .cohere),
            attentionBias: qkvBias, attentionOutputBias: family == .qwen2 ? false : qkvBias,
            mlpBias: family == .llama ? try f.optionalBool("mlp_bias") ?? false : false,
            maxPositionEmbeddings: try f.optionalInt("max_position_embeddings") ?? 2048,
            bosTokenId: try f.optionalInt("bos_token_id"),
            eosTokenIds: try f.intOrList("eos_token_id"),
            family: family, slidingWindow: window)
        if family == .cohere {
            logitScale = Float(try f.optionalDouble("logit_scale") ?? 0.0625)
            useQKNorm = try f.optionalBool("use_qk_norm") ?? false
            guard logitScale.isFinite, logitScale > 0 else { throw f.error("logit_scale must be positive, got \(logitScale)") }
        }
        if let act = f.object["hidden_act"]?.string, act != "silu" {
            throw f.error("hidden_act \"\(act)\" is not supported for \(family.rawValue) (Finch implements \"silu\")")
        }
        if let types = f.object["layer_types"], !types.isNull {
            guard let list = types.array?.compactMap(\.string), list.count == types.array?.count else {
                throw f.error("layer_types must be a list of strings")
            }
            if let other = list.first(where: { $0 != "full_attention" && $0 != "sliding_attention" }) {
                throw f.error("layer_types entry \"\(other)\" is not supported (Finch implements \"full_attention\" and \"sliding_attention\")")
            }
        }
        if let tp = try f.optionalInt("pretraining_tp"), tp != 1 {
            throw f.error("pretraining_tp \(tp) is not supported (Finch implements 1)")
        }
        // rope_theta at the top level (transformers 4) or under rope_parameters (transformers 5).
        ropeTheta = Float(try f.rotary(theta: f.optionalDouble("rope_theta")).theta ?? 10_000)
        try f.requirePositive(["hidden_size": hiddenSize, "num_attention_heads": headCount,
                               "num_key_value_heads": keyValueHeadCount, "num_hidden_layers": layerCount,
                               "vocab_size": vocabularySize, "intermediate_size": intermediateSize])
        guard headCount % keyValueHeadCount == 0 else {
            throw f.error("num_attention_heads \(headCount) is not a multiple of num_key_value_heads \(keyValueHeadCount)")
        }
        guard headDimension > 0, headDimension % 2 == 0 else {
            let source = f.object["head_dim"]?.isNull == false ? "head_dim" : "head_dim (hidden_size / num_attention_heads)"
            throw f.error("\(source) \(headDimension) must be positive and even for rotary embeddings")
        }
        try f.requirePositive(["max_position_embeddings": maxPositionEmbeddings])
        // A negative epsilon makes a norm of small values the root of a negative number: NaN from the first layer.
        guard rmsNormEpsilon >= 0, rmsNormEpsilon.isFinite else { throw f.error("rms_norm_eps must be 0 or positive, got \(rmsNormEpsilon)") }
        guard ropeTheta > 0, ropeTheta.isFinite else { throw f.error("rope_theta must be positive, got \(ropeTheta)") }
    }

    /// The window of a config that uses one: Mistral's `sliding_window` (null: none); Qwen2's when
    /// `use_sliding_window` is true or `layer_types` names sliding layers. LLaMA has none.
    static func slidingWindow(_ f: ConfigFields, family: Family) throws -> Int? {
        let sliding = f.object["layer_types"]?.array?.contains { $0.string == "sliding_attention" } ?? false
        switch family {
        case .llama, .cohere:
            if sliding { throw f.error("layer_types names \"sliding_attention\" layers, which \(family.rawValue) does not have") }
            return nil
        case .qwen2:
            guard try f.optionalBool("use_sliding_window") ?? false || sliding else { return nil }
        case .mistral:
            break
        }
        guard let window = try f.optionalInt("sliding_window") else {
            if sliding { throw f.error("layer_types names \"sliding_attention\" layers but sliding_window is missing") }
            return nil
        }
        guard window > 0 else { throw f.error("sliding_window must be positive, got \(window)") }
        return window
    }
}

/// The GELU a GPT-style MLP applies: exact (`gelu`) or the tanh approximation (`gelu_new` and its aliases).
public enum GELUActivation: String, Sendable { case gelu, geluTanh }

/// GPT-2: LayerNorm, learned positions, GELU MLP, fused QKV in `Conv1D` layout.
public struct GPT2Config: Sendable, Equatable {
    public typealias Activation = GELUActivation

    public var vocabularySize: Int
    public var embeddingSize: Int
    public var layerCount: Int
    public var headCount: Int
    public var maxPositions: Int
    public var innerSize: Int
    public var layerNormEpsilon: Float
    public var activation: Activation
    public var scaleAttentionWeights: Bool
    public var tieWordEmbeddings: Bool
    public var bosTokenId: Int?
    public var eosTokenIds: [Int]

    public init(vocabularySize: Int, embeddingSize: Int, layerCount: Int, headCount: Int, maxPositions: Int = 1024,
                innerSize: Int? = nil, layerNormEpsilon: Float = 1e-5, activation: Activation = .geluTanh,
                scaleAttentionWeights: Bool = true, tieWordEmbeddings: Bool = true, bosTokenId: Int? = nil,
                eosTokenIds: [Int] = []) {
        self.vocabularySize = vocabularySize
        self.embeddingSize = embeddingSize
        self.layerCount = layerCount
        self.headCount = headCount
        self.maxPositions = maxPositions
        self.innerSize = innerSize ?? 4 * embeddingSize
        self.layerNormEpsilon = layerNormEpsilon
        self.activation = activation
        self.scaleAttentionWeights = scaleAttentionWeights
        self.tieWordEmbeddings = tieWordEmbeddings
        self.bosTokenId = bosTokenId
        self.eosTokenIds = eosTokenIds
    }

    init(_ f: ConfigFields) throws {
        vocabularySize = try f.int("vocab_size")
        embeddingSize = try f.int("n_embd")
        layerCount = try f.int("n_layer")
        headCount = try f.int("n_head")
        maxPositions = try f.optionalInt("n_positions") ?? 1024
        innerSize = try f.optionalInt("n_inner") ?? 4 * embeddingSize
        layerNormEpsilon = Float(try f.optionalDouble("layer_norm_epsilon") ?? 1e-5)
        activation = try f.gelu("activation_function", default: "gelu_new", for: "gpt2")
        scaleAttentionWeights = try f.optionalBool("scale_attn_weights") ?? true
        if try f.optionalBool("scale_attn_by_inverse_layer_idx") == true {
            throw f.error("scale_attn_by_inverse_layer_idx is not supported")
        }
        if try f.optionalBool("add_cross_attention") == true {
            throw f.error("add_cross_attention is not supported (Finch implements decoder-only GPT-2)")
        }
        tieWordEmbeddings = try f.optionalBool("tie_word_embeddings") ?? true
        bosTokenId = try f.optionalInt("bos_token_id")
        eosTokenIds = try f.intOrList("eos_token_id")
        try f.requirePositive(["n_embd": embeddingSize, "n_layer": layerCount, "n_head": headCount,
                               "vocab_size": vocabularySize, "n_positions": maxPositions])
        guard embeddingSize % headCount == 0 else { throw f.error("n_embd \(embeddingSize) is not a multiple of n_head \(headCount)") }
        guard layerNormEpsilon >= 0, layerNormEpsilon.isFinite else {
            throw f.error("layer_norm_epsilon must be 0 or positive, got \(layerNormEpsilon)")
        }
    }
}

/// Typed access to config.json fields, with errors naming the file and key.
struct ConfigFields {
    let object: [String: JSONValue]
    let path: String

    func error(_ message: String) -> FormatError { FormatError(file: path, message) }

    /// The GELU `key` names (`defaultName` when absent), or an error naming the family's choices.
    func gelu(_ key: String, default defaultName: String, for family: String) throws -> GELUActivation {
        let name = object[key]?.string ?? defaultName
        switch name {
        case "gelu_new", "gelu_pytorch_tanh", "gelu_fast": return .geluTanh
        case "gelu": return .gelu
        default: throw error("\(key) \"\(name)\" is not supported for \(family) (Finch implements gelu_new, gelu_pytorch_tanh, gelu_fast and gelu)")
        }
    }

    /// The rotary base and the rotating share of each head from `rope_parameters` or `rope_scaling` (transformers
    /// 5), over the top-level values given (transformers 4); a rotary type other than the plain one is refused.
    func rotary(theta: Double?, partial: Double? = nil) throws -> (theta: Double?, partial: Double?) {
        var (theta, partial) = (theta, partial)
        for key in ["rope_parameters", "rope_scaling"] {
            guard let value = object[key], !value.isNull else { continue }
            guard let p = value.object else { throw error("\(key) must be an object") }
            let type = p["rope_type"]?.string ?? p["type"]?.string ?? "default"
            guard type == "default" else {
                throw error("\(key) type \"\(type)\" is not supported (Finch implements plain rotary embeddings, \"default\")")
            }
            if let t = p["rope_theta"]?.number { theta = t }
            if let r = p["partial_rotary_factor"]?.number { partial = r }
        }
        return (theta, partial)
    }

    func int(_ key: String) throws -> Int {
        guard let v = try optionalInt(key) else { throw error("missing \"\(key)\" (an integer)") }
        return v
    }

    func optionalInt(_ key: String) throws -> Int? {
        guard let value = object[key], !value.isNull else { return nil }
        guard let i = value.int else { throw error("\"\(key)\" must be an integer, got \(value.summary)") }
        return i
    }

    func optionalDouble(_ key: String) throws -> Double? {
        guard let value = object[key], !value.isNull else { return nil }
        guard let d = value.number else { throw error("\"\(key)\" must be a number, got \(value.summary)") }
        return d
    }

    func optionalBool(_ key: String) throws -> Bool? {
        guard let value = object[key], !value.isNull else { return nil }
        guard let b = value.bool else { throw error("\"\(key)\" must be true or false, got \(value.summary)") }
        return b
    }

    func intOrList(_ key: String) throws -> [Int] {
        guard let value = object[key], !value.isNull else { return [] }
        if let list = value.array {
            let ints = list.compactMap(\.int)
            guard ints.count == list.count else { throw error("\"\(key)\" must be an integer or a list of integers") }
            return ints
        }
        return [try int(key)]
    }

    func requirePositive(_ values: [String: Int]) throws {
        for (key, v) in values.sorted(by: { $0.key < $1.key }) where v <= 0 {
            throw error("\"\(key)\" must be positive, got \(v)")
        }
    }
}
