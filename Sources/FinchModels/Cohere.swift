import FinchFormats
import FinchNN
import FinchTensor

/// Cohere's LayerNorm: (x − μ)/√(σ² + ε) times a weight, no bias, over the last axis. Its weight is [D] (the
/// block's and the final norm), or [heads, head_dim] for the per-head q and k norms.
public final class CohereLayerNorm: Module {
    public let weight: Tensor
    let epsilon: Float

    init(shape: [Int], epsilon: Float) {
        weight = Tensor.ones(shape)
        self.epsilon = epsilon
    }

    func callAsFunction(_ x: Tensor) throws -> Tensor {
        if weight.rank == 1 { return try x.layerNorm(weight: weight, bias: nil, epsilon: epsilon) }
        // Per head: normalised with unit weight, then each head's row of the weight.
        return try x.layerNorm(weight: Tensor.ones([weight.shape[1]]), bias: nil, epsilon: epsilon) * weight
    }
}

/// Cohere attention: LLaMA's projections; with `use_qk_norm`, q and k normalised per head; rotary positions on
/// interleaved pairs (2i, 2i + 1). The pairs are gathered into LLaMA's halves (evens, then odds) for q, k and the
/// prefix's keys alike: the scores do not change when q and k have their dimensions in one same order, and the
/// rotary op of the halves then applies.
public final class CohereAttention: Module {
    @Child public var qProj: any LinearLayer
    @Child public var kProj: any LinearLayer
    @Child public var vProj: any LinearLayer
    @Child public var oProj: any LinearLayer
    public let qNorm: CohereLayerNorm?
    public let kNorm: CohereLayerNorm?
    let headCount: Int
    let keyValueHeadCount: Int
    let rotary: RotaryTable

    init(_ c: LlamaConfig, rotary: RotaryTable) {
        let (h, d) = (c.hiddenSize, c.headDimension)
        qProj = Linear(inputDimensions: h, outputDimensions: c.headCount * d, bias: c.attentionBias)
        kProj = Linear(inputDimensions: h, outputDimensions: c.keyValueHeadCount * d, bias: c.attentionBias)
        vProj = Linear(inputDimensions: h, outputDimensions: c.keyValueHeadCount * d, bias: c.attentionBias)
        oProj = Linear(inputDimensions: c.headCount * d, outputDimensions: h, bias: c.attentionBias)
        qNorm = c.useQKNorm ? CohereLayerNorm(shape: [c.headCount, d], epsilon: c.rmsNormEpsilon) : nil
        kNorm = c.useQKNorm ? CohereLayerNorm(shape: [c.keyValueHeadCount, d], epsilon: c.rmsNormEpsilon) : nil
        headCount = c.headCount
        keyValueHeadCount = c.keyValueHeadCount
        self.rotary = rotary
    }

    func callAsFunction(_ x: Tensor, positionOffset: Int, cache: LayerCache?, prefix: (key: Tensor, value: Tensor)?,
                        recordStarts: [Int32]?) throws -> Tensor {
        var q = try Heads.split(qProj(x), heads: headCount)
        var k = try Heads.split(kProj(x), heads: keyValueHeadCount)
        let v = try Heads.split(vProj(x), heads: keyValueHeadCount)
        if let qNorm, let kNorm {
            q = try qNorm(q)
            k = try kNorm(k)
        }
        q = try Self.halves(q)
        k = try Self.halves(k)
        if let recordStarts {
            let t = x.shape[1]
            let positions = recordStarts.indices.map { Int32(positionOffset + $0 % t) - recordStarts[$0] }
            q = try q.rotaryEmbedding(rotary, positions: positions)
            k = try k.rotaryEmbedding(rotary, positions: positions)
        } else {
            q = try q.rotaryEmbedding(rotary, offset: positionOffset, sequenceAxis: 1)
            k = try k.rotaryEmbedding(rotary, offset: positionOffset, sequenceAxis: 1)
        }
        let (keys, values) = try cache?.append(key: k, value: v) ?? (k, v)
        let gathered = try prefix.map { (key: try Self.halves($0.key), value: $0.value) }
        let out = try Tensor.scaledDotProductAttention(query: q, key: keys, value: values, prefix: gathered, causal: true,
                                                       firstKeys: recordStarts)
        return try oProj(Heads.merge(out))
    }

    /// [..., D] with its dimensions reordered from interleaved pairs to halves: 0, 2, 4, …, then 1, 3, 5, ….
    static func halves(_ x: Tensor) throws -> Tensor {
        let shape = x.shape, d = shape.last!
        let pairs = try x.reshaped(Array(shape.dropLast()) + [d / 2, 2])
        let r = pairs.rank
        return try pairs.permuted(Array(0..<(r - 2)) + [r - 1, r - 2]).reshaped(shape)
    }
}

/// One Cohere block: one norm, attention and the MLP side by side on it, both added to the residual.
public final class CohereDecoderLayer: Module {
    public let selfAttn: CohereAttention
    public let mlp: GatedMLP
    public let inputLayernorm: CohereLayerNorm

    init(_ c: LlamaConfig, rotary: RotaryTable) {
        selfAttn = CohereAttention(c, rotary: rotary)
        mlp = GatedMLP(dimensions: c.hiddenSize, hiddenDimensions: c.intermediateSize, bias: false)
        inputLayernorm = CohereLayerNorm(shape: [c.hiddenSize], epsilon: c.rmsNormEpsilon)
    }

    func callAsFunction(_ x: Tensor, positionOffset: Int, cache: LayerCache?, prefix: (key: Tensor, value: Tensor)?,
                        recordStarts: [Int32]?) throws -> Tensor {
        let h = try inputLayernorm(x)
        return try x + selfAttn(h, positionOffset: positionOffset, cache: cache, prefix: prefix, recordStarts: recordStarts)
            + mlp(h)
    }
}

/// The Cohere stack (`model.` in Hugging Face keys).
public final class CohereModel: Module {
    @Child public var embedTokens: any EmbeddingLayer
    public let layers: [CohereDecoderLayer]
    public let norm: CohereLayerNorm

    init(_ c: LlamaConfig) throws {
        let rotary = try RotaryTable(headDimension: c.headDimension, theta: c.ropeTheta, maxPositions: c.maxPositionEmbeddings)
        embedTokens = Embedding(count: c.vocabularySize, dimensions: c.hiddenSize)
        layers = (0..<c.layerCount).map { _ in CohereDecoderLayer(c, rotary: rotary) }
        norm = CohereLayerNorm(shape: [c.hiddenSize], epsilon: c.rmsNormEpsilon)
    }
}

/// `CohereForCausalLM`: the head is the token table (tied, as Command R has it), the logits scaled by `logit_scale`.
public final class CohereForCausalLM: Module, CausalLanguageModel {
    public let model: CohereModel
    public let cohereConfig: LlamaConfig
    public var checkpointsActivations = false

    public init(_ c: LlamaConfig) throws {
        guard c.tieWordEmbeddings else {
            throw FormatError(file: "config.json", "cohere with tie_word_embeddings false is not supported (its head is the token table)")
        }
        cohereConfig = c
        model = try CohereModel(c)
    }

    public var config: ModelConfig { .llama(cohereConfig) }

    public var outputWeight: HeadWeight { model.embedTokens.headWeight }

    /// logits = (scale · hidden) · Wᵀ: the scale goes on the hidden states, so the fused loss needs nothing new.
    public func headInputs(_ hidden: Tensor) throws -> (hidden: Tensor, weight: HeadWeight) {
        try model.embedTokens.tiedHeadInputs(hidden * cohereConfig.logitScale)
    }

    public func untieWordEmbeddings() throws {
        throw FormatError(file: "config.json", "cohere's head is its token table, so the embedding cannot be adapted apart from the head")
    }

    public func hiddenStates(_ tokens: [Int32], batch: Int, length: Int, cache: KVCache?, prefix: AttentionPrefix?,
                             recordStarts: [Int32]?) throws -> Tensor {
        let offset = try checkedOffset(tokens, batch: batch, length: length, cache: cache, prefix: prefix,
                                       recordStarts: recordStarts)
        let x = try model.embedTokens(tokens, shape: [batch, length])
        let hidden = try runLayers(model.layers, x, batch: batch, cache: cache, prefix: prefix) { layer, x, layerCache, prefix in
            try layer(x, positionOffset: offset, cache: layerCache, prefix: prefix, recordStarts: recordStarts)
        }
        return try model.norm(hidden)
    }

    public func storesTransposed(_ name: String) -> Bool { false }

    public func isIgnorableCheckpointKey(_ name: String) -> Bool {
        name.hasSuffix("rotary_emb.inv_freq") || name == "lm_head.weight"
    }
}
