import FinchTensor

/// The matrix [vocabulary, hidden] a language-model head multiplies by, logits = hidden · Wᵀ: float32 (a Linear's
/// weight or a float token table), or a frozen block-quantised token table that is never float32 as a whole.
public enum HeadWeight {
    case dense(Tensor)
    case quantized(QuantizedMatrix)

    /// The float32 weight, when it is one.
    public var tensor: Tensor? {
        if case .dense(let t) = self { return t }
        return nil
    }

    /// hidden [..., d] → logits [..., vocabulary].
    public func logits(_ hidden: Tensor) throws -> Tensor {
        switch self {
        case .dense(let w): try hidden.matmul(w, transposeOther: true)
        case .quantized(let q): try hidden.matmul(quantized: q)
        }
    }

    /// Mean cross-entropy of hidden [N, d] · Wᵀ against `targets`, chunked so the logits never exist at once
    /// (`Tensor.linearCrossEntropy`).
    public func crossEntropy(hidden: Tensor, targets: [Int32], ignoreIndex: Int32) throws -> Tensor {
        switch self {
        case .dense(let w):
            try Tensor.linearCrossEntropy(hidden: hidden, weight: w, targets: targets, ignoreIndex: ignoreIndex)
        case .quantized(let q):
            try Tensor.linearCrossEntropy(hidden: hidden, quantizedWeight: q, targets: targets, ignoreIndex: ignoreIndex)
        }
    }
}
