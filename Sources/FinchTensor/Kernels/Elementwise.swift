/// Element-wise loops over contiguous storage, split across the cores when large.
enum Elementwise {
    /// `f` applied to every element of `x`.
    @inline(__always)
    static func map(_ x: Tensor, _ f: (Float) -> Float) -> Tensor {
        let y = Tensor(uninitializedShape: x.shape)
        let src = x.storage.pointer, dst = y.storage.pointer
        Parallel.forChunks(count: x.count) { r in
            for i in r { dst[i] = f(src[i]) }
        }
        return y
    }

    /// `f` applied pairwise to two tensors with the same element count.
    @inline(__always)
    static func zip(_ x: Tensor, _ z: Tensor, shape: [Int], _ f: (Float, Float) -> Float) -> Tensor {
        let y = Tensor(uninitializedShape: shape)
        let a = x.storage.pointer, b = z.storage.pointer, dst = y.storage.pointer
        Parallel.forChunks(count: y.count) { r in
            for i in r { dst[i] = f(a[i], b[i]) }
        }
        return y
    }

    /// x + z for two tensors with the same element count. The arithmetic is written out rather than passed
    /// as a closure: a closure captured inside the parallel chunk body is called per element, not inlined.
    static func add(_ x: Tensor, _ z: Tensor, shape: [Int]) -> Tensor {
        let y = Tensor(uninitializedShape: shape)
        // A sum of values not computed yet (a checkpointed block's second run) waits as they do.
        if x.valuesArePending || z.valuesArePending {
            y.computeValues { [values = y.values] in add(x, z, into: values) }
        } else {
            add(x, z, into: y.values)
        }
        return y
    }

    private static func add(_ x: Tensor, _ z: Tensor, into out: TensorStorage) {
        let a = x.storage.pointer, b = z.storage.pointer, dst = out.pointer
        Parallel.forChunks(count: out.count) { r in
            for i in r { dst[i] = a[i] + b[i] }
        }
    }

    /// x · s, written out for the same reason as `add`.
    static func scale(_ x: Tensor, _ s: Float) -> Tensor {
        let y = Tensor(uninitializedShape: x.shape)
        let src = x.storage.pointer, dst = y.storage.pointer
        Parallel.forChunks(count: x.count) { r in
            for i in r { dst[i] = src[i] * s }
        }
        return y
    }

    /// `f` applied pairwise over NumPy-broadcast operands; `outShape` is their broadcast shape.
    @inline(__always)
    static func broadcast(_ x: Tensor, _ z: Tensor, outShape: [Int], _ f: (Float, Float) -> Float) -> Tensor {
        if x.shape == outShape && z.shape == outShape {
            return zip(x, z, shape: outShape, f)
        }
        let out = Tensor(uninitializedShape: outShape)
        let a = x.storage.pointer, b = z.storage.pointer, dst = out.storage.pointer
        if z.count == 1 && x.count == out.count {
            let s = b[0]
            Parallel.forChunks(count: out.count) { r in for i in r { dst[i] = f(a[i], s) } }
            return out
        }
        if x.count == 1 && z.count == out.count {
            let s = a[0]
            Parallel.forChunks(count: out.count) { r in for i in r { dst[i] = f(s, b[i]) } }
            return out
        }
        // General case: the last axis is the inner loop; the others are walked per row.
        let rank = outShape.count
        let inner = outShape[rank - 1]
        let rows = out.count / max(inner, 1)
        let sa = Broadcast.strides(of: x.shape, in: outShape)
        let sb = Broadcast.strides(of: z.shape, in: outShape)
        let ia = sa[rank - 1], ib = sb[rank - 1]
        Parallel.forRows(rows, rowLength: inner) { row in
            var rest = row, oa = 0, ob = 0
            for d in stride(from: rank - 2, through: 0, by: -1) {
                let i = rest % outShape[d]
                rest /= outShape[d]
                oa += i * sa[d]
                ob += i * sb[d]
            }
            let o = dst + row * inner, pa = a + oa, pb = b + ob
            if ia == 1 && ib == 1 {
                for j in 0..<inner { o[j] = f(pa[j], pb[j]) }
            } else if ia == 1 {
                let s = pb[0]
                for j in 0..<inner { o[j] = f(pa[j], s) }
            } else if ib == 1 {
                let s = pa[0]
                for j in 0..<inner { o[j] = f(s, pb[j]) }
            } else {
                let s = f(pa[0], pb[0])
                for j in 0..<inner { o[j] = s }
            }
        }
        return out
    }
}
