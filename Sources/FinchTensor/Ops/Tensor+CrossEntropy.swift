/// Cross-entropy of logits against target ids, averaged over the positions that are not ignored.
/// logits [..., V], targets one per row. Fused with log-softmax: the backward recomputes the softmax
/// from the logits and each row's log-sum-exp instead of keeping a [rows, V] probability tensor.
extension Tensor {
    /// Mean of `logsumexp(x) − x[target]` over rows whose target is not `ignoreIndex`.
    /// With every row ignored the loss is 0 and so is its gradient (PyTorch would give NaN).
    ///
    /// dx[r, j] = g · (softmax(x_r)[j] − 1[j = t_r]) / count, and 0 on ignored rows.
    public func crossEntropy(targets: [Int32], ignoreIndex: Int32 = -100) throws -> Tensor {
        guard rank >= 1 else {
            throw TensorError.invalidArgument(op: "crossEntropy",
                                              message: "logits need a class axis, got shape \(shape)")
        }
        let v = shape[rank - 1]
        let rows = count / max(v, 1)
        guard targets.count == rows else {
            throw TensorError.shapeMismatch(op: "crossEntropy (logits rows vs targets)", lhs: shape,
                                            rhs: [targets.count])
        }
        if let bad = targets.first(where: { $0 != ignoreIndex && ($0 < 0 || Int($0) >= v) }) {
            throw TensorError.invalidArgument(op: "crossEntropy", message: "target \(bad) is outside 0..<\(v) and is not the ignore index \(ignoreIndex)")
        }
        let src = storage.pointer
        var lse = [Float](repeating: 0, count: rows)
        var perRow = [Double](repeating: 0, count: rows)
        lse.withUnsafeMutableBufferPointer { lp in
            perRow.withUnsafeMutableBufferPointer { pp in
                targets.withUnsafeBufferPointer { tp in
                    Parallel.forRows(rows, rowLength: v) { r in
                        guard tp[r] != ignoreIndex else { return }
                        let x = src + r * v
                        lp[r] = Tensor.logSumExp(x, v)
                        pp[r] = Double(lp[r] - x[Int(tp[r])])
                    }
                }
            }
        }
        let active = targets.reduce(0) { $0 + ($1 == ignoreIndex ? 0 : 1) }
        let loss = active == 0 ? 0 : perRow.reduce(0, +) / Double(active)
        let y = Tensor(Float(loss))
        if Tensor.needsGradient(self) {
            let logits = detached()
            let logitsShape = shape
            y.recordBackward("crossEntropy", inputs: [self]) { g in
                let scale = active == 0 ? 0 : g.storage.pointer[0] / Float(active)
                let gx = Tensor(uninitializedShape: logitsShape)
                let xp = logits.storage.pointer, dp = gx.storage.pointer
                lse.withUnsafeBufferPointer { lp in
                    targets.withUnsafeBufferPointer { tp in
                        Parallel.forRows(rows, rowLength: v) { r in
                            let x = xp + r * v, d = dp + r * v
                            guard tp[r] != ignoreIndex else {
                                d.update(repeating: 0, count: v)
                                return
                            }
                            let l = lp[r]
                            for j in 0..<v { d[j] = scale * Math.exp(x[j] - l) }
                            d[Int(tp[r])] -= scale
                        }
                    }
                }
                return [gx]
            }
        }
        return y
    }
}
