/// Scaled dot-product attention, fused: scores, mask, softmax and the weighted sum in one op, with
/// grouped-query heads and an optional key/value prefix.
///
/// Shapes (B batch, Hq query heads, Hkv key/value heads dividing Hq, T queries, S keys, P prefix, D head dim):
///   query [B, Hq, T, D], key [B, Hkv, S, D], value [B, Hkv, S, Dv], prefix key/value [B, Hkv, P, D/Dv]
///   → [B, Hq, T, Dv]. Query head h reads key/value head h / (Hq/Hkv).
/// Masking: every query sees all P prefix positions. With `causal`, the T queries are the last T of the S
/// positions (T < S while generating with a cache), so query i sees key j when j ≤ i + S − T.
///
/// Per head, with L = P + S, A = softmax(scale · Q Kᵀ + mask) [T, L] and O = A V:
///   dV += Aᵀ dO,  dA = dO Vᵀ,  dZ = A ⊙ (dA − rowsum(dA ⊙ A)),
///   dQ = scale · dZ K,  dK += scale · dZᵀ Q   (+= over the query heads sharing a key/value head)
extension Tensor {
    public static func scaledDotProductAttention(
        query: Tensor, key: Tensor, value: Tensor,
        prefix: (key: Tensor, value: Tensor)? = nil,
        causal: Bool = true, scale: Float? = nil
    ) throws -> Tensor {
        var k = key, v = value, prefixLength = 0
        if let prefix {
            guard prefix.key.rank == 4, prefix.value.rank == 4, prefix.key.shape[2] == prefix.value.shape[2] else {
                throw TensorError.shapeMismatch(op: "attention (prefix key vs prefix value)", lhs: prefix.key.shape, rhs: prefix.value.shape)
            }
            k = try concatenate([prefix.key, key], axis: 2)
            v = try concatenate([prefix.value, value], axis: 2)
            prefixLength = prefix.key.shape[2]
        }
        return try attention(query: query, key: k, value: v, prefixLength: prefixLength, causal: causal,
                             scale: scale ?? 1 / Float(query.shape.last ?? 1).squareRoot())
    }

    /// The fused kernel; the first `prefixLength` keys are visible to every query.
    static func attention(query q: Tensor, key k: Tensor, value v: Tensor,
                          prefixLength pl: Int, causal: Bool, scale: Float) throws -> Tensor {
        guard q.rank == 4, k.rank == 4, v.rank == 4 else {
            throw TensorError.shapeMismatch(op: "attention (query vs key, need [B, H, T, D])", lhs: q.shape, rhs: k.shape)
        }
        let (b, hq, t, d) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3])
        let (hkv, l, dv) = (k.shape[1], k.shape[2], v.shape[3])
        guard k.shape[0] == b, k.shape[3] == d, hkv > 0, hq % hkv == 0 else {
            throw TensorError.shapeMismatch(op: "attention (query vs key)", lhs: q.shape, rhs: k.shape)
        }
        guard v.shape[0] == b, v.shape[1] == hkv, v.shape[2] == l else {
            throw TensorError.shapeMismatch(op: "attention (key vs value)", lhs: k.shape, rhs: v.shape)
        }
        let s = l - pl
        guard !causal || s >= t else {
            throw TensorError.invalidArgument(op: "attention", message: "causal attention needs at least as many keys (\(s)) as queries (\(t))")
        }
        let group = hq / hkv
        // visible(i): how many of the L keys query i may read.
        let visible: (Int) -> Int = { i in causal ? pl + Swift.min(s, i + s - t + 1) : l }

        let probabilities = Tensor(uninitializedShape: [b, hq, t, l])
        let out = Tensor(uninitializedShape: [b, hq, t, dv])
        let qp = q.storage.pointer, kp = k.storage.pointer, vp = v.storage.pointer
        let ap = probabilities.storage.pointer, op = out.storage.pointer
        // Only pointers reach the loops below; keep the tensor alive until they finish.
        withExtendedLifetime(probabilities) {
        for bi in 0..<b {
            for h in 0..<hq {
                let kv = bi * hkv + h / group
                let a = ap + (bi * hq + h) * t * l
                GEMM.multiply(transposeA: false, transposeB: true, m: t, n: l, k: d, alpha: scale,
                              a: qp + (bi * hq + h) * t * d, lda: d, b: kp + kv * l * d, ldb: d, c: a, ldc: l)
                Parallel.forRows(t, rowLength: l) { i in
                    let row = a + i * l, n = visible(i)
                    Tensor.softmaxRow(row, row, n)
                    (row + n).update(repeating: 0, count: l - n)
                }
                GEMM.multiply(transposeA: false, transposeB: false, m: t, n: dv, k: l,
                              a: a, lda: l, b: vp + kv * l * dv, ldb: dv, c: op + (bi * hq + h) * t * dv, ldc: dv)
            }
        }
        }

        guard needsGradient(q, k, v) else { return out }
        let qNeeds = q.requiresGrad, kNeeds = k.requiresGrad, vNeeds = v.requiresGrad
        let savedQ = kNeeds ? q.detached() : nil
        let savedK = qNeeds ? k.detached() : nil
        let savedV = (qNeeds || kNeeds) ? v.detached() : nil
        let qShape = q.shape, kShape = k.shape, vShape = v.shape
        out.recordBackward("attention", inputs: [q, k, v]) { g in
            let dq = qNeeds ? Tensor(uninitializedShape: qShape) : nil
            let dk = kNeeds ? Tensor.zeros(kShape) : nil
            let dvT = vNeeds ? Tensor.zeros(vShape) : nil
            let dz = Tensor(uninitializedShape: [t, l])
            let gp = g.storage.pointer, zp = dz.storage.pointer, ap = probabilities.storage.pointer
            withExtendedLifetime(dz) {
            for bi in 0..<b {
                for h in 0..<hq {
                    let kv = bi * hkv + h / group
                    let a = ap + (bi * hq + h) * t * l
                    let go = gp + (bi * hq + h) * t * dv
                    if let dvT {  // dV += Aᵀ dO
                        GEMM.multiply(transposeA: true, transposeB: false, m: l, n: dv, k: t,
                                      a: a, lda: l, b: go, ldb: dv, beta: 1, c: dvT.storage.pointer + kv * l * dv, ldc: dv)
                    }
                    guard qNeeds || kNeeds, let vs = savedV else { continue }
                    // dA = dO Vᵀ, then dZ = A ⊙ (dA − rowsum(dA ⊙ A)).
                    GEMM.multiply(transposeA: false, transposeB: true, m: t, n: l, k: dv,
                                  a: go, lda: dv, b: vs.storage.pointer + kv * l * dv, ldb: dv, c: zp, ldc: l)
                    Parallel.forRows(t, rowLength: l) { i in
                        let z = zp + i * l, ar = a + i * l
                        var dot: Float = 0
                        for j in 0..<l { dot += z[j] * ar[j] }
                        for j in 0..<l { z[j] = ar[j] * (z[j] - dot) }
                    }
                    if let dq, let ks = savedK {  // dQ = scale · dZ K
                        GEMM.multiply(transposeA: false, transposeB: false, m: t, n: d, k: l, alpha: scale,
                                      a: zp, lda: l, b: ks.storage.pointer + kv * l * d, ldb: d,
                                      c: dq.storage.pointer + (bi * hq + h) * t * d, ldc: d)
                    }
                    if let dk, let qs = savedQ {  // dK += scale · dZᵀ Q
                        GEMM.multiply(transposeA: true, transposeB: false, m: l, n: d, k: t, alpha: scale,
                                      a: zp, lda: l, b: qs.storage.pointer + (bi * hq + h) * t * d, ldb: d,
                                      beta: 1, c: dk.storage.pointer + kv * l * d, ldc: d)
                    }
                }
            }
            }
            return [dq, dk, dvT]
        }
        return out
    }
}
