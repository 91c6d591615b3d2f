/// The language-model head and its loss in one op: cross-entropy of `hidden · weightᵀ` against targets,
/// computed over chunks of rows so the [rows, vocabulary] logits (and their gradient) never exist at once.
///
/// hidden [N, d], weight [V, d], targets N ids (or `ignoreIndex`) → the mean loss over kept rows.
/// With s = softmax(hidden_r · Wᵀ) and y the one-hot target, the gradients are
///   dhidden_r = g/count · (s − y) W,   dW = g/count · Σ_r (s − y)ᵀ hidden_r.
/// When a gradient is needed they are accumulated chunk by chunk during the forward pass (the loss is the
/// last op, so only the scalar g is unknown until backward, and it scales both). With a `teacher`, each row's
/// loss is the distillation loss instead (`DistillationTeacher`).
extension Tensor {
    public static func linearCrossEntropy(hidden: Tensor, weight: Tensor, targets: [Int32], ignoreIndex: Int32 = -100,
                                          chunkRows: Int? = nil, teacher: DistillationTeacher? = nil) throws -> Tensor {
        guard hidden.rank == 2, weight.rank == 2, hidden.shape[1] == weight.shape[1] else {
            throw TensorError.shapeMismatch(op: "linearCrossEntropy (hidden vs weight [V, d])", lhs: hidden.shape,
                                            rhs: weight.shape)
        }
        let (d, v) = (hidden.shape[1], weight.shape[0])
        let wantsWeight = needsGradient(weight)
        let dWeight = wantsWeight ? Tensor.zeros(weight.shape) : nil
        let wp = weight.storage.pointer
        let head = HeadProducts(vocabulary: v, weight: weight, weightGradient: dWeight, logits: { h, rows, out in
            GEMM.multiply(transposeA: false, transposeB: true, m: rows, n: v, k: d, a: h, lda: d, b: wp, ldb: d,
                          c: out, ldc: v)
        }, hiddenGradient: { s, rows, out in
            GEMM.multiply(transposeA: false, transposeB: false, m: rows, n: d, k: v, a: s, lda: v, b: wp, ldb: d,
                          c: out, ldc: d)
        }, accumulateWeightGradient: dWeight.map { dw in { s, h, rows in
            GEMM.multiply(transposeA: true, transposeB: false, m: v, n: d, k: rows, a: s, lda: v, b: h, ldb: d,
                          beta: 1, c: dw.storage.pointer, ldc: d)
        } })
        return try linearCrossEntropy(hidden: hidden, head: head, targets: targets, ignoreIndex: ignoreIndex,
                                      chunkRows: chunkRows, teacher: teacher)
    }

    /// The same loss over a frozen block-quantised head W [V, d] (a token table held quantised): each chunk's
    /// two products dequantise panels of W (`QuantizedMatrix.multiplyTransposed`, `.multiply`), so W is never
    /// float32 as a whole. Only `hidden` gets a gradient. Chunks are a quarter of the float head's (64 rows of
    /// a 49,152-entry vocabulary: 12.6 MB of logits instead of 50 MB): a base held quantised is chosen to save
    /// memory, and another chunk costs one more pass of dequantising W's panels, which are small beside the
    /// products.
    public static func linearCrossEntropy(hidden: Tensor, quantizedWeight w: QuantizedMatrix, targets: [Int32],
                                          ignoreIndex: Int32 = -100, chunkRows: Int? = nil,
                                          teacher: DistillationTeacher? = nil) throws -> Tensor {
        guard hidden.rank == 2, hidden.shape[1] == w.columns else {
            throw TensorError.shapeMismatch(op: "linearCrossEntropy (hidden vs quantised weight [V, d])",
                                            lhs: hidden.shape, rhs: w.shape)
        }
        let v = w.rows
        let head = HeadProducts(vocabulary: v, weight: nil, weightGradient: nil, logits: { h, rows, out in
            w.multiplyTransposed(h, rows: rows, into: out, stride: v)
        }, hiddenGradient: { s, rows, out in
            w.multiply(s, rows: rows, stride: v, into: out)
        }, accumulateWeightGradient: nil)
        return try linearCrossEntropy(hidden: hidden, head: head, targets: targets, ignoreIndex: ignoreIndex,
                                      chunkRows: chunkRows ?? max(64, (1 << 18) / max(v, 1)), teacher: teacher)
    }

    /// The head's matrix as the loss uses it: its three products over a chunk of rows.
    private struct HeadProducts {
        let vocabulary: Int
        /// The float weight, an input of the op when it gets a gradient.
        let weight: Tensor?
        let weightGradient: Tensor?
        /// logits [rows, V] = hidden [rows, d] · Wᵀ
        let logits: (UnsafeMutablePointer<Float>, Int, UnsafeMutablePointer<Float>) -> Void
        /// dhidden [rows, d] = (s − y) [rows, V] · W
        let hiddenGradient: (UnsafeMutablePointer<Float>, Int, UnsafeMutablePointer<Float>) -> Void
        /// dW += (s − y)ᵀ · hidden, given (s − y), hidden and the rows.
        let accumulateWeightGradient: ((UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>, Int) -> Void)?
    }

    private static func linearCrossEntropy(hidden: Tensor, head: HeadProducts, targets: [Int32], ignoreIndex: Int32,
                                           chunkRows: Int?, teacher: DistillationTeacher?) throws -> Tensor {
        let (n, d, v) = (hidden.shape[0], hidden.shape[1], head.vocabulary)
        guard targets.count == n else {
            throw TensorError.shapeMismatch(op: "linearCrossEntropy (hidden rows vs targets)", lhs: hidden.shape,
                                            rhs: [targets.count])
        }
        if let bad = targets.first(where: { $0 != ignoreIndex && ($0 < 0 || Int($0) >= v) }) {
            throw TensorError.invalidArgument(op: "linearCrossEntropy", message: "target \(bad) is outside 0..<\(v) and is not the ignore index \(ignoreIndex)")
        }
        try teacher?.check(rows: n, vocabulary: v)
        let wantsHidden = needsGradient(hidden), wantsWeight = head.weightGradient != nil
        let dHidden = wantsHidden ? Tensor.zeros(hidden.shape) : nil
        let dWeight = head.weightGradient
        // Only rows with a target are multiplied by the head (a prompt's positions, padding and a packed record's
        // last position have none): they are copied together first when some are ignored, and their hidden
        // gradients copied back, so the products are as long as the rows that count.
        let kept = targets.indices.filter { targets[$0] != ignoreIndex }
        let active = kept.count
        let perRow: [Double]
        if kept.count == n {
            perRow = chunkedLoss(hidden: hidden.storage.pointer, rows: n, d: d, head: head, targets: targets,
                                 dHidden: dHidden?.storage.pointer, chunkRows: chunkRows,
                                 teacher: teacher.map { ($0, $0.hidden) })
        } else {
            let compact = Tensor(uninitializedShape: [max(kept.count, 1), d])
            let compactGradient = wantsHidden ? Tensor(uninitializedShape: [max(kept.count, 1), d]) : nil
            let hp = hidden.storage.pointer, cp = compact.storage.pointer
            for (row, index) in kept.enumerated() { (cp + row * d).update(from: hp + index * d, count: d) }
            // The teacher's rows are kept the same way.
            let compactTeacher = teacher.map { teacher -> Tensor in
                let dt = teacher.hidden.shape[1]
                let rows = Tensor(uninitializedShape: [max(kept.count, 1), dt])
                let from = teacher.hidden.storage.pointer, to = rows.storage.pointer
                for (row, index) in kept.enumerated() { (to + row * dt).update(from: from + index * dt, count: dt) }
                return rows
            }
            perRow = chunkedLoss(hidden: cp, rows: kept.count, d: d, head: head, targets: kept.map { targets[$0] },
                                 dHidden: compactGradient?.storage.pointer, chunkRows: chunkRows,
                                 teacher: teacher.map { ($0, compactTeacher!) })
            if let dHidden, let compactGradient {
                let gp = compactGradient.storage.pointer, dp = dHidden.storage.pointer
                for (row, index) in kept.enumerated() { (dp + index * d).update(from: gp + row * d, count: d) }
            }
            withExtendedLifetime(compact) {}
            withExtendedLifetime(compactGradient) {}
        }
        let y = Tensor(Float(active == 0 ? 0 : perRow.reduce(0, +) / Double(active)))
        if wantsHidden || wantsWeight {
            let inputs = [hidden] + (wantsWeight ? head.weight.map { [$0] } ?? [] : [])
            y.recordBackward("linearCrossEntropy", inputs: inputs) { g in
                let scale = active == 0 ? 0 : g.storage.pointer[0] / Float(active)
                // Scaled in place: this step runs once, and nothing else holds these two.
                for t in [dHidden, dWeight].compactMap({ $0 }) {
                    let p = t.storage.pointer
                    Parallel.forChunks(count: t.count) { r in Tensor.scale(p + r.lowerBound, r.count, by: scale) }
                }
                return wantsWeight ? [dHidden, dWeight] : [dHidden]
            }
        }
        return y
    }

    /// The loss of each of `rows` rows (all with a target), and, where asked, the unscaled gradients
    /// (s − y)·W into `dHidden` and Σ (s − y)ᵀ hidden added into the head's weight gradient.
    private static func chunkedLoss(hidden hp: UnsafeMutablePointer<Float>, rows n: Int, d: Int, head: HeadProducts,
                                    targets: [Int32], dHidden: UnsafeMutablePointer<Float>?,
                                    chunkRows: Int?, teacher: (DistillationTeacher, Tensor)?) -> [Double] {
        let v = head.vocabulary
        var perRow = [Double](repeating: 0, count: n)
        guard n > 0 else { return perRow }
        let wantsGradient = dHidden != nil || head.accumulateWeightGradient != nil
        // About 1 M logits (4 MB) per chunk, but at least 256 rows: the chunk is live beside every activation
        // of the forward pass, at the step's peak, but OpenBLAS packs the whole weight again for every chunk's
        // two products. On W3's 8192 × 512 head, 128-row chunks ran at 132–155 GFLOP/s, 256 at 167–174, 512 at
        // 180 and one 2048-row product at 187–191 (both cores): 256 rows saves ~37 ms a step for 4 MB.
        let chunk = max(1, min(n, chunkRows ?? max(256, (1 << 20) / max(v, 1))))
        let scratch = Tensor(uninitializedShape: [chunk, v])
        let sp = scratch.storage.pointer
        // With a teacher: its logits for the chunk, and a third buffer the tempered softmax needs.
        let teacherScratch = teacher.map { _ in (Tensor(uninitializedShape: [chunk, v]), Tensor(uninitializedShape: [chunk, v])) }
        let (up, wp) = (teacherScratch?.0.storage.pointer, teacherScratch?.1.storage.pointer)
        let teacherRows = teacher?.1.storage.pointer, dt = teacher?.1.shape[1] ?? 0
        withExtendedLifetime((scratch, teacherScratch, teacher?.1)) {
            perRow.withUnsafeMutableBufferPointer { loss in
                targets.withUnsafeBufferPointer { tp in
                    for r0 in stride(from: 0, to: n, by: chunk) {
                        let rows = min(chunk, n - r0)
                        head.logits(hp + r0 * d, rows, sp)
                        if let (t, _) = teacher, let up, let wp, let teacherRows {
                            t.logits(teacherRows + r0 * dt, rows, up)
                            Parallel.forRows(rows, rowLength: v) { r in
                                loss[r0 + r] = Tensor.distillationRow(sp + r * v, teacher: up + r * v, scratch: wp + r * v, v,
                                                                      target: Int(tp[r0 + r]), temperature: t.temperature,
                                                                      alpha: t.alpha, gradient: wantsGradient)
                            }
                            if let dHidden { head.hiddenGradient(sp, rows, dHidden + r0 * d) }
                            head.accumulateWeightGradient?(sp, hp + r0 * d, rows)
                            continue
                        }
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
                        if let dHidden { head.hiddenGradient(sp, rows, dHidden + r0 * d) }
                        head.accumulateWeightGradient?(sp, hp + r0 * d, rows)
                    }
                }
            }
        }
        return perRow
    }
}
