/// Row gather: the embedding lookup. table [V, D], indices (any shape S) → [S..., D].
extension Tensor {
    /// Rows of this table picked by `indices`; `indexShape` is the shape of the index array.
    /// - Throws: when an index is outside `0..<V` or the index count does not match `indexShape`.
    public func gatherRows(_ indices: [Int32], indexShape: [Int]) throws -> Tensor {
        guard rank == 2 else {
            throw TensorError.invalidArgument(op: "gatherRows",
                                              message: "the table must be [rows, width], got shape \(shape)")
        }
        guard indexShape.reduce(1, *) == indices.count else {
            throw TensorError.invalidArgument(op: "gatherRows", message: "index shape \(indexShape) holds \(indexShape.reduce(1, *)) indices, got \(indices.count)")
        }
        let v = shape[0], d = shape[1]
        if let bad = indices.first(where: { $0 < 0 || Int($0) >= v }) {
            throw TensorError.invalidArgument(op: "gatherRows",
                                              message: "index \(bad) is outside the table's \(v) rows")
        }
        let y = Tensor(uninitializedShape: indexShape + [d])
        let src = storage.pointer, dst = y.storage.pointer
        indices.withUnsafeBufferPointer { idx in
            Parallel.forRows(idx.count, rowLength: d) { i in
                (dst + i * d).update(from: src + Int(idx[i]) * d, count: d)
            }
        }
        if Tensor.needsGradient(self) {
            let tableShape = shape
            // dTable[idx[i]] += g[i]: scatter-add, serial because indices repeat.
            y.recordBackward("gatherRows", inputs: [self]) { g in
                let gt = Tensor.zeros(tableShape)
                let gs = g.storage.pointer, gd = gt.storage.pointer
                for (i, row) in indices.enumerated() {
                    let o = gd + Int(row) * d, s = gs + i * d
                    for j in 0..<d { o[j] += s[j] }
                }
                return [gt]
            }
        }
        return y
    }
}
