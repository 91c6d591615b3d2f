import FinchFormats
import FinchNN
import FinchTensor

/// One LLaMA block: pre-norm attention and a SwiGLU MLP, each added back to the residual stream. Qwen2 and
/// Mistral are this block too; where they differ is their config (`LlamaConfig.Family`).
public final class LlamaDecoderLayer: Module {
    public let selfAttn: Attention
    public let mlp: GatedMLP
    public let inputLayernorm: RMSNorm
    public let postAttentionLayernorm: RMSNorm

    init(_ c: LlamaConfig, rotary: RotaryTable) {
        selfAttn = Attention(dimensions: c.hiddenSize, headCount: c.headCount, keyValueHeadCount: c.keyValueHeadCount,
                             headDimension: c.headDimension, bias: c.attentionBias,
                             outputBias: c.attentionOutputBias, rotary: rotary, window: c.slidingWindow)
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

    public var outputWeight: HeadWeight { lmHead.map { .dense($0.weight) } ?? model.embedTokens.headWeight }

    public func headInputs(_ hidden: Tensor) throws -> (hidden: Tensor, weight: HeadWeight) {
        if let lmHead { return (hidden, .dense(lmHead.weight)) }
        return try model.embedTokens.tiedHeadInputs(hidden)
    }

    public func untieWordEmbeddings() throws {
        guard lmHead == nil else { return }
        guard let table = model.embedTokens.headWeight.tensor else {
            throw TensorError.invalidArgument(op: "untie the head", message: "model.embed_tokens is held quantised, so the head cannot get a float table of its own; load the base with quantize: none")
        }
        lmHead = Linear(weight: table)
        llamaConfig.tieWordEmbeddings = false
    }

    public func hiddenStates(_ tokens: [Int32], batch: Int, length: Int, cache: KVCache?, prefix: AttentionPrefix?,
                             recordStarts: [Int32]?) throws -> Tensor {
        let offset = try checkedOffset(tokens, batch: batch, length: length, cache: cache, prefix: prefix,
                                       recordStarts: recordStarts)
        // transformers' sliding window counts a prefix's virtual keys among the window; Finch's attention always
        // shows them, which is the same only while the prefix and the sequence fit in the window.
        if let prefix, let window = llamaConfig.slidingWindow, offset + length > window {
            throw TensorError.invalidArgument(op: llamaConfig.family.rawValue, message: "a prefix of \(prefix.length) virtual tokens and \(offset + length - prefix.length) positions exceed sliding_window \(window); Finch runs prefix tuning with a sliding window within the window only")
        }
        let x = try model.embedTokens(tokens, shape: [batch, length])  // [B, T, C]
        let hidden = try runLayers(model.layers, x, batch: batch, cache: cache, prefix: prefix) { layer, x, layerCache, prefix in
            try layer(x, positionOffset: offset, cache: layerCache, prefix: prefix, recordStarts: recordStarts)
        }
        return try model.norm(hidden)
    }

    public func storesTransposed(_ name: String) -> Bool { false }

    public func isIgnorableCheckpointKey(_ name: String) -> Bool {
        name.hasSuffix("rotary_emb.inv_freq") || (llamaConfig.tieWordEmbeddings && name == "lm_head.weight")
    }
}
