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
        let wantsHidden = needsGradient(hidden), wantsWeight = needsGradient(weight)
        let dHidden = wantsHidden ? Tensor.zeros(hidden.shape) : nil
        let dWeight = wantsWeight ? Tensor.zeros(weight.shape) : nil
        // Only rows with a target are multiplied by the head (a prompt's positions, padding and a packed record's
        // last position have none): they are copied together first when some are ignored, and their hidden
        // gradients copied back, so the products are as long as the rows that count.
        let kept = targets.indices.filter { targets[$0] != ignoreIndex }
        let active = kept.count
        let perRow: [Double]
        if kept.count == n {
            perRow = chunkedLoss(hidden: hidden.storage.pointer, rows: n, d: d, weight: weight.storage.pointer, v: v,
                                 targets: targets, dHidden: dHidden?.storage.pointer,
                                 dWeight: dWeight?.storage.pointer, chunkRows: chunkRows)
        } else {
            let compact = Tensor(uninitializedShape: [max(kept.count, 1), d])
            let compactGradient = wantsHidden ? Tensor(uninitializedShape: [max(kept.count, 1), d]) : nil
            let hp = hidden.storage.pointer, cp = compact.storage.pointer
            for (row, index) in kept.enumerated() { (cp + row * d).update(from: hp + index * d, count: d) }
            perRow = chunkedLoss(hidden: cp, rows: kept.count, d: d, weight: weight.storage.pointer, v: v,
                                 targets: kept.map { targets[$0] }, dHidden: compactGradient?.storage.pointer,
                                 dWeight: dWeight?.storage.pointer, chunkRows: chunkRows)
            if let dHidden, let compactGradient {
                let gp = compactGradient.storage.pointer, dp = dHidden.storage.pointer
                for (row, index) in kept.enumerated() { (dp + index * d).update(from: gp + row * d, count: d) }
            }
            withExtendedLifetime(compact) {}
            withExtendedLifetime(compactGradient) {}
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

    /// The loss of each of `rows` rows (all with a target), and, where asked, the unscaled gradients
    /// (s − y)·W into `dHidden` and Σ (s − y)ᵀ hidden added into `dWeight`.
    private static func chunkedLoss(hidden hp: UnsafeMutablePointer<Float>, rows n: Int, d: Int,
                                    weight wp: UnsafeMutablePointer<Float>, v: Int, targets: [Int32],
                                    dHidden: UnsafeMutablePointer<Float>?, dWeight: UnsafeMutablePointer<Float>?,
                                    chunkRows: Int?) -> [Double] {
        var perRow = [Double](repeating: 0, count: n)
        guard n > 0 else { return perRow }
        let wantsGradient = dHidden != nil || dWeight != nil
        // About 1 M logits (4 MB) per chunk, but at least 256 rows: the chunk is live beside every activation
        // of the forward pass, at the step's peak, but OpenBLAS packs the whole weight again for every chunk's
        // two products. On W3's 8192 × 512 head, 128-row chunks ran at 132–155 GFLOP/s, 256 at 167–174, 512 at
        // 180 and one 2048-row product at 187–191 (both cores): 256 rows saves ~37 ms a step for 4 MB.
        let chunk = max(1, min(n, chunkRows ?? max(256, (1 << 20) / max(v, 1))))
        let scratch = Tensor(uninitializedShape: [chunk, v])
        let sp = scratch.storage.pointer
        withExtendedLifetime(scratch) {
            perRow.withUnsafeMutableBufferPointer { loss in
                targets.withUnsafeBufferPointer { tp in
                    for r0 in stride(from: 0, to: n, by: chunk) {
                        let rows = min(chunk, n - r0)
                        GEMM.multiply(transposeA: false, transposeB: true, m: rows, n: v, k: d,
                                      a: hp + r0 * d, lda: d, b: wp, ldb: d, c: sp, ldc: v)
                        Parallel.forRows(rows, rowLength: v) { r in
                            let x = sp + r * v, target = tp[r0 + r]
                            let picked = x[Int(target)]
                            let m = Tensor.rowMax(x, v)
                            guard wantsGradient && m > -.infinity else {
                                loss[r0 + r] = Double(Tensor.logSumExp(x, v) - picked)
                                if wantsGradient { x.update(repeating: 0, count: v) }
                                return
                            }
                            // One exp pass: e^(x − m) in place and its sum; then the softmax by scaling.
                            let sum = Tensor.expShiftedSum(x, x, v, m)
                            loss[r0 + r] = Double(m + Math.log(sum) - picked)
                            Tensor.scale(x, v, by: 1 / sum)  // s − y, unscaled
                            x[Int(target)] -= 1
                        }
                        if let dHidden {
                            GEMM.multiply(transposeA: false, transposeB: false, m: rows, n: d, k: v,
                                          a: sp, lda: v, b: wp, ldb: d, c: dHidden + r0 * d, ldc: d)
                        }
                        if let dWeight {
                            GEMM.multiply(transposeA: true, transposeB: false, m: v, n: d, k: rows,
                                          a: sp, lda: v, b: hp + r0 * d, ldb: d, beta: 1, c: dWeight, ldc: d)
                        }
                    }
                }
            }
        }
        return perRow
    }
}
