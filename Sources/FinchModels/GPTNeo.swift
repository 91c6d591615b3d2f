import FinchFormats
import FinchNN
import FinchTensor

/// GPT-Neo self-attention: q, k and v without biases, `out_proj` with one, scores unscaled (no 1/√d, as
/// GPT-Neo was trained), causal; a local layer's query sees only the last `windowSize` keys up to itself.
public final class GPTNeoSelfAttention: Module {
    @Child public var kProj: any LinearLayer
    @Child public var vProj: any LinearLayer
    @Child public var qProj: any LinearLayer
    @Child public var outProj: any LinearLayer
    let headCount: Int
    /// The window of a local layer; nil for a global one.
    let window: Int?

    init(_ c: GPTNeoConfig, local: Bool) {
        kProj = Linear(inputDimensions: c.hiddenSize, outputDimensions: c.hiddenSize)
        vProj = Linear(inputDimensions: c.hiddenSize, outputDimensions: c.hiddenSize)
        qProj = Linear(inputDimensions: c.hiddenSize, outputDimensions: c.hiddenSize)
        outProj = Linear(inputDimensions: c.hiddenSize, outputDimensions: c.hiddenSize, bias: true)
        headCount = c.headCount
        window = local ? c.windowSize : nil
    }

    func callAsFunction(_ x: Tensor, cache: LayerCache?, prefix: (key: Tensor, value: Tensor)?,
                        recordStarts: [Int32]?) throws -> Tensor {
        let (b, t) = (x.shape[0], x.shape[1])
        let cached = cache?.length ?? 0
        let q = try Heads.split(qProj(x), heads: headCount)
        let k = try Heads.split(kProj(x), heads: headCount)
        let v = try Heads.split(vProj(x), heads: headCount)
        let (keys, values) = try cache?.append(key: k, value: v) ?? (k, v)
        let firstKeys = SlidingWindow.firstKeys(window, batch: b, length: t, cached: cached, recordStarts: recordStarts)
        let out = try Tensor.scaledDotProductAttention(query: q, key: keys, value: values, prefix: prefix, causal: true,
                                                       scale: 1, firstKeys: firstKeys)
        return try outProj(Heads.merge(out))
    }
}

/// The `attn` of a block, holding the self-attention as transformers nests it (`attn.attention.q_proj`).
public final class GPTNeoAttention: Module {
    public let attention: GPTNeoSelfAttention

    init(_ c: GPTNeoConfig, local: Bool) { attention = GPTNeoSelfAttention(c, local: local) }
}

public final class GPTNeoBlock: Module {
    public let ln1: LayerNorm
    public let attn: GPTNeoAttention
    public let ln2: LayerNorm
    public let mlp: GELUMLP

    init(_ c: GPTNeoConfig, local: Bool) {
        ln1 = LayerNorm(dimensions: c.hiddenSize, epsilon: c.layerNormEpsilon)
        attn = GPTNeoAttention(c, local: local)
        ln2 = LayerNorm(dimensions: c.hiddenSize, epsilon: c.layerNormEpsilon)
        mlp = GELUMLP(dimensions: c.hiddenSize, hiddenDimensions: c.intermediateSize, approximation: c.activation.approximation)
    }

    func callAsFunction(_ x: Tensor, cache: LayerCache?, prefix: (key: Tensor, value: Tensor)?,
                        recordStarts: [Int32]?) throws -> Tensor {
        let h = try x + attn.attention(ln1(x), cache: cache, prefix: prefix, recordStarts: recordStarts)
        return try h + mlp(ln2(h))
    }
}

/// The GPT-Neo stack (`transformer.` in Hugging Face keys): token and learned position embeddings.
public final class GPTNeoModel: Module {
    public let wte: Embedding
    public let wpe: Embedding
    public let h: [GPTNeoBlock]
    public let lnF: LayerNorm

    init(_ c: GPTNeoConfig) {
        wte = Embedding(count: c.vocabularySize, dimensions: c.hiddenSize)
        wpe = Embedding(count: c.maxPositionEmbeddings, dimensions: c.hiddenSize)
        h = c.localLayers.map { GPTNeoBlock(c, local: $0) }
        lnF = LayerNorm(dimensions: c.hiddenSize, epsilon: c.layerNormEpsilon)
    }
}

/// `GPTNeoForCausalLM`: the head is the token embedding, transposed.
public final class GPTNeoForCausalLM: Module, CausalLanguageModel {
    public let transformer: GPTNeoModel
    public let neoConfig: GPTNeoConfig
    public var checkpointsActivations = false

    public init(_ c: GPTNeoConfig) throws {
        guard c.localLayers.count == c.layerCount else {
            throw FormatError(file: "config.json", "attention_layers has \(c.localLayers.count) entries for num_layers \(c.layerCount)")
        }
        neoConfig = c
        transformer = GPTNeoModel(c)
    }

    public var config: ModelConfig { .gptNeo(neoConfig) }

    public var outputWeight: HeadWeight { .dense(transformer.wte.weight) }

    public func untieWordEmbeddings() throws {
        throw FormatError(file: "config.json", "gpt_neo's head is its token table, so the embedding cannot be adapted apart from the head")
    }

    public func hiddenStates(_ tokens: [Int32], batch: Int, length: Int, cache: KVCache?, prefix: AttentionPrefix?,
                             recordStarts: [Int32]?) throws -> Tensor {
        let offset = try checkedOffset(tokens, batch: batch, length: length, cache: cache, prefix: prefix,
                                       recordStarts: recordStarts)
        // transformers' local mask counts a prefix's virtual keys among the window; Finch's attention always shows
        // them, which is the same only while the prefix and the sequence fit in the window.
        if let prefix, neoConfig.localLayers.contains(true), offset + length > neoConfig.windowSize {
            throw TensorError.invalidArgument(op: "gpt_neo", message: "a prefix of \(prefix.length) virtual tokens and \(offset + length - prefix.length) positions exceed window_size \(neoConfig.windowSize) of the local layers; Finch runs prefix tuning on GPT-Neo within the window only")
        }
        let x = try LearnedPositions.inputs(tokens: transformer.wte, positions: transformer.wpe, ids: tokens, batch: batch,
                                            length: length, offset: offset, recordStarts: recordStarts)
        let hidden = try runLayers(transformer.h, x, batch: batch, cache: cache, prefix: prefix) { layer, x, layerCache, prefix in
            try layer(x, cache: layerCache, prefix: prefix, recordStarts: recordStarts)
        }
        return try transformer.lnF(hidden)
    }

    public func storesTransposed(_ name: String) -> Bool { false }

    /// Buffers older checkpoints saved (the causal masks), and the head that repeats the token table.
    public func isIgnorableCheckpointKey(_ name: String) -> Bool {
        name.hasSuffix(".attn.attention.bias") || name.hasSuffix(".attn.attention.masked_bias") || name == "lm_head.weight"
    }
}
