import FinchTensor

/// y = x · deq(W)ᵀ + b with W kept block-quantised (a GGUF's own blocks, or NF4): a frozen base layer that
/// adapters train over. W gets no gradient and no optimizer state; the bias, if any, is float32 and frozen too.
public final class QuantizedLinear: Module, LinearLayer {
    public let quantized: QuantizedMatrix
    public let bias: Tensor?

    public init(_ quantized: QuantizedMatrix, bias: Tensor? = nil) {
        self.quantized = quantized
        self.bias = bias
        super.init()
        bias?.requiresGrad = false
    }

    public var inputDimensions: Int { quantized.columns }
    public var outputDimensions: Int { quantized.rows }

    public func callAsFunction(_ x: Tensor) throws -> Tensor {
        let y = try x.matmul(quantized: quantized)
        return try bias.map { try y + $0 } ?? y
    }

    /// The float32 layer it stands for (for merging and export).
    public func dequantized() -> Linear { Linear(weight: quantized.dequantized(), bias: bias?.copy()) }
}

/// A frozen token table [count, dimensions] kept block-quantised (a GGUF's `token_embd` as stored): lookups
/// dequantise the rows asked for, and a head tied to it multiplies by it a panel at a time
/// (`HeadWeight.quantized`). It has no parameters: nothing of it trains.
public final class QuantizedEmbedding: Module, EmbeddingLayer {
    public let quantized: QuantizedMatrix

    public init(_ quantized: QuantizedMatrix) { self.quantized = quantized }

    public var count: Int { quantized.rows }
    public var dimensions: Int { quantized.columns }
    public var headWeight: HeadWeight { .quantized(quantized) }

    public func callAsFunction(_ ids: [Int32], shape: [Int]) throws -> Tensor { try quantized.rows(ids, shape: shape) }

    /// The float32 table it stands for (for export and for adapters that need a float table).
    public func dequantized() -> Embedding { Embedding(weight: quantized.dequantized()) }
}

/// A layer holding a frozen block-quantised matrix: what `finch inspect` and the run's log count as quantised.
public protocol QuantizedModule: Module {
    var quantized: QuantizedMatrix { get }
}

extension QuantizedLinear: QuantizedModule {}
extension QuantizedEmbedding: QuantizedModule {}
