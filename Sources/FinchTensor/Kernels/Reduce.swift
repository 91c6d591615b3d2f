/// Sums over axes of a contiguous tensor. Each axis is reduced as the middle of `[outer, n, inner]`, so
/// the inner loop runs over contiguous memory.
enum Reduce {
    static func sum(_ x: Tensor, axes: [Int], keepDims: Bool) -> Tensor {
        var current = x
        var shape = x.shape
        for axis in Set(axes).sorted() where shape[axis] != 1 {
            current = sumAxis(current, axis: axis)
            shape[axis] = 1
        }
        if current === x { current = x.copy() }
        let outShape = keepDims ? shape : shape.enumerated().filter { !axes.contains($0.offset) }.map(\.element)
        return current.reshapedStorage(outShape)
    }

    /// Sums one axis, keeping it as a dimension of 1.
    static func sumAxis(_ x: Tensor, axis: Int) -> Tensor {
        let outer = x.shape[..<axis].reduce(1, *)
        let n = x.shape[axis]
        let inner = x.shape[(axis + 1)...].reduce(1, *)
        var outShape = x.shape
        outShape[axis] = 1
        let y = Tensor(uninitializedShape: outShape)
        let src = x.storage.pointer, dst = y.storage.pointer
        if inner == 1 {
            Parallel.forRows(outer, rowLength: n) { o in
                var acc: Float = 0
                let row = src + o * n
                var acc8 = SIMD8<Float>()
                var j = 0
                while j + 8 <= n {
                    acc8 += UnsafeRawPointer(row + j).loadUnaligned(as: SIMD8<Float>.self)
                    j += 8
                }
                acc = acc8.sum()
                while j < n { acc += row[j]; j += 1 }
                dst[o] = acc
            }
        } else if outer >= Parallel.coreCount {
            Parallel.forRows(outer, rowLength: n * inner) { o in
                let out = dst + o * inner
                out.update(repeating: 0, count: inner)
                for j in 0..<n {
                    let row = src + (o * n + j) * inner
                    for k in 0..<inner { out[k] += row[k] }
                }
            }
        } else {
            // Few outer blocks (e.g. summing a bias gradient over all rows): split the inner axis instead.
            for o in 0..<outer {
                let out = dst + o * inner
                Parallel.forChunks(count: inner, minimumChunk: max(1, 32_768 / max(n, 1))) { r in
                    for k in r { out[k] = 0 }
                    for j in 0..<n {
                        let row = src + (o * n + j) * inner
                        for k in r { out[k] += row[k] }
                    }
                }
            }
        }
        return y
    }
}
