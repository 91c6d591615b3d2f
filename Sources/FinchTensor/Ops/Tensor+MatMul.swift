/// Matrix products on `cblas_sgemm`: 2-D, batched, and batched-times-shared (a Linear layer), with either
/// operand transposed. Shapes (op(X) is X or Xᵀ):
///   self [..., M, K] (or [..., K, M] with transposeSelf), other [K, N] or [..., K, N]
///   (or [N, K] / [..., N, K] with transposeOther)  →  [..., M, N]
extension Tensor {
    public func matmul(_ other: Tensor, transposeSelf tA: Bool = false,
                       transposeOther tB: Bool = false) throws -> Tensor {
        let a = self, b = other
        guard a.rank >= 2, b.rank >= 2 else {
            throw TensorError.shapeMismatch(op: "matmul (needs rank ≥ 2)", lhs: a.shape, rhs: b.shape)
        }
        let m = tA ? a.shape[a.rank - 1] : a.shape[a.rank - 2]
        let k = tA ? a.shape[a.rank - 2] : a.shape[a.rank - 1]
        let kb = tB ? b.shape[b.rank - 1] : b.shape[b.rank - 2]
        let n = tB ? b.shape[b.rank - 2] : b.shape[b.rank - 1]
        let batchShape = Array(a.shape.dropLast(2))
        let sharedB = b.rank == 2
        guard k == kb, sharedB || Array(b.shape.dropLast(2)) == batchShape else {
            throw TensorError.shapeMismatch(
                op: "matmul\(tA ? " (self transposed)" : "")\(tB ? " (other transposed)" : "")", lhs: a.shape, rhs: b.shape)
        }
        let batch = batchShape.reduce(1, *)
        let y = Tensor(uninitializedShape: batchShape + [m, n])
        let lda = tA ? m : k, ldb = tB ? k : n
        let strideB = sharedB ? 0 : k * n
        Tensor.batchedGEMM(
            count: batch, tA: tA, tB: tB, m: m, n: n, k: k,
            a: a.storage.pointer, lda: lda, strideA: m * k,
            b: b.storage.pointer, ldb: ldb, strideB: strideB,
            c: y.storage.pointer, ldc: n, strideC: m * n)

        guard Tensor.needsGradient(a, b) else { return y }
        // A weight whose per-example gradients are being captured (DP-SGD): only as a Linear layer uses it, with
        // whole examples' rows.
        let perExample = b.requiresGrad ? PerExampleGradients.slot(for: b) : nil
        if let slot = perExample {
            guard sharedB, tB, !tA else {
                throw TensorError.invalidArgument(op: "matmul", message: "per-example gradients of '\(b.name ?? "a weight")' are kept only for x · Wᵀ with W shared by every row")
            }
            guard (batch * m) % slot.shape[0] == 0 else {
                throw TensorError.invalidArgument(op: "matmul", message: "\(batch * m) rows do not split into \(slot.shape[0]) examples of equal length")
            }
        }
        // Keep each operand only when the other one's gradient reads it.
        let savedA = b.requiresGrad ? a.detached() : nil
        let savedB = a.requiresGrad ? b.detached() : nil
        let aShape = a.shape, bShape = b.shape
        // Each gradient is added into the sum already waiting for its input when there is one (beta = 1).
        y.recordAccumulatingBackward("matmul", inputs: [a, b]) { g, sums in
            var ga: Tensor?
            if let bv = savedB {
                let da = sums[0] ?? Tensor(uninitializedShape: aShape)
                let betaA: Float = sums[0] == nil ? 0 : 1
                if !tA {  // dA = dC · op(B)ᵀ   [M, K]
                    Tensor.batchedGEMM(
                        count: batch, tA: false, tB: !tB, m: m, n: k, k: n,
                        a: g.storage.pointer, lda: n, strideA: m * n,
                        b: bv.storage.pointer, ldb: ldb, strideB: strideB,
                        c: da.storage.pointer, ldc: k, strideC: m * k, beta: betaA)
                } else {  // dA = op(B) · dCᵀ   [K, M]
                    Tensor.batchedGEMM(
                        count: batch, tA: tB, tB: true, m: k, n: m, k: n,
                        a: bv.storage.pointer, lda: ldb, strideA: strideB,
                        b: g.storage.pointer, ldb: n, strideB: m * n,
                        c: da.storage.pointer, ldc: m, strideC: m * k, beta: betaA)
                }
                ga = da
            }
            var gb: Tensor?
            if let slot = perExample, let av = savedA {
                PerExampleGradients.accumulate(into: slot, gradient: g.storage.pointer, input: av.storage.pointer,
                                               rows: batch * m, out: n, in: k)
            } else if let av = savedA {
                let db = sums[1] ?? Tensor(uninitializedShape: bShape)
                let betaB: Float = sums[1] == nil ? 0 : 1
                // A shared B sums its gradient over the batch (beta = 1 after the first product).
                let strideDB = sharedB ? 0 : k * n
                if !tB {  // dB = op(A)ᵀ · dC   [K, N]
                    if sharedB && !tA {
                        // All batches at once: [K, batch·M] · [batch·M, N].
                        GEMM.multiply(transposeA: true, transposeB: false, m: k, n: n, k: batch * m,
                                      a: av.storage.pointer, lda: k, b: g.storage.pointer, ldb: n,
                                      beta: betaB, c: db.storage.pointer, ldc: n)
                    } else {
                        Tensor.batchedGEMM(
                            count: batch, tA: !tA, tB: false, m: k, n: n, k: m,
                            a: av.storage.pointer, lda: lda, strideA: m * k,
                            b: g.storage.pointer, ldb: n, strideB: m * n,
                            c: db.storage.pointer, ldc: n, strideC: strideDB, beta: betaB)
                    }
                } else {  // dB = dCᵀ · op(A)   [N, K]
                    if sharedB && !tA {
                        GEMM.multiply(transposeA: true, transposeB: false, m: n, n: k, k: batch * m,
                                      a: g.storage.pointer, lda: n, b: av.storage.pointer, ldb: k,
                                      beta: betaB, c: db.storage.pointer, ldc: k)
                    } else {
                        Tensor.batchedGEMM(
                            count: batch, tA: true, tB: tA, m: n, n: k, k: m,
                            a: g.storage.pointer, lda: n, strideA: m * n,
                            b: av.storage.pointer, ldb: lda, strideB: m * k,
                            c: db.storage.pointer, ldc: k, strideC: strideDB, beta: betaB)
                    }
                }
                gb = db
            }
            return [ga, gb]
        }
        return y
    }

    /// `count` products at fixed strides, C = A·B + beta·C. A stride of 0 reuses one matrix; for C it
    /// accumulates (the first product scales C by beta, the rest add). When A is not transposed and B is
    /// shared, the batch is one taller product.
    static func batchedGEMM(
        count: Int, tA: Bool, tB: Bool, m: Int, n: Int, k: Int,
        a: UnsafePointer<Float>, lda: Int, strideA: Int,
        b: UnsafePointer<Float>, ldb: Int, strideB: Int,
        c: UnsafeMutablePointer<Float>, ldc: Int, strideC: Int, beta: Float = 0
    ) {
        if count == 0 { return }
        if strideB == 0 && !tA && strideC == m * n && strideA == m * k && ldc == n {
            GEMM.multiply(transposeA: false, transposeB: tB, m: count * m, n: n, k: k,
                          a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
            return
        }
        for i in 0..<count {
            GEMM.multiply(transposeA: tA, transposeB: tB, m: m, n: n, k: k,
                          a: a + i * strideA, lda: lda, b: b + i * strideB, ldb: ldb,
                          beta: strideC == 0 && i > 0 ? 1 : beta, c: c + i * strideC, ldc: ldc)
        }
    }
}
