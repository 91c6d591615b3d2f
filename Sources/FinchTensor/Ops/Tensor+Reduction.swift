/// Sums and means over axes. The backward spreads the gradient back over the summed axes.
extension Tensor {
    func normalizedAxis(_ axis: Int, op: String) throws -> Int {
        let a = axis < 0 ? axis + rank : axis
        guard a >= 0 && a < max(rank, 1) else {
            throw TensorError.invalidArgument(op: op, message: "axis \(axis) is out of range for shape \(shape)")
        }
        return a
    }

    /// Sum over `axes` (all axes when nil); `keepDims` keeps each summed axis as a dimension of 1.
    public func sum(axes: [Int]? = nil, keepDims: Bool = false) throws -> Tensor {
        let axes = try (axes ?? Array(0..<rank)).map { try normalizedAxis($0, op: "sum") }
        let y = Reduce.sum(self, axes: axes, keepDims: keepDims)
        if Tensor.needsGradient(self) {
            var kept = shape
            for a in axes { kept[a] = 1 }
            let inputShape = shape
            // dy/dx = 1 for every summed element: broadcast g back to the input's shape.
            y.recordBackward("sum", inputs: [self]) { g in
                [g.reshapedStorage(kept).broadcastCopy(to: inputShape)]
            }
        }
        return y
    }

    public func sum(axis: Int, keepDims: Bool = false) throws -> Tensor {
        try sum(axes: [axis], keepDims: keepDims)
    }

    /// Mean over `axes` (all axes when nil).
    public func mean(axes: [Int]? = nil, keepDims: Bool = false) throws -> Tensor {
        let normalized = try (axes ?? Array(0..<rank)).map { try normalizedAxis($0, op: "mean") }
        let n = Set(normalized).reduce(1) { $0 * shape[$1] }
        return try sum(axes: normalized, keepDims: keepDims) * (1 / Float(max(n, 1)))
    }

    public func mean(axis: Int, keepDims: Bool = false) throws -> Tensor {
        try mean(axes: [axis], keepDims: keepDims)
    }

    /// A copy broadcast to `target` (off the tape).
    func broadcastCopy(to target: [Int]) -> Tensor {
        if shape == target { return self }
        return Elementwise.broadcast(self, Tensor(0), outShape: target) { a, _ in a }
    }

    /// Broadcasts to `target`; the tape sums the gradient back down.
    public func expanded(to target: [Int]) throws -> Tensor {
        guard Broadcast.shape(shape, target) == target else {
            throw TensorError.shapeMismatch(op: "expand", lhs: shape, rhs: target)
        }
        let y = broadcastCopy(to: target).copyIfSame(as: self)
        if Tensor.needsGradient(self) { y.recordBackward("expand", inputs: [self]) { g in [g] } }
        return y
    }

    /// Index of the largest value along the last axis (first on ties). Off the tape.
    public func argmax() -> [Int] {
        let n = shape.last ?? 1
        let rows = count / max(n, 1)
        let p = storage.pointer
        return (0..<rows).map { r in
            var best = 0
            for j in 1..<max(n, 1) where p[r * n + j] > p[r * n + best] { best = j }
            return best
        }
    }

    /// A fresh tensor object when `self` came back unchanged (so the result has its own node).
    func copyIfSame(as other: Tensor) -> Tensor {
        self === other ? Tensor(shape: shape, storage: storage) : self
    }
}
