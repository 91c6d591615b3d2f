/// Each example's own gradient of chosen weights, for DP-SGD's per-example clipping: while a capture is current, a
/// product x · Wᵀ with a captured weight W (a Linear layer's, shared by every row of x) keeps, in its backward pass,
/// dW_e = dyₑᵀ xₑ for each example e — its block of rows of x, the rows in batch order — instead of adding their sum
/// to W's gradient. The FLOPs are those of the summed product; the memory is one gradient per example per weight,
/// which for LoRA's thin matrices (r rows or columns) is less than a norm by the T² identity of ghost clipping would
/// compute with.
public final class PerExampleGradients: @unchecked Sendable {
    public let examples: Int
    /// [examples, out, in] per captured weight, summed over every product the weight takes part in.
    private var slots: [ObjectIdentifier: Tensor] = [:]

    /// The capture of the forward and backward passes running on this thread (or task): each training run in a
    /// process has its own.
    @TaskLocal static var current: PerExampleGradients?

    public init(examples: Int, weights: [Tensor]) {
        self.examples = examples
        for w in weights where w.rank == 2 { slots[ObjectIdentifier(w)] = Tensor.zeros([examples] + w.shape) }
    }

    /// Runs `body` (a forward and backward pass) with this capture current.
    public func capturing<R>(_ body: () throws -> R) rethrows -> R {
        try Self.$current.withValue(self, operation: body)
    }

    /// The per-example gradients of `weight`, [examples, out, in] (nil: not captured).
    public func gradients(of weight: Tensor) -> Tensor? { slots[ObjectIdentifier(weight)] }

    /// The slot of `weight` when the current capture holds one.
    static func slot(for weight: Tensor) -> Tensor? { current?.slots[ObjectIdentifier(weight)] }

    /// Adds dW_e = gₑᵀ xₑ for each example into `slot`: `g` [rows, out] and `x` [rows, in] in batch order, each
    /// example `rows / examples` consecutive rows.
    static func accumulate(into slot: Tensor, gradient g: UnsafePointer<Float>, input x: UnsafePointer<Float>,
                           rows: Int, out: Int, in inputs: Int) {
        let examples = slot.shape[0], perExample = rows / examples
        for e in 0..<examples {
            GEMM.multiply(transposeA: true, transposeB: false, m: out, n: inputs, k: perExample,
                          a: g + e * perExample * out, lda: out, b: x + e * perExample * inputs, ldb: inputs,
                          beta: 1, c: slot.storage.pointer + e * out * inputs, ldc: inputs)
        }
    }
}
