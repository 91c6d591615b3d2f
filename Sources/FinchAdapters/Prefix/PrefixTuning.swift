import FinchModels
import FinchNN
import FinchTensor

/// What a prefix-tuning adapter is: its virtual tokens, and the width of the reparameterisation MLP
/// (0: the table trains directly).
public struct PrefixConfiguration: Equatable, Sendable {
    /// Virtual key/value positions per layer (PEFT's `num_virtual_tokens`).
    public var virtualTokens: Int
    /// Width of the MLP that makes the table during training (PEFT's `encoder_hidden_size` with
    /// `prefix_projection`); 0 trains the table directly.
    public var projectionHidden: Int

    public init(virtualTokens: Int = 16, projectionHidden: Int = 0) {
        self.virtualTokens = virtualTokens
        self.projectionHidden = projectionHidden
    }
}

/// Prefix tuning (Li & Liang, 2021) with PEFT's layout: per layer, `P` virtual key/value positions that
/// every query attends to. The table [P, 2·L·D] (D = key/value heads × head dim) holds, for layer l,
/// keys in columns [2l·D, (2l+1)·D) and values in the next D, each laid out heads-major.
///
/// The table is either trained directly (`prompt_embeddings`) or produced by the reparameterisation MLP
/// embedding → Linear → tanh → Linear, which Finch keeps in its checkpoints so training can continue, and
/// collapses to `prompt_embeddings` when saving in PEFT format.
public final class PrefixTuning: Module, AttentionPrefix {
    public let virtualTokenCount: Int
    public let layerCount: Int
    public let keyValueHeadCount: Int
    public let headDimension: Int
    /// Direct parameterisation [P, 2·L·D].
    public let promptEmbeddings: Tensor?
    /// Reparameterisation: embedding [P, D], then D → hidden → 2·L·D.
    public let embedding: Embedding?
    public let transformIn: Linear?
    public let transformOut: Linear?

    public var length: Int { virtualTokenCount }
    public var tokenDimension: Int { keyValueHeadCount * headDimension }
    public var usesProjection: Bool { embedding != nil }

    /// The prefix `configuration` describes, shaped for `model`'s layers and keys.
    public convenience init(_ configuration: PrefixConfiguration, for model: any CausalLanguageModel,
                            generator: inout RandomGenerator) throws {
        try self.init(virtualTokenCount: configuration.virtualTokens, layerCount: model.layerCount,
                      keyValueHeadCount: model.keyValueHeadCount, headDimension: model.headDimension,
                      projectionHidden: configuration.projectionHidden > 0 ? configuration.projectionHidden : nil,
                      generator: &generator)
    }

    /// A prefix for a model with `layerCount` layers and `keyValueHeadCount` × `headDimension` keys.
    /// With `projectionHidden`, the table comes from the reparameterisation MLP of that width.
    public init(virtualTokenCount: Int, layerCount: Int, keyValueHeadCount: Int, headDimension: Int,
                projectionHidden: Int? = nil, generator: inout RandomGenerator) throws {
        guard virtualTokenCount > 0 else {
            throw AdapterError("num_virtual_tokens must be positive, got \(virtualTokenCount)", setting: .virtualTokens)
        }
        self.virtualTokenCount = virtualTokenCount
        self.layerCount = layerCount
        self.keyValueHeadCount = keyValueHeadCount
        self.headDimension = headDimension
        let d = keyValueHeadCount * headDimension
        if let hidden = projectionHidden, hidden <= 0 {
            throw AdapterError("encoder_hidden_size must be positive, got \(hidden)", setting: .projectionHidden)
        }
        try AdapterError.checkFitsInMemory(Self.valueCount(virtualTokenCount: virtualTokenCount, layerCount: layerCount,
                                                           tokenDimension: d, projectionHidden: projectionHidden),
                                           what: "a prefix of \(virtualTokenCount) virtual tokens",
                                           setting: projectionHidden == nil ? .virtualTokens : .projectionHidden)
        if let hidden = projectionHidden {
            let e = Embedding(count: virtualTokenCount, dimensions: d)
            try e.weight.assign(Tensor.randomNormal([virtualTokenCount, d], generator: &generator))
            embedding = e
            transformIn = Self.linear(d, hidden, &generator)
            transformOut = Self.linear(hidden, 2 * layerCount * d, &generator)
            promptEmbeddings = nil
        } else {
            // PEFT initialises the embedding N(0, 1).
            promptEmbeddings = Tensor.randomNormal([virtualTokenCount, 2 * layerCount * d], generator: &generator)
            embedding = nil
            transformIn = nil
            transformOut = nil
        }
        super.init()
        unfreeze()
    }

    /// The values a prefix holds: the [tokens, 2 · layers · d] table, or with the projection its token embedding
    /// and the two layers of its MLP; nil when the count overflows `Int`.
    static func valueCount(virtualTokenCount v: Int, layerCount: Int, tokenDimension d: Int,
                           projectionHidden: Int?) -> Int? {
        let out = ModelSize.sumOfProducts([[2, layerCount, d]])
        guard let out else { return nil }
        guard let h = projectionHidden else { return ModelSize.sumOfProducts([[v, out]]) }
        return ModelSize.sumOfProducts([[v, d], [d, h], [h], [h, out], [out]])
    }

    /// PyTorch's default Linear initialisation: U(−1/√in, 1/√in) for weight and bias.
    static func linear(_ inputs: Int, _ outputs: Int, _ generator: inout RandomGenerator) -> Linear {
        let bound = 1 / Float(inputs).squareRoot()
        return Linear(weight: Tensor.randomUniform([outputs, inputs], low: -bound, high: bound, generator: &generator),
                      bias: Tensor.randomUniform([outputs], low: -bound, high: bound, generator: &generator))
    }

    /// The whole [P, 2·L·D] table, on the tape when its parameters train.
    public func prefixTable() throws -> Tensor {
        if let promptEmbeddings { return promptEmbeddings }
        let ids = (0..<virtualTokenCount).map(Int32.init)
        let e = try embedding!(ids, shape: [virtualTokenCount])
        return try transformOut!(transformIn!(e).tanh())
    }

    /// Every layer's keys and values from one table: made once per forward pass, so with the MLP each layer's
    /// share comes from the same product, and the result does not depend on the order layers run in.
    public func keysAndValues(batch: Int) throws -> [(key: Tensor, value: Tensor)] {
        let table = try prefixTable()
        let d = tokenDimension, p = virtualTokenCount
        func part(_ index: Int) throws -> Tensor {
            // [P, D] → [1, P, Hkv, hd] → [B, P, Hkv, hd]
            try table.slice(axis: 1, (index * d)..<((index + 1) * d))
                .reshaped([1, p, keyValueHeadCount, headDimension])
                .expanded(to: [batch, p, keyValueHeadCount, headDimension])
        }
        return try (0..<layerCount).map { layer in (try part(2 * layer), try part(2 * layer + 1)) }
    }
}
