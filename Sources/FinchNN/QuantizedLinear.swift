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
