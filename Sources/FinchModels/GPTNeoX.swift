import FinchFormats
import FinchNN
import FinchTensor

/// GPT-NeoX attention: one fused projection whose output is, head by head, that head's q, k and v; rotary
/// positions on the first `rotaryDimensions` of each head's q and k (the rest pass unrotated); scores scaled by
/// 1/√head_dim, causal.
public final class GPTNeoXAttention: Module {
    @Child public var queryKeyValue: any LinearLayer
    @Child public var dense: any LinearLayer
    let headCount: Int
    let headDimension: Int
    let rotaryDimensions: Int
    let rotary: RotaryTable?

    init(_ c: GPTNeoXConfig, rotary: RotaryTable?) {
        queryKeyValue = Linear(inputDimensions: c.hiddenSize, outputDimensions: 3 * c.hiddenSize, bias: c.attentionBias)
        dense = Linear(inputDimensions: c.hiddenSize, outputDimensions: c.hiddenSize, bias: c.attentionBias)
        headCount = c.headCount
        headDimension = c.headDimension
        rotaryDimensions = c.rotaryDimensions
        self.rotary = rotary
    }

    func callAsFunction(_ x: Tensor, positionOffset: Int, cache: LayerCache?, prefix: (key: Tensor, value: Tensor)?,
                        recordStarts: [Int32]? = nil) throws -> Tensor {
        let (b, t, d) = (x.shape[0], x.shape[1], headDimension)
        let qkv = try queryKeyValue(x).reshaped([b, t, headCount, 3 * d])  // [B, T, H, (q | k | v)]
        let q = try rotated(qkv.slice(axis: 3, 0..<d), positionOffset: positionOffset, recordStarts: recordStarts)
        let k = try rotated(qkv.slice(axis: 3, d..<(2 * d)), positionOffset: positionOffset, recordStarts: recordStarts)
        let v = try qkv.slice(axis: 3, (2 * d)..<(3 * d))
        let (keys, values) = try cache?.append(key: k, value: v) ?? (k, v)
        let out = try Tensor.scaledDotProductAttention(query: q, key: keys, value: values, prefix: prefix, causal: true,
                                                       firstKeys: recordStarts)
        return try dense(Heads.merge(out))
    }

    /// x [B, T, H, D] with its first `rotaryDimensions` rotated for their positions, the rest as they are.
    private func rotated(_ x: Tensor, positionOffset: Int, recordStarts: [Int32]?) throws -> Tensor {
        guard let rotary else { return x }
        let head = try x.slice(axis: 3, 0..<rotaryDimensions)
        let turned: Tensor
        if let recordStarts {
            let t = x.shape[1]
            turned = try head.rotaryEmbedding(rotary, positions: recordStarts.indices.map { Int32(positionOffset + $0 % t) - recordStarts[$0] })
        } else {
            turned = try head.rotaryEmbedding(rotary, offset: positionOffset, sequenceAxis: 1)
        }
        guard rotaryDimensions < headDimension else { return turned }
        return try Tensor.concatenate([turned, x.slice(axis: 3, rotaryDimensions..<headDimension)], axis: 3)
    }
}

/// GPT-NeoX's feed-forward: dense_4h_to_h(gelu(dense_h_to_4h(x))).
public final class GPTNeoXMLP: Module {
    @Child public var denseHTo4h: any LinearLayer
    @Child public var dense4hToH: any LinearLayer
    let activation: GPTNeoXConfig.Activation

    init(_ c: GPTNeoXConfig) {
        denseHTo4h = Linear(inputDimensions: c.hiddenSize, outputDimensions: c.intermediateSize, bias: true)
        dense4hToH = Linear(inputDimensions: c.intermediateSize, outputDimensions: c.hiddenSize, bias: true)
        activation = c.activation
    }

    func callAsFunction(_ x: Tensor) throws -> Tensor {
        try dense4hToH(denseHTo4h(x).gelu(approximation: activation.approximation))
    }
}

/// One GPT-NeoX block: x + attn(ln₁(x)) + mlp(ln₂(x)) with the parallel residual (Pythia), else
/// h = x + attn(ln₁(x)), h + mlp(ln₂(h)).
public final class GPTNeoXLayer: Module {
    public let inputLayernorm: LayerNorm
    public let postAttentionLayernorm: LayerNorm
    public let attention: GPTNeoXAttention
    public let mlp: GPTNeoXMLP
    let parallel: Bool

    init(_ c: GPTNeoXConfig, rotary: RotaryTable?) {
        inputLayernorm = LayerNorm(dimensions: c.hiddenSize, epsilon: c.layerNormEpsilon)
        postAttentionLayernorm = LayerNorm(dimensions: c.hiddenSize, epsilon: c.layerNormEpsilon)
        attention = GPTNeoXAttention(c, rotary: rotary)
        mlp = GPTNeoXMLP(c)
        parallel = c.useParallelResidual
    }

    func callAsFunction(_ x: Tensor, positionOffset: Int, cache: LayerCache?, prefix: (key: Tensor, value: Tensor)?,
                        recordStarts: [Int32]? = nil) throws -> Tensor {
        let attended = try attention(inputLayernorm(x), positionOffset: positionOffset, cache: cache, prefix: prefix,
                                     recordStarts: recordStarts)
        if parallel { return try x + attended + mlp(postAttentionLayernorm(x)) }
        let h = try x + attended
        return try h + mlp(postAttentionLayernorm(h))
    }
}

/// The GPT-NeoX stack (`gpt_neox.` in Hugging Face keys).
public final class GPTNeoXModel: Module {
    @Child public var embedIn: any EmbeddingLayer
    public let layers: [GPTNeoXLayer]
    public let finalLayerNorm: LayerNorm

    init(_ c: GPTNeoXConfig) throws {
        let rotary = c.rotaryDimensions > 0
            ? try RotaryTable(headDimension: c.rotaryDimensions, theta: c.ropeTheta, maxPositions: c.maxPositionEmbeddings) : nil
        embedIn = Embedding(count: c.vocabularySize, dimensions: c.hiddenSize)
        layers = (0..<c.layerCount).map { _ in GPTNeoXLayer(c, rotary: rotary) }
        finalLayerNorm = LayerNorm(dimensions: c.hiddenSize, epsilon: c.layerNormEpsilon)
    }
}

/// `GPTNeoXForCausalLM`: the stack and its `embed_out` head (the embedding table when tied).
public final class GPTNeoXForCausalLM: Module, CausalLanguageModel {
    public let gptNeox: GPTNeoXModel
    /// nil when tied: the head reads `gpt_neox.embed_in.weight`.
    public private(set) var embedOut: Linear?
    public private(set) var neoXConfig: GPTNeoXConfig
    public var checkpointsActivations = false

    public init(_ c: GPTNeoXConfig) throws {
        neoXConfig = c
        gptNeox = try GPTNeoXModel(c)
        embedOut = c.tieWordEmbeddings ? nil : Linear(inputDimensions: c.hiddenSize, outputDimensions: c.vocabularySize)
    }

    public var config: ModelConfig { .gptNeoX(neoXConfig) }

    public var outputWeight: HeadWeight { embedOut.map { .dense($0.weight) } ?? gptNeox.embedIn.headWeight }

    public func headInputs(_ hidden: Tensor) throws -> (hidden: Tensor, weight: HeadWeight) {
        if let embedOut { return (hidden, .dense(embedOut.weight)) }
        return try gptNeox.embedIn.tiedHeadInputs(hidden)
    }

    public func untieWordEmbeddings() throws {
        guard embedOut == nil else { return }
        guard let table = gptNeox.embedIn.headWeight.tensor else {
            throw TensorError.invalidArgument(op: "untie the head", message: "gpt_neox.embed_in is held quantised, so the head cannot get a float table of its own; load the base with quantize: none")
        }
        embedOut = Linear(weight: table)
        neoXConfig.tieWordEmbeddings = false
    }

    public func hiddenStates(_ tokens: [Int32], batch: Int, length: Int, cache: KVCache?, prefix: AttentionPrefix?,
                             recordStarts: [Int32]?) throws -> Tensor {
        let offset = try checkedOffset(tokens, batch: batch, length: length, cache: cache, prefix: prefix,
                                       recordStarts: recordStarts)
        let x = try gptNeox.embedIn(tokens, shape: [batch, length])
        let hidden = try runLayers(gptNeox.layers, x, batch: batch, cache: cache, prefix: prefix) { layer, x, layerCache, prefix in
            try layer(x, positionOffset: offset, cache: layerCache, prefix: prefix, recordStarts: recordStarts)
        }
        return try gptNeox.finalLayerNorm(hidden)
    }

    public func storesTransposed(_ name: String) -> Bool { false }

    /// Buffers older checkpoints saved beside the weights (the causal mask, the rotary frequencies).
    public func isIgnorableCheckpointKey(_ name: String) -> Bool {
        name.hasSuffix(".attention.bias") || name.hasSuffix(".attention.masked_bias")
            || name.hasSuffix("rotary_emb.inv_freq") || (neoXConfig.tieWordEmbeddings && name == "embed_out.weight")
    }
}
