/// Inverted dropout from Finch's seeded generator: each element is kept with probability 1 − p and
/// scaled by 1/(1 − p); the backward applies the same mask.
extension Tensor {
    public func dropout(probability p: Float, generator: inout RandomGenerator) throws -> Tensor {
        guard p >= 0, p < 1 else {
            throw TensorError.invalidArgument(op: "dropout", message: "probability must be in [0, 1), got \(p)")
        }
        if p == 0 { return self }
        let scale = 1 / (1 - p)
        func draw() -> Tensor {
            let mask = Tensor(uninitializedShape: shape)
            let mp = mask.storage.pointer
            for i in 0..<count { mp[i] = generator.nextUniform() < p ? 0 : scale }
            return mask
        }
        // Inside a checkpointed block the second run reuses the first run's mask (see `Tensor.checkpoint`).
        let mask = try DropoutMasks.current?.mask(shape: shape, draw) ?? draw()
        let y = Elementwise.zip(self, mask, shape: shape) { $0 * $1 }
        if Tensor.needsGradient(self) {
            y.recordBackward("dropout", inputs: [self]) { g in
                [Elementwise.zip(g, mask, shape: g.shape) { $0 * $1 }]
            }
        }
        return y
    }
}
