import FinchNN
import FinchTensor

/// Low-rank adaptation of a frozen token embedding, as PEFT applies LoRA to `nn.Embedding`:
///
///     row(id) = E[id] + s · (Aᵀ[id] · Bᵀ)
///
/// with A [r, vocabulary] (`lora_embedding_A`), B [dimensions, r] (`lora_embedding_B`) and s = α / r (or
/// α / √r with rsLoRA). The initialisation is the reverse of a Linear's: A starts at zero and B Gaussian, so at
/// first the rows are exactly the base table's. Each token gets its own r numbers; B mixes them into the
/// row, so tokens the base model rarely saw (digits, names) can become distinguishable at r·(vocabulary + d)
/// trainable values. No dropout (PEFT applies none to embeddings).
///
/// A head tied to this table either keeps reading the base table (PEFT's default: the model's head is untied
/// first) or, with `appliesToTiedHead` (PEFT's `ensure_weight_tying`), reads the adapted table too:
///
///     logits = h · (E + s·Aᵀ Bᵀ)ᵀ = [h, s·h B] · [E, Aᵀ]ᵀ
///
/// one product over widened operands, so the fused head and loss run unchanged and the merged model
/// (one tied table) computes exactly what the adapter did. `merge()` puts the merged table in a new tensor.
///
/// With DoRA (PEFT's `use_dora` on an embedding), a magnitude m [d] rescales each column of the adapted table to
/// m over that column's norm across the vocabulary, the norm a constant to the backward pass:
///
///     row(id) = (m / ‖E + s·Aᵀ Bᵀ‖_columns) ⊙ (E[id] + s · Aᵀ[id] · Bᵀ)
public final class LoRAEmbedding: Module, EmbeddingLayer {
    public private(set) var baseLayer: Embedding
    public let lora_embedding_A: Tensor
    public let lora_embedding_B: Tensor
    public let rank: Int
    public let alpha: Float
    public let scaling: Float
    /// DoRA's magnitude m [d] (PEFT's `lora_magnitude_vector`); nil for plain LoRA.
    public let lora_magnitude_vector: Tensor?
    /// ‖E‖² per column of the frozen table, computed once for DoRA's norms.
    private var baseColumnSquares: Tensor?
    /// The tied head reads the adapted table as well (PEFT's `ensure_weight_tying`).
    public let appliesToTiedHead: Bool
    /// Runs the base table alone.
    public var disabled = false
    /// The base layer from before `merge()`, to put back on `unmerge()`.
    private var unmergedBase: Embedding?
    public var isMerged: Bool { unmergedBase != nil }

    public init(base: Embedding, rank: Int, alpha: Float, useRSLoRA: Bool = false, appliesToTiedHead: Bool = false,
                loadable: Bool = false, useDoRA: Bool = false, generator: inout RandomGenerator) throws {
        guard rank > 0 else { throw AdapterError("LoRA rank must be positive, got \(rank)") }
        if useDoRA && appliesToTiedHead {
            throw AdapterError("DoRA on an embedding whose tied head shares the adapter (ensure_weight_tying) is not supported; leave ensure_weight_tying off or use plain LoRA", setting: .targets)
        }
        baseLayer = base
        self.appliesToTiedHead = appliesToTiedHead
        self.rank = rank
        self.alpha = alpha
        scaling = (useRSLoRA ? alpha / Float(rank).squareRoot() : alpha / Float(rank))
        lora_embedding_A = Tensor.zeros([rank, base.count])
        lora_embedding_B = loadable ? Tensor.zeros([base.dimensions, rank])
                                    : Tensor.randomNormal([base.dimensions, rank], standardDeviation: 1,
                                                          generator: &generator)
        // A starts at zero, so the columns' norms are the base table's (loaded adapters overwrite them).
        lora_magnitude_vector = useDoRA
            ? try GradientMode.withoutGradients { try base.weight.detached().squared().sum(axis: 0).pow(0.5).detached() } : nil
        super.init()
        base.freeze()
        lora_embedding_A.requiresGrad = true
        lora_embedding_B.requiresGrad = true
        lora_magnitude_vector?.requiresGrad = true
    }

    /// ‖E + s·Aᵀ Bᵀ‖ per column (over the vocabulary) without forming the table:
    /// ‖E_c‖² + 2s·Σ_k B[c,k]·(A E)[k,c] + s²·(B (A Aᵀ) Bᵀ)[c,c], ‖E_c‖² computed once (the table is frozen).
    func adaptedColumnNorms() throws -> Tensor {
        try GradientMode.withoutGradients {
            if baseColumnSquares == nil {
                baseColumnSquares = try baseLayer.weight.detached().squared().sum(axis: 0).detached()
            }
            let a = lora_embedding_A.detached(), b = lora_embedding_B.detached()
            let cross = try (b * a.matmul(baseLayer.weight.detached()).transposed()).sum(axis: 1)
            let lowRank = try (b.matmul(a.matmul(a, transposeOther: true)) * b).sum(axis: 1)
            let squares = try baseColumnSquares! + cross * (2 * scaling) + lowRank * (scaling * scaling)
            // Rounding can take a norm of zero a hair below it.
            return try Tensor(shape: squares.shape, scalars: squares.scalars.map { max($0, 0).squareRoot() })
        }
    }

    /// The table a tied head multiplies by: the base one, or the merged one when the head shares the adapter.
    public var weight: Tensor { appliesToTiedHead ? baseLayer.weight : (unmergedBase?.weight ?? baseLayer.weight) }

    public var headWeight: HeadWeight { .dense(weight) }

    public func tiedHeadInputs(_ hidden: Tensor) throws -> (hidden: Tensor, weight: HeadWeight) {
        guard appliesToTiedHead, !disabled, !isMerged else { return (hidden, headWeight) }
        let codes = try hidden.matmul(lora_embedding_B) * scaling  // [.., d] · [d, r]
        return (try Tensor.concatenate([hidden, codes], axis: hidden.rank - 1),
                .dense(try Tensor.concatenate([baseLayer.weight, try lora_embedding_A.transposed()], axis: 1)))
    }

    public func callAsFunction(_ ids: [Int32], shape: [Int]) throws -> Tensor {
        let rows = try baseLayer(ids, shape: shape)
        if disabled || isMerged { return rows }
        // Aᵀ [vocabulary, r] gathered per token → [.., r] · Bᵀ → [.., d]
        let codes = try lora_embedding_A.transposed().gatherRows(ids, indexShape: shape)
        let adapted = try rows + codes.matmul(lora_embedding_B, transposeOther: true) * scaling
        guard let magnitude = lora_magnitude_vector else { return adapted }
        return try adapted * (magnitude / adaptedColumnNorms())
    }

    /// s · Aᵀ Bᵀ [vocabulary, d], the change this adapter makes to the table.
    public func delta() throws -> Tensor {
        try GradientMode.withoutGradients {
            try lora_embedding_A.transposed().matmul(lora_embedding_B, transposeOther: true) * scaling
        }
    }

    /// Switches to a merged table (a new tensor; the base table stays as it was for a tied head).
    /// Refuses, changing nothing, if the result is not finite.
    public func merge() throws {
        guard !isMerged else { return }
        var merged = try GradientMode.withoutGradients { try baseLayer.weight.detached() + delta() }
        if let magnitude = lora_magnitude_vector {
            merged = try GradientMode.withoutGradients {
                try merged * (magnitude.detached() / merged.squared().sum(axis: 0).pow(0.5))
            }
        }
        guard merged.scalars.allSatisfy(\.isFinite) else {
            throw AdapterError("merging the embedding adapter gives non-finite weights; the base table was left unchanged")
        }
        unmergedBase = baseLayer
        baseLayer = Embedding(weight: merged)
    }

    public func unmerge() throws {
        guard let original = unmergedBase else { return }
        baseLayer = original
        unmergedBase = nil
        baseColumnSquares = nil
    }
}
