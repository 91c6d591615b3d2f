/// The language-model head and its loss in one op: cross-entropy of `hidden · weightᵀ` against targets,
/// computed over chunks of rows so the [rows, vocabulary] logits (and their gradient) never exist at once.
///
/// hidden [N, d], weight [V, d], targets N ids (or `ignoreIndex`) → the mean loss over kept rows.
/// With s = softmax(hidden_r · Wᵀ) and y the one-hot target, the gradients are
///   dhidden_r = g/count · (s − y) W,   dW = g/count · Σ_r (s − y)ᵀ hidden_r.
/// When a gradient is needed they are accumulated chunk by chunk during the forward pass (the loss is the
/// last op, so only the scalar g is unknown until backward, and it scales both).
extension Tensor {
    public static func linearCrossEntropy(hidden: Tensor, weight: Tensor, targets: [Int32], ignoreIndex: Int32 = -100,
                                          chunkRows: Int? = nil) throws -> Tensor {
        guard hidden.rank == 2, weight.rank == 2, hidden.shape[1] == weight.shape[1] else {
            throw TensorError.shapeMismatch(op: "linearCrossEntropy (hidden vs weight [V, d])", lhs: hidden.shape,
                                            rhs: weight.shape)
        }
        let (n, d, v) = (hidden.shape[0], hidden.shape[1], weight.shape[0])
        guard targets.count == n else {
            throw TensorError.shapeMismatch(op: "linearCrossEntropy (hidden rows vs targets)", lhs: hidden.shape,
                                            rhs: [targets.count])
        }
        if let bad = targets.first(where: { $0 != ignoreIndex && ($0 < 0 || Int($0) >= v) }) {
            throw TensorError.invalidArgument(op: "linearCrossEntropy", message: "target \(bad) is outside 0..<\(v) and is not the ignore index \(ignoreIndex)")
        }
        let active = targets.reduce(0) { $0 + ($1 == ignoreIndex ? 0 : 1) }
        let wantsHidden = needsGradient(hidden), wantsWeight = needsGradient(weight)
        let dHidden = wantsHidden ? Tensor(uninitializedShape: hidden.shape) : nil
        let dWeight = wantsWeight ? Tensor.zeros(weight.shape) : nil
        // About 1 M logits (4 MB) per chunk, but at least 256 rows: the chunk is live beside every activation
        // of the forward pass, at the step's peak, but OpenBLAS packs the whole weight again for every chunk's
        // two products. On W3's 8192 × 512 head, 128-row chunks ran at 132–155 GFLOP/s, 256 at 167–174, 512 at
        // 180 and one 2048-row product at 187–191 (both cores): 256 rows saves ~37 ms a step for 4 MB.
        let chunk = max(1, min(n, chunkRows ?? max(256, (1 << 20) / max(v, 1))))
        let scratch = Tensor(uninitializedShape: [chunk, v])
        var perRow = [Double](repeating: 0, count: n)
        let hp = hidden.storage.pointer, wp = weight.storage.pointer, sp = scratch.storage.pointer
        withExtendedLifetime(scratch) {
            perRow.withUnsafeMutableBufferPointer { loss in
                targets.withUnsafeBufferPointer { tp in
                    for r0 in stride(from: 0, to: n, by: chunk) {
                        let rows = min(chunk, n - r0)
                        GEMM.multiply(transposeA: false, transposeB: true, m: rows, n: v, k: d,
                                      a: hp + r0 * d, lda: d, b: wp, ldb: d, c: sp, ldc: v)
                        Parallel.forRows(rows, rowLength: v) { r in
                            let x = sp + r * v, target = tp[r0 + r]
                            guard target != ignoreIndex else {
                                if wantsHidden || wantsWeight { x.update(repeating: 0, count: v) }
                                return
                            }
                            let picked = x[Int(target)]
                            let m = Tensor.rowMax(x, v)
                            guard (wantsHidden || wantsWeight) && m > -.infinity else {
                                loss[r0 + r] = Double(Tensor.logSumExp(x, v) - picked)
                                if wantsHidden || wantsWeight { x.update(repeating: 0, count: v) }
                                return
                            }
                            // One exp pass: e^(x − m) in place and its sum; then the softmax by scaling.
                            let sum = Tensor.expShiftedSum(x, x, v, m)
                            loss[r0 + r] = Double(m + Math.log(sum) - picked)
                            Tensor.scale(x, v, by: 1 / sum)  // s − y, unscaled
                            x[Int(target)] -= 1
                        }
                        guard wantsHidden || wantsWeight else { continue }
                        if let dHidden {
                            GEMM.multiply(transposeA: false, transposeB: false, m: rows, n: d, k: v,
                                          a: sp, lda: v, b: wp, ldb: d, c: dHidden.storage.pointer + r0 * d, ldc: d)
                        }
                        if let dWeight {
                            GEMM.multiply(transposeA: true, transposeB: false, m: v, n: d, k: rows,
                                          a: sp, lda: v, b: hp + r0 * d, ldb: d, beta: 1, c: dWeight.storage.pointer, ldc: d)
                        }
                    }
                }
            }
        }
        let y = Tensor(Float(active == 0 ? 0 : perRow.reduce(0, +) / Double(active)))
        if wantsHidden || wantsWeight {
            y.recordBackward("linearCrossEntropy", inputs: [hidden, weight]) { g in
                let scale = active == 0 ? 0 : g.storage.pointer[0] / Float(active)
                // Scaled in place: this step runs once, and nothing else holds these two.
                for t in [dHidden, dWeight].compactMap({ $0 }) {
                    let p = t.storage.pointer
                    Parallel.forChunks(count: t.count) { r in Tensor.scale(p + r.lowerBound, r.count, by: scale) }
                }
                return [dHidden, dWeight]
            }
        }
        return y
    }
}
