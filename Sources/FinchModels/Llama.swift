import FinchFormats
import FinchNN
import FinchTensor

/// One LLaMA block: pre-norm attention and a SwiGLU MLP, each added back to the residual stream.
public final class LlamaDecoderLayer: Module {
    public let selfAttn: Attention
    public let mlp: GatedMLP
    public let inputLayernorm: RMSNorm
    public let postAttentionLayernorm: RMSNorm

    init(_ c: LlamaConfig, rotary: RotaryTable) {
        selfAttn = Attention(dimensions: c.hiddenSize, headCount: c.headCount, keyValueHeadCount: c.keyValueHeadCount,
                             headDimension: c.headDimension, bias: c.attentionBias, rotary: rotary)
        mlp = GatedMLP(dimensions: c.hiddenSize, hiddenDimensions: c.intermediateSize, bias: c.mlpBias)
        inputLayernorm = RMSNorm(dimensions: c.hiddenSize, epsilon: c.rmsNormEpsilon)
        postAttentionLayernorm = RMSNorm(dimensions: c.hiddenSize, epsilon: c.rmsNormEpsilon)
    }

    func callAsFunction(_ x: Tensor, positionOffset: Int, cache: LayerCache?, prefix: (key: Tensor, value: Tensor)?,
                        recordStarts: [Int32]? = nil) throws -> Tensor {
        let h = try x + selfAttn(inputLayernorm(x), positionOffset: positionOffset, cache: cache, prefix: prefix,
                                 recordStarts: recordStarts)
        return try h + mlp(postAttentionLayernorm(h))
    }
}

/// The LLaMA decoder stack (`model.` in Hugging Face keys).
public final class LlamaModel: Module {
    @Child public var embedTokens: any EmbeddingLayer
    public let layers: [LlamaDecoderLayer]
    public let norm: RMSNorm

    init(_ c: LlamaConfig) throws {
        let rotary = try RotaryTable(headDimension: c.headDimension, theta: c.ropeTheta,
                                     maxPositions: c.maxPositionEmbeddings)
        embedTokens = Embedding(count: c.vocabularySize, dimensions: c.hiddenSize)
        layers = (0..<c.layerCount).map { _ in LlamaDecoderLayer(c, rotary: rotary) }
        norm = RMSNorm(dimensions: c.hiddenSize, epsilon: c.rmsNormEpsilon)
    }
}

/// `LlamaForCausalLM`: the decoder and a language-model head (tied to the embeddings when the config says so).
public final class LlamaForCausalLM: Module, CausalLanguageModel {
    public let model: LlamaModel
    /// nil when tied: the head reads `model.embed_tokens.weight`.
    public private(set) var lmHead: Linear?
    public private(set) var llamaConfig: LlamaConfig
    public var checkpointsActivations = false

    public init(_ c: LlamaConfig) throws {
        llamaConfig = c
        model = try LlamaModel(c)
        lmHead = c.tieWordEmbeddings ? nil : Linear(inputDimensions: c.hiddenSize, outputDimensions: c.vocabularySize)
    }

    public var config: ModelConfig { .llama(llamaConfig) }
    public var layerCount: Int { llamaConfig.layerCount }
    public var keyValueHeadCount: Int { llamaConfig.keyValueHeadCount }
    public var headDimension: Int { llamaConfig.headDimension }
    public var hiddenSize: Int { llamaConfig.hiddenSize }

    public var outputWeight: Tensor { lmHead?.weight ?? model.embedTokens.weight }

    public func headInputs(_ hidden: Tensor) throws -> (hidden: Tensor, weight: Tensor) {
        if let lmHead { return (hidden, lmHead.weight) }
        return try model.embedTokens.tiedHeadInputs(hidden)
    }

    public func untieWordEmbeddings() throws {
        guard lmHead == nil else { return }
        lmHead = Linear(weight: model.embedTokens.weight)
        llamaConfig.tieWordEmbeddings = false
    }

    public func hiddenStates(_ tokens: [Int32], batch: Int, length: Int, cache: KVCache?, prefix: AttentionPrefix?,
                             recordStarts: [Int32]?) throws -> Tensor {
        let offset = positionOffset(cache: cache, prefix: prefix)
        try checkInputs(tokens, batch: batch, length: length, config: config, positionOffset: offset,
                        recordStarts: recordStarts, cache: cache)
        var x = try model.embedTokens(tokens, shape: [batch, length])  // [B, T, C]
        let prefixes = try prefixKeysAndValues(prefix, batch: batch)
        for (i, layer) in model.layers.enumerated() {
            let layerCache = cache?.layers[i]
            x = try runLayer(x, isLast: i == model.layers.count - 1, cache: layerCache,
                             prefix: prefixes?[i]) { x, prefix in
                try layer(x, positionOffset: offset, cache: layerCache, prefix: prefix, recordStarts: recordStarts)
            }
        }
        return try model.norm(x)
    }

    public func storesTransposed(_ name: String) -> Bool { false }

    public func isIgnorableCheckpointKey(_ name: String) -> Bool {
        name.hasSuffix("rotary_emb.inv_freq") || (llamaConfig.tieWordEmbeddings && name == "lm_head.weight")
    }
}
