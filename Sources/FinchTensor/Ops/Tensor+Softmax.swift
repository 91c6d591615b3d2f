/// Softmax and log-softmax over the last axis, row by row, with the max subtracted for stability.
extension Tensor {
    // y = softmax(x);  dx = y ⊙ (g − Σ g⊙y)
    public func softmax() -> Tensor {
        let n = shape.last ?? 1
        let rows = count / max(n, 1)
        let y = Tensor(uninitializedShape: shape)
        let src = storage.pointer, dst = y.storage.pointer
        Parallel.forRows(rows, rowLength: n) { r in
            Tensor.softmaxRow(src + r * n, dst + r * n, n)
        }
        if Tensor.needsGradient(self) {
            let out = y.detached()
            y.recordBackward("softmax", inputs: [self]) { g in
                let gx = Tensor(uninitializedShape: g.shape)
                let gp = g.storage.pointer, yp = out.storage.pointer, dp = gx.storage.pointer
                Parallel.forRows(rows, rowLength: n) { r in
                    let gr = gp + r * n, yr = yp + r * n, dr = dp + r * n
                    var dot: Float = 0
                    for j in 0..<n { dot += gr[j] * yr[j] }
                    for j in 0..<n { dr[j] = yr[j] * (gr[j] - dot) }
                }
                return [gx]
            }
        }
        return y
    }

    // y = x − logΣeˣ;  dx = g − eʸ Σ g
    public func logSoftmax() -> Tensor {
        let n = shape.last ?? 1
        let rows = count / max(n, 1)
        let y = Tensor(uninitializedShape: shape)
        let src = storage.pointer, dst = y.storage.pointer
        Parallel.forRows(rows, rowLength: n) { r in
            let x = src + r * n, o = dst + r * n
            let lse = Tensor.logSumExp(x, n)
            for j in 0..<n { o[j] = x[j] - lse }
        }
        if Tensor.needsGradient(self) {
            let out = y.detached()
            y.recordBackward("logSoftmax", inputs: [self]) { g in
                let gx = Tensor(uninitializedShape: g.shape)
                let gp = g.storage.pointer, yp = out.storage.pointer, dp = gx.storage.pointer
                Parallel.forRows(rows, rowLength: n) { r in
                    let gr = gp + r * n, yr = yp + r * n, dr = dp + r * n
                    var total: Float = 0
                    for j in 0..<n { total += gr[j] }
                    for j in 0..<n { dr[j] = gr[j] - Math.exp(yr[j]) * total }
                }
                return [gx]
            }
        }
        return y
    }
}
