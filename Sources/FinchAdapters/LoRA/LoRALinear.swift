import FinchNN
import FinchTensor

/// Low-rank adaptation of a frozen Linear (Hu et al., 2021):
///
///     y = W x + b + s · B A dropout(x)
///
/// with A [r, in], B [out, r] and s = α / r (or α / √r with rsLoRA). A starts Kaiming-uniform and B at
/// zero, so at initialisation the output is exactly the base layer's. The base layer is wrapped, not
/// subclassed; its parameters stay frozen under `base_layer.` as PEFT names them.
///
/// With DoRA (weight-decomposed LoRA, Liu et al., 2024, as PEFT's `use_dora`), a magnitude m [out] rescales each
/// output row of the adapted weight to m over that row's norm:
///
///     y = b + (m / ‖W + s·B·A‖) ⊙ (W x + s · B A x)
///
/// the norm taken per output row and held constant in the backward pass (the paper's section 4.3, as PEFT does),
/// m starting at the rows' norms so that the output is again the base layer's.
///
/// `merge()` folds s·B·A into W (the adapter path then switches off); `unmerge()` takes it out again. The base
/// may be a float32 `Linear` or a `QuantizedLinear`; merging into a quantised base puts a float32 layer holding
/// deq(W) + s·B·A in its place (and unmerging puts the quantised one back).
public final class LoRALinear: Module, LinearLayer {
    public private(set) var baseLayer: any LinearLayer
    /// The quantised base while a merge has put a float32 layer in its place.
    private var quantizedBase: QuantizedLinear?
    public let lora_A: Linear
    public let lora_B: Linear
    public let rank: Int
    public let alpha: Float
    public let scaling: Float
    /// DoRA's magnitude m [out] (PEFT's `lora_magnitude_vector`); nil for plain LoRA.
    public let lora_magnitude_vector: Tensor?
    /// m / ‖W + s·B·A‖ per row, as a DoRA merge applied it, for unmerging.
    private var mergedDoRAScale: Tensor?
    /// ‖W‖² per row of the frozen base weight, computed once for DoRA's norms.
    private var baseRowSquares: Tensor?
    public let dropout: Float
    /// Runs the base layer alone (a reference pass without the adapter).
    public var disabled = false
    public private(set) var isMerged = false
    /// Dropout's generator; advanced only when training with dropout > 0.
    public var generator: RandomGenerator

    public enum Initialization: Sendable, Equatable {
        /// A Kaiming-uniform (bound 1/√in, PEFT's default), B zero.
        case kaimingUniform
        /// A ~ N(0, 1/r), B zero (PEFT's "gaussian").
        case gaussian
        /// Both zero, to be loaded.
        case zeros
    }

    public init(base: any LinearLayer, rank: Int, alpha: Float, useRSLoRA: Bool = false, dropout: Float = 0,
                initialization: Initialization = .kaimingUniform, useDoRA: Bool = false,
                generator: inout RandomGenerator) throws {
        guard base is Linear || base is QuantizedLinear else {
            throw AdapterError("LoRA adapts a Linear or a quantised Linear layer, not a \(type(of: base))")
        }
        guard rank > 0 else { throw AdapterError("LoRA rank must be positive, got \(rank)") }
        guard dropout >= 0 && dropout < 1 else { throw AdapterError("lora_dropout must be in [0, 1), got \(dropout)") }
        baseLayer = base
        self.rank = rank
        self.alpha = alpha
        scaling = useRSLoRA ? alpha / Float(rank).squareRoot() : alpha / Float(rank)
        self.dropout = dropout
        let inputs = base.inputDimensions, outputs = base.outputDimensions
        switch initialization {
        case .kaimingUniform:
            let bound = 1 / Float(inputs).squareRoot()
            lora_A = Linear(weight: Tensor.randomUniform([rank, inputs], low: -bound, high: bound,
                                                         generator: &generator))
        case .gaussian:
            lora_A = Linear(weight: Tensor.randomNormal([rank, inputs], standardDeviation: 1 / Float(rank),
                                                        generator: &generator))
        case .zeros:
            lora_A = Linear(weight: Tensor.zeros([rank, inputs]))
        }
        lora_B = Linear(weight: Tensor.zeros([outputs, rank]))
        // With B at zero the rows' norms are the base weight's own (loaded adapters overwrite them).
        lora_magnitude_vector = useDoRA ? try Self.rowNorms(of: Self.denseWeight(of: base)) : nil
        self.generator = RandomGenerator(seed: generator.next())
        super.init()
        base.freeze()
        lora_A.weight.requiresGrad = true
        lora_B.weight.requiresGrad = true
        lora_magnitude_vector?.requiresGrad = true
    }

    /// The base weight [out, in] in float32 (a quantised base dequantised).
    static func denseWeight(of base: any LinearLayer) throws -> Tensor {
        if let linear = base as? Linear { return linear.weight.detached() }
        if let quantized = base as? QuantizedLinear { return quantized.dequantized().weight }
        throw AdapterError("LoRA adapts a Linear or a quantised Linear layer, not a \(type(of: base))")
    }

    /// The L2 norm of each row of `w` [out, in], as a constant [out].
    static func rowNorms(of w: Tensor) throws -> Tensor {
        try GradientMode.withoutGradients { try w.squared().sum(axis: 1).pow(0.5).detached() }
    }

    /// DoRA's m / ‖W + s·B·A‖ per output row; the norm is a constant to the backward pass, m is not.
    func doraScale(magnitude: Tensor) throws -> Tensor {
        try magnitude / GradientMode.withoutGradients { try adaptedRowNorms() }
    }

    /// ‖W + s·B·A‖ per output row without forming W + s·B·A (nor dequantising a quantised W):
    /// ‖W_o‖² + 2s·Σ_k B[o,k]·(W Aᵀ)[o,k] + s²·Σ_k,l B[o,k]·(A Aᵀ)[k,l]·B[o,l], where W Aᵀ is the base layer's own
    /// product on A's r rows and ‖W_o‖² is computed once (the base is frozen). About r / tokens of a forward pass.
    func adaptedRowNorms() throws -> Tensor {
        if baseRowSquares == nil {
            baseRowSquares = try Self.denseWeight(of: baseLayer).squared().sum(axis: 1).detached()
        }
        let a = lora_A.weight.detached(), b = lora_B.weight.detached()
        let bias = (baseLayer as? Linear)?.bias ?? (baseLayer as? QuantizedLinear)?.bias
        var product = try baseLayer(a)  // A Wᵀ [r, out] (+ the bias, taken off)
        if let bias { product = try product - bias }
        let cross = try (b * product.transposed()).sum(axis: 1)            // Σ_k B[o,k]·(W Aᵀ)[o,k]
        let gram = try a.matmul(a, transposeOther: true)                   // A Aᵀ [r, r]
        let lowRank = try (b.matmul(gram) * b).sum(axis: 1)                // (B A Aᵀ Bᵀ)[o,o]
        let squares = try baseRowSquares! + cross * (2 * scaling) + lowRank * (scaling * scaling)
        // Rounding can take a norm of zero a hair below it.
        return try Tensor(shape: squares.shape, scalars: squares.scalars.map { max($0, 0).squareRoot() })
    }

    public var inputDimensions: Int { baseLayer.inputDimensions }
    public var outputDimensions: Int { baseLayer.outputDimensions }

    public func callAsFunction(_ x: Tensor) throws -> Tensor {
        let y = try baseLayer(x)
        if disabled || isMerged { return y }
        let drops = isTraining && dropout > 0
        let dropped = drops ? try x.dropout(probability: dropout, generator: &generator) : x
        // x [.., in] · Aᵀ → [.., r], scaled there (r values a row, not `out`), · Bᵀ → [.., out]
        let update = try lora_B(lora_A(dropped) * scaling)
        guard let magnitude = lora_magnitude_vector else { return try y + update }
        // DoRA: y + (scale − 1) ⊙ W x' + scale ⊙ s·B A x', x' the dropped input (W x' is y less the bias when
        // nothing is dropped), which is b + scale ⊙ (W x + s·B A x) without dropout.
        let scale = try doraScale(magnitude: magnitude)
        let weighted = try drops ? baseLayer(dropped) : y
        let bias = (baseLayer as? Linear)?.bias ?? (baseLayer as? QuantizedLinear)?.bias
        let product = try bias.map { try weighted - $0 } ?? weighted
        return try y + product * (scale - 1) + update * scale
    }

    /// s · B A, the change this adapter makes to W.
    public func delta() throws -> Tensor {
        try GradientMode.withoutGradients { try lora_B.weight.matmul(lora_A.weight) * scaling }
    }

    /// Folds the adapter into the base weight in place (a quantised base: a float32 layer holding deq(W) + s·B·A
    /// takes its place); with DoRA each row of W + s·B·A is then scaled by m over its norm (the bias is not).
    /// Refuses (changing nothing) if the result is not finite.
    public func merge() throws {
        guard !isMerged else { return }
        let dense: Linear
        if let quantized = baseLayer as? QuantizedLinear {
            dense = quantized.dequantized()
        } else if let linear = baseLayer as? Linear {
            dense = linear
        } else {
            throw AdapterError("cannot merge into a \(type(of: baseLayer))")
        }
        var merged = try GradientMode.withoutGradients { try dense.weight.detached() + delta() }
        var doraScale: Tensor?
        if let magnitude = lora_magnitude_vector {
            let scale = try GradientMode.withoutGradients { try magnitude.detached() / Self.rowNorms(of: merged) }
            merged = try GradientMode.withoutGradients { try merged * scale.reshaped([scale.count, 1]) }
            doraScale = scale
        }
        guard merged.scalars.allSatisfy(\.isFinite) else {
            throw AdapterError("merging the adapter gives non-finite weights; the base weight was left unchanged")
        }
        try dense.weight.assign(merged)
        if let quantized = baseLayer as? QuantizedLinear {
            quantizedBase = quantized
            dense.freeze()
            baseLayer = dense
        }
        mergedDoRAScale = doraScale
        isMerged = true
    }

    /// Takes a merged adapter back out of the base weight (a quantised base comes back as it was).
    public func unmerge() throws {
        guard isMerged else { return }
        if let quantized = quantizedBase {
            baseLayer = quantized
            quantizedBase = nil
        } else if let linear = baseLayer as? Linear {
            try linear.weight.assign(try GradientMode.withoutGradients {
                let undone = try mergedDoRAScale.map { try linear.weight.detached() / $0.reshaped([$0.count, 1]) } ?? linear.weight.detached()
                return try undone - delta()
            })
        }
        mergedDoRAScale = nil
        baseRowSquares = nil
        isMerged = false
    }
}
