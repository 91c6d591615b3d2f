/// GPT-NeoX (EleutherAI's Pythia): LayerNorm with biases, one fused `query_key_value` projection laid out head by
/// head (each head's q, k and v rows together), rotary positions on the first `rotaryDimensions` of each head only,
/// a GELU MLP, attention and MLP side by side on the same input (`use_parallel_residual`) or one after the other,
/// and an untied `embed_out` head.
public struct GPTNeoXConfig: Sendable, Equatable {
    public typealias Activation = GELUActivation

    public var vocabularySize: Int
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var layerCount: Int
    public var headCount: Int
    /// The leading dimensions of each head that rotate (`head_dim · partial_rotary_factor`, rounded down).
    public var rotaryDimensions: Int
    public var ropeTheta: Float
    public var maxPositionEmbeddings: Int
    public var layerNormEpsilon: Float
    public var useParallelResidual: Bool
    public var activation: Activation
    public var attentionBias: Bool
    public var tieWordEmbeddings: Bool
    public var bosTokenId: Int?
    public var eosTokenIds: [Int]

    public var headDimension: Int { hiddenSize / headCount }

    public init(vocabularySize: Int, hiddenSize: Int, intermediateSize: Int, layerCount: Int, headCount: Int,
                rotaryFraction: Double = 0.25, ropeTheta: Float = 10_000, maxPositionEmbeddings: Int = 2048,
                layerNormEpsilon: Float = 1e-5, useParallelResidual: Bool = true, activation: Activation = .gelu,
                attentionBias: Bool = true, tieWordEmbeddings: Bool = false, bosTokenId: Int? = nil,
                eosTokenIds: [Int] = []) {
        self.vocabularySize = vocabularySize
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.layerCount = layerCount
        self.headCount = headCount
        rotaryDimensions = headCount > 0 ? Int(Double(hiddenSize / headCount) * rotaryFraction) : 0
        self.ropeTheta = ropeTheta
        self.maxPositionEmbeddings = maxPositionEmbeddings
        self.layerNormEpsilon = layerNormEpsilon
        self.useParallelResidual = useParallelResidual
        self.activation = activation
        self.attentionBias = attentionBias
        self.tieWordEmbeddings = tieWordEmbeddings
        self.bosTokenId = bosTokenId
        self.eosTokenIds = eosTokenIds
    }

    init(_ f: ConfigFields) throws {
        let hidden = try f.int("hidden_size"), heads = try f.int("num_attention_heads")
        try f.requirePositive(["hidden_size": hidden, "num_attention_heads": heads])
        // The rotary base and fraction at the top level (transformers 4: rotary_emb_base, rotary_pct) or under
        // rope_parameters (transformers 5: rope_theta, partial_rotary_factor).
        let (theta, fraction) = try f.rotary(theta: f.optionalDouble("rotary_emb_base") ?? f.optionalDouble("rope_theta"),
                                             partial: f.optionalDouble("rotary_pct") ?? f.optionalDouble("partial_rotary_factor"))
        let activation = try f.gelu("hidden_act", default: "gelu", for: "gpt_neox")
        let share = fraction ?? 0.25
        guard share >= 0, share <= 1 else { throw f.error("partial_rotary_factor (rotary_pct) must be from 0 to 1, got \(share)") }
        self.init(vocabularySize: try f.int("vocab_size"), hiddenSize: hidden,
                  intermediateSize: try f.int("intermediate_size"), layerCount: try f.int("num_hidden_layers"),
                  headCount: heads, rotaryFraction: fraction ?? 0.25, ropeTheta: Float(theta ?? 10_000),
                  maxPositionEmbeddings: try f.optionalInt("max_position_embeddings") ?? 2048,
                  layerNormEpsilon: Float(try f.optionalDouble("layer_norm_eps") ?? 1e-5),
                  useParallelResidual: try f.optionalBool("use_parallel_residual") ?? true, activation: activation,
                  attentionBias: try f.optionalBool("attention_bias") ?? true,
                  tieWordEmbeddings: try f.optionalBool("tie_word_embeddings") ?? false,
                  bosTokenId: try f.optionalInt("bos_token_id"), eosTokenIds: try f.intOrList("eos_token_id"))
        try f.requirePositive(["vocab_size": vocabularySize, "intermediate_size": intermediateSize,
                               "num_hidden_layers": layerCount, "max_position_embeddings": maxPositionEmbeddings])
        guard hiddenSize % headCount == 0 else {
            throw f.error("hidden_size \(hiddenSize) is not a multiple of num_attention_heads \(headCount)")
        }
        guard rotaryDimensions % 2 == 0 else {
            throw f.error("the rotary share of each head, \(rotaryDimensions) of \(headDimension) dimensions (partial_rotary_factor \(share)), must be even")
        }
        guard ropeTheta > 0, ropeTheta.isFinite else { throw f.error("rope_theta (rotary_emb_base) must be positive, got \(ropeTheta)") }
        guard layerNormEpsilon >= 0, layerNormEpsilon.isFinite else {
            throw f.error("layer_norm_eps must be 0 or positive, got \(layerNormEpsilon)")
        }
    }
}
