import FinchTensor

/// Anything that maps [..., in] to [..., out] like a Linear: the Linear itself or an adapter wrapping it.
public protocol LinearLayer: Module {
    var inputDimensions: Int { get }
    var outputDimensions: Int { get }
    func callAsFunction(_ x: Tensor) throws -> Tensor
}

/// y = x Wᵀ + b, with W [out, in] as Hugging Face stores it.
public final class Linear: Module, LinearLayer {
    public let weight: Tensor
    public let bias: Tensor?

    public init(weight: Tensor, bias: Tensor? = nil) {
        precondition(weight.rank == 2, "Linear weight must be [out, in]")
        self.weight = weight
        self.bias = bias
    }

    public convenience init(inputDimensions: Int, outputDimensions: Int, bias: Bool = false) {
        self.init(weight: Tensor.zeros([outputDimensions, inputDimensions]),
                  bias: bias ? Tensor.zeros([outputDimensions]) : nil)
    }

    public var inputDimensions: Int { weight.shape[1] }
    public var outputDimensions: Int { weight.shape[0] }

    public func callAsFunction(_ x: Tensor) throws -> Tensor {
        let y = try x.matmul(weight, transposeOther: true)
        return try bias.map { try y + $0 } ?? y
    }
}

/// Anything that maps token ids to rows like an Embedding: the Embedding itself or an adapter wrapping it.
public protocol EmbeddingLayer: Module {
    /// The table [count, dimensions] as a head tied to it reads it (for an adapter: the frozen base table).
    var headWeight: HeadWeight { get }
    func callAsFunction(_ ids: [Int32], shape: [Int]) throws -> Tensor
    /// For a head tied to this table: (hidden', weight') with logits = hidden' · weight'ᵀ. A plain table gives
    /// (hidden, headWeight); an adapter that also changes the head widens both.
    func tiedHeadInputs(_ hidden: Tensor) throws -> (hidden: Tensor, weight: HeadWeight)
}

extension EmbeddingLayer {
    public func tiedHeadInputs(_ hidden: Tensor) throws -> (hidden: Tensor, weight: HeadWeight) { (hidden, headWeight) }
}

/// A lookup table of `count` rows of width `dimensions`.
public final class Embedding: Module, EmbeddingLayer {
    public let weight: Tensor

    public init(count: Int, dimensions: Int) {
        weight = Tensor.zeros([count, dimensions])
    }

    public init(weight: Tensor) {
        precondition(weight.rank == 2, "Embedding weight must be [count, dimensions]")
        self.weight = weight
    }

    public var count: Int { weight.shape[0] }
    public var dimensions: Int { weight.shape[1] }
    public var headWeight: HeadWeight { .dense(weight) }

    /// Rows for token ids laid out as `shape` (e.g. [B, T]) → [B, T, D].
    public func callAsFunction(_ ids: [Int32], shape: [Int]) throws -> Tensor {
        try weight.gatherRows(ids, indexShape: shape)
    }
}

/// y = w ⊙ x / √(mean(x²) + ε) over the last axis (LLaMA).
public final class RMSNorm: Module {
    public let weight: Tensor
    public let epsilon: Float

    public init(dimensions: Int, epsilon: Float) {
        weight = Tensor.ones([dimensions])
        self.epsilon = epsilon
    }

    public func callAsFunction(_ x: Tensor) throws -> Tensor { try x.rmsNorm(weight: weight, epsilon: epsilon) }
}

/// y = w ⊙ (x − μ)/√(σ² + ε) + b over the last axis (GPT-2).
public final class LayerNorm: Module {
    public let weight: Tensor
    public let bias: Tensor
    public let epsilon: Float

    public init(dimensions: Int, epsilon: Float) {
        weight = Tensor.ones([dimensions])
        bias = Tensor.zeros([dimensions])
        self.epsilon = epsilon
    }

    public func callAsFunction(_ x: Tensor) throws -> Tensor { try x.layerNorm(weight: weight, bias: bias, epsilon: epsilon) }
}

/// GPT-2's and GPT-Neo's feed-forward: c_proj(gelu(c_fc(x))), both with biases.
public final class GELUMLP: Module {
    @Child public var cFc: any LinearLayer
    @Child public var cProj: any LinearLayer
    let approximation: Tensor.GELUApproximation

    public init(dimensions: Int, hiddenDimensions: Int, approximation: Tensor.GELUApproximation) {
        cFc = Linear(inputDimensions: dimensions, outputDimensions: hiddenDimensions, bias: true)
        cProj = Linear(inputDimensions: hiddenDimensions, outputDimensions: dimensions, bias: true)
        self.approximation = approximation
    }

    public func callAsFunction(_ x: Tensor) throws -> Tensor { try cProj(cFc(x).gelu(approximation: approximation)) }
}

/// LLaMA's SwiGLU feed-forward: down(silu(gate(x)) ⊙ up(x)).
public final class GatedMLP: Module {
    @Child public var gateProj: any LinearLayer
    @Child public var upProj: any LinearLayer
    @Child public var downProj: any LinearLayer

    public init(dimensions: Int, hiddenDimensions: Int, bias: Bool) {
        gateProj = Linear(inputDimensions: dimensions, outputDimensions: hiddenDimensions, bias: bias)
        upProj = Linear(inputDimensions: dimensions, outputDimensions: hiddenDimensions, bias: bias)
        downProj = Linear(inputDimensions: hiddenDimensions, outputDimensions: dimensions, bias: bias)
    }

    public func callAsFunction(_ x: Tensor) throws -> Tensor {
        let gate = try gateProj(x), up = try upProj(x)
        // A plain down projection takes the fused path, frozen or training; an adapted one the two ops.
        if let down = downProj as? Linear {
            let y = try Tensor.swiGLUProjected(gate: gate, up: up, weight: down.weight)
            return try down.bias.map { try y + $0 } ?? y
        }
        return try downProj(try Tensor.swiGLU(gate: gate, up: up))
    }
}
