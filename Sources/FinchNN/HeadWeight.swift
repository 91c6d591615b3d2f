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

    /// The number of logits it makes (its rows).
    public var vocabulary: Int {
        switch self {
        case .dense(let w): w.shape[0]
        case .quantized(let q): q.rows
        }
    }

    /// hidden [..., d] → logits [..., vocabulary].
    public func logits(_ hidden: Tensor) throws -> Tensor {
        switch self {
        case .dense(let w): try hidden.matmul(w, transposeOther: true)
        case .quantized(let q): try hidden.matmul(quantized: q)
        }
    }

    /// Mean cross-entropy of hidden [N, d] · Wᵀ against `targets`, chunked so the logits never exist at once
    /// (`Tensor.linearCrossEntropy`); with a `teacher`, the distillation loss against it.
    public func crossEntropy(hidden: Tensor, targets: [Int32], ignoreIndex: Int32,
                             teacher: DistillationTeacher? = nil) throws -> Tensor {
        switch self {
        case .dense(let w):
            try Tensor.linearCrossEntropy(hidden: hidden, weight: w, targets: targets, ignoreIndex: ignoreIndex, teacher: teacher)
        case .quantized(let q):
            try Tensor.linearCrossEntropy(hidden: hidden, quantizedWeight: q, targets: targets, ignoreIndex: ignoreIndex,
                                          teacher: teacher)
        }
    }

    /// A distillation teacher with this head over `hidden` [N, d] (the teacher's hidden states).
    public func teacher(hidden: Tensor, temperature: Float, alpha: Float) throws -> DistillationTeacher {
        switch self {
        case .dense(let w): try DistillationTeacher(hidden: hidden, weight: w, temperature: temperature, alpha: alpha)
        case .quantized(let q): try DistillationTeacher(hidden: hidden, quantizedWeight: q, temperature: temperature, alpha: alpha)
        }
    }
}
