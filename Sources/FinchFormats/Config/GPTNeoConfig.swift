/// GPT-Neo (EleutherAI's; TinyStories' models): GPT-2's learned positions, LayerNorm and GELU MLP, with separate
/// q/k/v projections (no biases), unscaled attention scores, and layers that alternate global attention with local
/// attention over the last `windowSize` positions.
public struct GPTNeoConfig: Sendable, Equatable {
    public typealias Activation = GELUActivation

    public var vocabularySize: Int
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var layerCount: Int
    public var headCount: Int
    public var maxPositionEmbeddings: Int
    public var windowSize: Int
    /// Per layer: true where its attention is local (sees the last `windowSize` positions only).
    public var localLayers: [Bool]
    public var layerNormEpsilon: Float
    public var activation: Activation
    public var bosTokenId: Int?
    public var eosTokenIds: [Int]

    public var headDimension: Int { hiddenSize / headCount }

    public init(vocabularySize: Int, hiddenSize: Int, intermediateSize: Int? = nil, layerCount: Int, headCount: Int,
                maxPositionEmbeddings: Int = 2048, windowSize: Int = 256, localLayers: [Bool]? = nil,
                layerNormEpsilon: Float = 1e-5, activation: Activation = .geluTanh, bosTokenId: Int? = nil,
                eosTokenIds: [Int] = []) {
        self.vocabularySize = vocabularySize
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize ?? 4 * hiddenSize
        self.layerCount = layerCount
        self.headCount = headCount
        self.maxPositionEmbeddings = maxPositionEmbeddings
        self.windowSize = windowSize
        self.localLayers = localLayers ?? (0..<layerCount).map { $0 % 2 == 1 }
        self.layerNormEpsilon = layerNormEpsilon
        self.activation = activation
        self.bosTokenId = bosTokenId
        self.eosTokenIds = eosTokenIds
    }

    init(_ f: ConfigFields) throws {
        let layers = try f.int("num_layers"), hidden = try f.int("hidden_size"), heads = try f.int("num_heads")
        try f.requirePositive(["num_layers": layers, "hidden_size": hidden, "num_heads": heads])
        let activation = try f.gelu("activation_function", default: "gelu_new", for: "gpt_neo")
        if try f.optionalBool("tie_word_embeddings") == false {
            throw f.error("gpt_neo with tie_word_embeddings false is not supported (its head is the token table)")
        }
        self.init(vocabularySize: try f.int("vocab_size"), hiddenSize: hidden,
                  intermediateSize: try f.optionalInt("intermediate_size"), layerCount: layers, headCount: heads,
                  maxPositionEmbeddings: try f.optionalInt("max_position_embeddings") ?? 2048,
                  windowSize: try f.optionalInt("window_size") ?? 256, localLayers: try Self.localLayers(f, count: layers),
                  layerNormEpsilon: Float(try f.optionalDouble("layer_norm_epsilon") ?? 1e-5), activation: activation,
                  bosTokenId: try f.optionalInt("bos_token_id"), eosTokenIds: try f.intOrList("eos_token_id"))
        try f.requirePositive(["vocab_size": vocabularySize, "intermediate_size": intermediateSize,
                               "max_position_embeddings": maxPositionEmbeddings, "window_size": windowSize])
        guard hiddenSize % headCount == 0 else { throw f.error("hidden_size \(hiddenSize) is not a multiple of num_heads \(headCount)") }
        guard layerNormEpsilon >= 0, layerNormEpsilon.isFinite else {
            throw f.error("layer_norm_epsilon must be 0 or positive, got \(layerNormEpsilon)")
        }
    }

    /// `attention_layers` (one "global" or "local" per layer), else `attention_types` ([[pattern, repeats], …]
    /// expanded as transformers expands it), else global and local alternating.
    static func localLayers(_ f: ConfigFields, count: Int) throws -> [Bool] {
        var names: [String]
        if let list = f.object["attention_layers"], !list.isNull {
            guard let items = list.array?.compactMap(\.string), items.count == list.array?.count else {
                throw f.error("attention_layers must be a list of \"global\" and \"local\"")
            }
            names = items
        } else if let types = f.object["attention_types"], !types.isNull {
            names = []
            for entry in types.array ?? [] {
                guard let pair = entry.array, pair.count == 2, let pattern = pair[0].array?.compactMap(\.string),
                      let repeats = pair[1].number, repeats >= 0, repeats == repeats.rounded(), repeats < 1e6 else {
                    throw f.error("attention_types must be a list of [[\"global\" or \"local\", …], repeats]")
                }
                for _ in 0..<Int(repeats) { names += pattern }
            }
        } else {
            return (0..<count).map { $0 % 2 == 1 }
        }
        guard names.count == count else {
            throw f.error("attention_layers has \(names.count) entries for num_layers \(count)")
        }
        return try names.map { name in
            guard name == "global" || name == "local" else {
                throw f.error("attention type \"\(name)\" is not supported (Finch implements \"global\" and \"local\")")
            }
            return name == "local"
        }
    }
}
