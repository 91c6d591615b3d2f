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
                initialization: Initialization = .kaimingUniform, generator: inout RandomGenerator) throws {
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
        self.generator = RandomGenerator(seed: generator.next())
        super.init()
        base.freeze()
        lora_A.weight.requiresGrad = true
        lora_B.weight.requiresGrad = true
    }

    public var inputDimensions: Int { baseLayer.inputDimensions }
    public var outputDimensions: Int { baseLayer.outputDimensions }

    public func callAsFunction(_ x: Tensor) throws -> Tensor {
        let y = try baseLayer(x)
        if disabled || isMerged { return y }
        let dropped = isTraining && dropout > 0 ? try x.dropout(probability: dropout, generator: &generator) : x
        // x [.., in] · Aᵀ → [.., r], scaled there (r values a row, not `out`), · Bᵀ → [.., out]
        return try y + lora_B(lora_A(dropped) * scaling)
    }

    /// s · B A, the change this adapter makes to W.
    public func delta() throws -> Tensor {
        try GradientMode.withoutGradients { try lora_B.weight.matmul(lora_A.weight) * scaling }
    }

    /// Folds the adapter into the base weight in place (a quantised base: a float32 layer holding deq(W) + s·B·A
    /// takes its place). Refuses (changing nothing) if the result is not finite.
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
        let merged = try GradientMode.withoutGradients { try dense.weight.detached() + delta() }
        guard merged.scalars.allSatisfy(\.isFinite) else {
            throw AdapterError("merging the adapter gives non-finite weights; the base weight was left unchanged")
        }
        try dense.weight.assign(merged)
        if let quantized = baseLayer as? QuantizedLinear {
            quantizedBase = quantized
            dense.freeze()
            baseLayer = dense
        }
        isMerged = true
    }

    /// Takes a merged adapter back out of the base weight (a quantised base comes back as it was).
    public func unmerge() throws {
        guard isMerged else { return }
        if let quantized = quantizedBase {
            baseLayer = quantized
            quantizedBase = nil
        } else if let linear = baseLayer as? Linear {
            try linear.weight.assign(try GradientMode.withoutGradients { try linear.weight.detached() - delta() })
        }
        isMerged = false
    }
}
