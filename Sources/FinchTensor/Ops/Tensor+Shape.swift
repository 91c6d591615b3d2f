/// Reshape, permute, slice and concatenate. Reshape shares storage; the others copy.
extension Tensor {
    /// The same values under a new shape; one dimension may be -1 and is inferred.
    public func reshaped(_ newShape: [Int]) throws -> Tensor {
        var resolved = newShape
        let known = newShape.filter { $0 != -1 }.reduce(1, *)
        let inferred = newShape.indices.filter { newShape[$0] == -1 }
        if inferred.count == 1, known > 0, count % known == 0 {
            resolved[inferred[0]] = count / known
        }
        guard inferred.count <= 1, resolved.allSatisfy({ $0 >= 0 }), resolved.reduce(1, *) == count else {
            throw TensorError.shapeMismatch(op: "reshape", lhs: shape, rhs: newShape)
        }
        let y = Tensor(shape: resolved, storage: storage)
        if Tensor.needsGradient(self) {
            let inputShape = shape
            y.recordBackward("reshape", inputs: [self]) { g in [g.reshapedStorage(inputShape)] }
        }
        return y
    }

    /// Axes reordered: result axis `i` is input axis `axes[i]`.
    public func permuted(_ axes: [Int]) throws -> Tensor {
        guard axes.count == rank, Set(axes) == Set(0..<rank) else {
            throw TensorError.invalidArgument(op: "permute", message: "axes \(axes) are not a permutation of 0..<\(rank) for shape \(shape)")
        }
        let y = permuteCopy(axes)
        if Tensor.needsGradient(self) {
            var inverse = [Int](repeating: 0, count: axes.count)
            for (i, a) in axes.enumerated() { inverse[a] = i }
            y.recordBackward("permute", inputs: [self]) { g in [g.permuteCopy(inverse)] }
        }
        return y
    }

    /// Swaps two axes (negative axes count from the end).
    public func transposed(_ a: Int = -2, _ b: Int = -1) throws -> Tensor {
        let i = try normalizedAxis(a, op: "transpose"), j = try normalizedAxis(b, op: "transpose")
        var axes = Array(0..<rank)
        axes.swapAt(i, j)
        return try permuted(axes)
    }

    /// Off the tape: the permuted copy. The innermost output axis is the inner loop.
    func permuteCopy(_ axes: [Int]) -> Tensor {
        let outShape = axes.map { shape[$0] }
        let y = Tensor(uninitializedShape: outShape)
        if count == 0 { return y }
        if axes == Array(0..<rank) {
            y.storage.pointer.update(from: storage.pointer, count: count)
            return y
        }
        let inStrides = Broadcast.contiguousStrides(shape)
        let strides = axes.map { inStrides[$0] }  // input stride per output axis
        let r = outShape.count
        let inner = outShape[r - 1], innerStride = strides[r - 1]
        let rows = count / inner
        let src = storage.pointer, dst = y.storage.pointer
        Parallel.forRows(rows, rowLength: inner) { row in
            var rest = row, offset = 0
            for d in stride(from: r - 2, through: 0, by: -1) {
                offset += (rest % outShape[d]) * strides[d]
                rest /= outShape[d]
            }
            let o = dst + row * inner, s = src + offset
            for j in 0..<inner { o[j] = s[j * innerStride] }
        }
        return y
    }

    /// Elements `range` along `axis`.
    public func slice(axis: Int, _ range: Range<Int>) throws -> Tensor {
        let a = try normalizedAxis(axis, op: "slice")
        guard range.lowerBound >= 0, range.upperBound <= shape[a] else {
            throw TensorError.invalidArgument(op: "slice", message: "range \(range) is out of bounds for axis \(axis) of shape \(shape)")
        }
        let outer = shape[..<a].reduce(1, *), inner = shape[(a + 1)...].reduce(1, *)
        var outShape = shape
        outShape[a] = range.count
        let y = Tensor(uninitializedShape: outShape)
        let n = shape[a], m = range.count
        let src = storage.pointer, dst = y.storage.pointer
        Parallel.forRows(outer, rowLength: m * inner) { o in
            (dst + o * m * inner).update(from: src + (o * n + range.lowerBound) * inner, count: m * inner)
        }
        if Tensor.needsGradient(self) {
            let inputShape = shape
            // dx is zero outside the slice and g inside it.
            y.recordBackward("slice", inputs: [self]) { g in
                let gx = Tensor.zeros(inputShape)
                let gs = g.storage.pointer, gd = gx.storage.pointer
                for o in 0..<outer {
                    (gd + (o * n + range.lowerBound) * inner).update(from: gs + o * m * inner, count: m * inner)
                }
                return [gx]
            }
        }
        return y
    }

    /// Joins tensors along `axis`; every other dimension must agree.
    public static func concatenate(_ tensors: [Tensor], axis: Int) throws -> Tensor {
        guard let first = tensors.first else {
            throw TensorError.invalidArgument(op: "concatenate", message: "needs at least one tensor")
        }
        let a = try first.normalizedAxis(axis, op: "concatenate")
        for t in tensors.dropFirst() {
            var s1 = first.shape, s2 = t.shape
            guard s1.count == s2.count else { throw TensorError.shapeMismatch(op: "concatenate", lhs: first.shape, rhs: t.shape) }
            s1[a] = 0; s2[a] = 0
            guard s1 == s2 else { throw TensorError.shapeMismatch(op: "concatenate", lhs: first.shape, rhs: t.shape) }
        }
        let sizes = tensors.map { $0.shape[a] }
        var outShape = first.shape
        outShape[a] = sizes.reduce(0, +)
        let outer = first.shape[..<a].reduce(1, *), inner = first.shape[(a + 1)...].reduce(1, *)
        let total = outShape[a]
        let y = Tensor(uninitializedShape: outShape)
        let dst = y.storage.pointer
        var start = 0
        for (t, n) in zip(tensors, sizes) {
            let src = t.storage.pointer
            for o in 0..<outer {
                (dst + (o * total + start) * inner).update(from: src + o * n * inner, count: n * inner)
            }
            start += n
        }
        if needsGradient(tensors) {
            let needs = tensors.map(\.requiresGrad)
            // Each input's gradient is its own slice of g.
            y.recordBackward("concatenate", inputs: tensors) { g in
                var offset = 0
                return try zip(sizes, needs).map { n, need in
                    defer { offset += n }
                    return need ? try g.detached().slice(axis: a, offset..<(offset + n)) : nil
                }
            }
        }
        return y
    }
}
