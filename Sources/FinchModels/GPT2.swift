import FinchFormats
import FinchNN
import FinchTensor

/// GPT-2 attention: one fused projection to q, k and v (`c_attn`), causal, no rotary positions.
/// Hugging Face stores `c_attn` and `c_proj` as `Conv1D` weights [in, out]; Finch holds them as Linear
/// weights [out, in] and transposes at load and save.
public final class GPT2Attention: Module {
    @Child public var cAttn: any LinearLayer
    @Child public var cProj: any LinearLayer
    let headCount: Int
    let scale: Float

    init(_ c: GPT2Config) {
        cAttn = Linear(inputDimensions: c.embeddingSize, outputDimensions: 3 * c.embeddingSize, bias: true)
        cProj = Linear(inputDimensions: c.embeddingSize, outputDimensions: c.embeddingSize, bias: true)
        headCount = c.headCount
        scale = c.scaleAttentionWeights ? 1 / Float(c.embeddingSize / c.headCount).squareRoot() : 1
    }

    func callAsFunction(_ x: Tensor, cache: LayerCache?, prefix: (key: Tensor, value: Tensor)?,
                        recordStarts: [Int32]? = nil) throws -> Tensor {
        let c = x.shape[2]
        let qkv = try cAttn(x)  // [B, T, 3C]
        let q = try Heads.split(qkv.slice(axis: 2, 0..<c), heads: headCount)
        let k = try Heads.split(qkv.slice(axis: 2, c..<(2 * c)), heads: headCount)
        let v = try Heads.split(qkv.slice(axis: 2, (2 * c)..<(3 * c)), heads: headCount)
        let (keys, values) = try cache?.append(key: k, value: v) ?? (k, v)
        let out = try Tensor.scaledDotProductAttention(query: q, key: keys, value: values, prefix: prefix,
                                                       causal: true, scale: scale,
                                                       firstKeys: recordStarts)
        return try cProj(Heads.merge(out))
    }
}

public final class GPT2Block: Module {
    public let ln1: LayerNorm
    public let attn: GPT2Attention
    public let ln2: LayerNorm
    public let mlp: GELUMLP

    init(_ c: GPT2Config) {
        ln1 = LayerNorm(dimensions: c.embeddingSize, epsilon: c.layerNormEpsilon)
        attn = GPT2Attention(c)
        ln2 = LayerNorm(dimensions: c.embeddingSize, epsilon: c.layerNormEpsilon)
        mlp = GELUMLP(dimensions: c.embeddingSize, hiddenDimensions: c.innerSize, approximation: c.activation.approximation)
    }

    func callAsFunction(_ x: Tensor, cache: LayerCache?, prefix: (key: Tensor, value: Tensor)?,
                        recordStarts: [Int32]? = nil) throws -> Tensor {
        let h = try x + attn(ln1(x), cache: cache, prefix: prefix, recordStarts: recordStarts)
        return try h + mlp(ln2(h))
    }
}

/// The GPT-2 stack (`transformer.` in Hugging Face keys): token and learned position embeddings.
public final class GPT2Model: Module {
    /// The token table (a `QuantizedEmbedding` when a GGUF's blocks are kept); the head reads it too.
    @Child public var wte: any EmbeddingLayer
    public let wpe: Embedding
    public let h: [GPT2Block]
    public let lnF: LayerNorm

    init(_ c: GPT2Config) {
        wte = Embedding(count: c.vocabularySize, dimensions: c.embeddingSize)
        wpe = Embedding(count: c.maxPositions, dimensions: c.embeddingSize)
        h = (0..<c.layerCount).map { _ in GPT2Block(c) }
        lnF = LayerNorm(dimensions: c.embeddingSize, epsilon: c.layerNormEpsilon)
    }
}

/// `GPT2LMHeadModel`: the language-model head is the token embedding, transposed.
public final class GPT2LMHeadModel: Module, CausalLanguageModel {
    public let transformer: GPT2Model
    public let gpt2Config: GPT2Config
    public var checkpointsActivations = false

    public init(_ c: GPT2Config) throws {
        guard c.tieWordEmbeddings else {
            throw FormatError(file: "config.json", "gpt2 with tie_word_embeddings false is not supported")
        }
        gpt2Config = c
        transformer = GPT2Model(c)
    }

    public var config: ModelConfig { .gpt2(gpt2Config) }

    public var outputWeight: HeadWeight { transformer.wte.headWeight }

    public func headInputs(_ hidden: Tensor) throws -> (hidden: Tensor, weight: HeadWeight) {
        try transformer.wte.tiedHeadInputs(hidden)
    }

    public func untieWordEmbeddings() throws {
        throw FormatError(file: "config.json", "gpt2 with tie_word_embeddings false is not supported, so its embedding cannot be adapted apart from its head")
    }

    public func hiddenStates(_ tokens: [Int32], batch: Int, length: Int, cache: KVCache?, prefix: AttentionPrefix?,
                             recordStarts: [Int32]?) throws -> Tensor {
        let offset = try checkedOffset(tokens, batch: batch, length: length, cache: cache, prefix: prefix,
                                       recordStarts: recordStarts)
        let x = try LearnedPositions.inputs(tokens: transformer.wte, positions: transformer.wpe, ids: tokens, batch: batch,
                                            length: length, offset: offset, recordStarts: recordStarts)
        let hidden = try runLayers(transformer.h, x, batch: batch, cache: cache, prefix: prefix) { layer, x, layerCache, prefix in
            try layer(x, cache: layerCache, prefix: prefix, recordStarts: recordStarts)
        }
        return try transformer.lnF(hidden)
    }

    public func storesTransposed(_ name: String) -> Bool {
        [".attn.c_attn.weight", ".attn.c_proj.weight", ".mlp.c_fc.weight", ".mlp.c_proj.weight"].contains { name.hasSuffix($0) }
    }

    public func isIgnorableCheckpointKey(_ name: String) -> Bool {
        name.hasSuffix(".attn.bias") || name.hasSuffix(".attn.masked_bias") || name == "lm_head.weight"
    }
}

/// The inputs of a decoder with learned absolute positions (GPT-2, GPT-Neo): token rows plus position rows.
enum LearnedPositions {
    /// Positions count from `offset`; a packed record's from its own start, as it would alone.
    static func inputs(tokens: any EmbeddingLayer, positions: Embedding, ids: [Int32], batch: Int, length: Int, offset: Int,
                       recordStarts: [Int32]?) throws -> Tensor {
        if let recordStarts {
            let at = recordStarts.indices.map { Int32(offset + $0 % length) - recordStarts[$0] }
            return try tokens(ids, shape: [batch, length]) + positions(at, shape: [batch, length])
        }
        return try tokens(ids, shape: [batch, length]) + positions((0..<length).map { Int32(offset + $0) }, shape: [length])
    }
}

extension GELUActivation {
    /// The tensor op's form of this activation.
    var approximation: Tensor.GELUApproximation { self == .geluTanh ? .tanh : .none }
}
