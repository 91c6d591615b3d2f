import FinchTensor

public enum Losses {
    public static let ignoreIndex: Int32 = -100

    /// Next-token targets for a [B, T] batch: position t predicts token t+1; the last position of each
    /// row, and positions whose `mask` is false, are ignored. This is transformers' `labels=input_ids`.
    public static func nextTokenTargets(_ tokens: [Int32], batch: Int, length: Int, mask: [Bool]? = nil) -> [Int32] {
        var targets = [Int32](repeating: ignoreIndex, count: batch * length)
        for b in 0..<batch {
            for t in 0..<(length - 1) {
                let next = b * length + t + 1
                if mask?[next] ?? true { targets[b * length + t] = tokens[next] }
            }
        }
        return targets
    }

    /// Mean next-token cross-entropy of logits [B, T, V] against `tokens` [B, T].
    public static func causalLanguageModel(logits: Tensor, tokens: [Int32], mask: [Bool]? = nil) throws -> Tensor {
        let (b, t) = (logits.shape[0], logits.shape[1])
        return try logits.crossEntropy(targets: nextTokenTargets(tokens, batch: b, length: t, mask: mask),
                                       ignoreIndex: ignoreIndex)
    }
}
