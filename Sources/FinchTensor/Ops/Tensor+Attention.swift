/// Scaled dot-product attention, fused: scores, mask, softmax and the weighted sum in one op, with
/// grouped-query heads, an optional key/value prefix and causal masking that skips the masked blocks.
///
/// Shapes, sequence-major as the projections produce them (B batch, T queries, S keys, P prefix,
/// Hq query heads, Hkv key/value heads dividing Hq, D head dim):
///   query [B, T, Hq, D], key [B, S, Hkv, D], value [B, S, Hkv, Dv], prefix key/value [B, P, Hkv, D/Dv]
///   → [B, T, Hq, Dv]. Query head h reads key/value head h / (Hq/Hkv).
/// Masking: every query sees all P prefix positions. With `causal`, the T queries are the last T of the S
/// positions (T < S while generating with a cache), so query i sees key j when j ≤ i + S − T.
///
/// Per head, with L = P + S, A = softmax(scale · Q Kᵀ + mask) [T, L] and O = A V:
///   dV += Aᵀ dO,  dA = dO Vᵀ,  dZ = A ⊙ (dA − rowsum(dA ⊙ A)),
///   dQ = scale · dZ K,  dK += scale · dZᵀ Q   (+= over the query heads sharing a key/value head)
///
/// Work is split by (batch, key/value head) across the cores, each task running single-threaded GEMMs
/// over blocks of 64 queries; a block's products stop at the last key any of its queries can see. Only
/// each row's log-sum-exp is saved; the backward recomputes a block's probabilities from it.
extension Tensor {
    public static func scaledDotProductAttention(
        query: Tensor, key: Tensor, value: Tensor,
        prefix: (key: Tensor, value: Tensor)? = nil,
        causal: Bool = true, scale: Float? = nil
    ) throws -> Tensor {
        var k = key, v = value, prefixLength = 0
        if let prefix {
            guard prefix.key.rank == 4, prefix.value.rank == 4, prefix.key.shape[1] == prefix.value.shape[1] else {
                throw TensorError.shapeMismatch(op: "attention (prefix key vs prefix value)", lhs: prefix.key.shape, rhs: prefix.value.shape)
            }
            k = try concatenate([prefix.key, key], axis: 1)
            v = try concatenate([prefix.value, value], axis: 1)
            prefixLength = prefix.key.shape[1]
        }
        return try attention(query: query, key: k, value: v, prefixLength: prefixLength, causal: causal,
                             scale: scale ?? 1 / Float(query.shape.last ?? 1).squareRoot())
    }

    static let attentionBlock = 64

    /// The fused kernel; the first `prefixLength` keys are visible to every query.
    static func attention(query q: Tensor, key k: Tensor, value v: Tensor,
                          prefixLength pl: Int, causal: Bool, scale: Float) throws -> Tensor {
        guard q.rank == 4, k.rank == 4, v.rank == 4 else {
            throw TensorError.shapeMismatch(op: "attention (query vs key, need [B, T, H, D])", lhs: q.shape, rhs: k.shape)
        }
        let (b, t, hq, d) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3])
        let (l, hkv, dv) = (k.shape[1], k.shape[2], v.shape[3])
        guard k.shape[0] == b, k.shape[3] == d, hkv > 0, hq % hkv == 0 else {
            throw TensorError.shapeMismatch(op: "attention (query vs key)", lhs: q.shape, rhs: k.shape)
        }
        guard v.shape[0] == b, v.shape[1] == l, v.shape[2] == hkv else {
            throw TensorError.shapeMismatch(op: "attention (key vs value)", lhs: k.shape, rhs: v.shape)
        }
        let s = l - pl
        guard !causal || s >= t else {
            throw TensorError.invalidArgument(op: "attention", message: "causal attention needs at least as many keys (\(s)) as queries (\(t))")
        }
        let shape = AttentionShape(b: b, t: t, hq: hq, hkv: hkv, d: d, dv: dv, l: l, prefix: pl, causal: causal, scale: scale)
        // Only each row's log-sum-exp is kept for the backward, which recomputes the probabilities block by
        // block: [B, Hq, T] floats instead of [B, Hq, T, L].
        let logSumExp = Tensor(uninitializedShape: [b, hq, t])
        let out = Tensor(uninitializedShape: [b, t, hq, dv])
        withExtendedLifetime(logSumExp) {
            shape.forward(q: q.storage.pointer, k: k.storage.pointer, v: v.storage.pointer,
                          lse: logSumExp.storage.pointer, o: out.storage.pointer)
        }
        guard needsGradient(q, k, v) else { return out }
        let qNeeds = q.requiresGrad, kNeeds = k.requiresGrad, vNeeds = v.requiresGrad
        let savedQ = q.detached(), savedK = k.detached()
        let savedV = (qNeeds || kNeeds) ? v.detached() : nil
        let qShape = q.shape, kShape = k.shape, vShape = v.shape
        out.recordBackward("attention", inputs: [q, k, v]) { g in
            let dq = qNeeds ? Tensor(uninitializedShape: qShape) : nil
            let dk = kNeeds ? Tensor.zeros(kShape) : nil
            let dvT = vNeeds ? Tensor.zeros(vShape) : nil
            shape.backward(g: g.storage.pointer, lse: logSumExp.storage.pointer,
                           q: savedQ.storage.pointer, k: savedK.storage.pointer, v: savedV?.storage.pointer,
                           dq: dq?.storage.pointer, dk: dk?.storage.pointer, dv: dvT?.storage.pointer)
            return [dq, dk, dvT]
        }
        return out
    }
}

/// The sizes of one attention call and its two kernels. Row strides: queries and outputs skip the other
/// heads of a position (Hq·D, Hq·Dv), keys and values skip the other key/value heads (Hkv·D, Hkv·Dv);
/// a block's probabilities live in per-task scratch with rows of the block's width.
struct AttentionShape {
    let b, t, hq, hkv, d, dv, l, prefix: Int
    let causal: Bool
    let scale: Float

    var group: Int { hq / hkv }
    /// Keys query i may read.
    @inline(__always) func visible(_ i: Int) -> Int { causal ? prefix + min(l - prefix, i + (l - prefix) - t + 1) : l }

    /// Calls `body(batch, kvHead)` for every pair, split across the cores.
    func forEachTask(_ body: (Int, Int) -> Void) {
        Parallel.forChunks(count: b * hkv, minimumChunk: 1) { range in
            for task in range { body(task / hkv, task % hkv) }
        }
    }

    /// A[block] = softmax(scale · Q[block] · K[0..<width]ᵀ + mask) into `ab` (rows of `width`), with each
    /// row's log-sum-exp of the scaled scores into `lse`.
    @inline(__always)
    func probabilities(_ qBlock: UnsafePointer<Float>, _ kBase: UnsafePointer<Float>, rows: Int, first i0: Int, width: Int,
                       into ab: UnsafeMutablePointer<Float>, lse: UnsafeMutablePointer<Float>?) {
        GEMM.sgemm(false, true, rows, width, d, scale, qBlock, hq * d, kBase, hkv * d, 0, ab, width)
        for r in 0..<rows {
            let row = ab + r * width, n = visible(i0 + r)
            let m = Tensor.rowMax(row, n)
            let s = Tensor.expShiftedSum(row, row, n, m)
            let inv = 1 / s
            for j in 0..<n { row[j] *= inv }
            (row + n).update(repeating: 0, count: width - n)
            lse?[r] = m + Math.log(s)
        }
    }

    func forward(q: UnsafeMutablePointer<Float>, k: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>,
                 lse: UnsafeMutablePointer<Float>, o: UnsafeMutablePointer<Float>) {
        let block = Tensor.attentionBlock
        forEachTask { bi, kvh in
            let scratch = UnsafeMutablePointer<Float>.allocate(capacity: block * l)
            defer { scratch.deallocate() }
            let kBase = k + (bi * l * hkv + kvh) * d, vBase = v + (bi * l * hkv + kvh) * dv
            for h in (kvh * group)..<((kvh + 1) * group) {
                let qBase = q + (bi * t * hq + h) * d, oBase = o + (bi * t * hq + h) * dv
                let lseBase = lse + (bi * hq + h) * t
                for i0 in stride(from: 0, to: t, by: block) {
                    let rows = min(block, t - i0), width = visible(i0 + rows - 1)
                    probabilities(qBase + i0 * hq * d, kBase, rows: rows, first: i0, width: width, into: scratch, lse: lseBase + i0)
                    // O[block] = A[block] · V[0..<width]
                    GEMM.sgemm(false, false, rows, dv, width, 1, scratch, width, vBase, hkv * dv, 0, oBase + i0 * hq * dv, hq * dv)
                }
            }
        }
    }

    func backward(g: UnsafeMutablePointer<Float>, lse: UnsafeMutablePointer<Float>,
                  q: UnsafeMutablePointer<Float>, k: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>?,
                  dq: UnsafeMutablePointer<Float>?, dk: UnsafeMutablePointer<Float>?, dv dvOut: UnsafeMutablePointer<Float>?) {
        let block = Tensor.attentionBlock
        forEachTask { bi, kvh in
            let scratch = UnsafeMutablePointer<Float>.allocate(capacity: block * l)
            let ab = UnsafeMutablePointer<Float>.allocate(capacity: block * l)
            defer { scratch.deallocate(); ab.deallocate() }
            let kOffset = (bi * l * hkv + kvh) * d, vOffset = (bi * l * hkv + kvh) * dv
            for h in (kvh * group)..<((kvh + 1) * group) {
                let qOffset = (bi * t * hq + h) * d, gBase = g + (bi * t * hq + h) * dv
                for i0 in stride(from: 0, to: t, by: block) {
                    let rows = min(block, t - i0), width = visible(i0 + rows - 1)
                    let gb = gBase + i0 * hq * dv
                    // The block's probabilities again: scores, minus the saved log-sum-exp, exponentiated.
                    GEMM.sgemm(false, true, rows, width, d, scale, q + qOffset + i0 * hq * d, hq * d, k + kOffset, hkv * d, 0, ab, width)
                    let lseRows = lse + (bi * hq + h) * t + i0
                    for r in 0..<rows {
                        let row = ab + r * width, n = visible(i0 + r), shift = lseRows[r]
                        var j = 0
                        while j + 8 <= n {
                            let x = UnsafeRawPointer(row + j).loadUnaligned(as: SIMD8<Float>.self)
                            UnsafeMutableRawPointer(row + j).storeBytes(of: Math.exp8(x - shift), as: SIMD8<Float>.self)
                            j += 8
                        }
                        while j < n { row[j] = Math.exp(row[j] - shift); j += 1 }
                        (row + n).update(repeating: 0, count: width - n)
                    }
                    if let dvOut {  // dV[0..<width] += A[block]ᵀ dO[block]
                        GEMM.sgemm(true, false, width, dv, rows, 1, ab, width, gb, hq * dv, 1, dvOut + vOffset, hkv * dv)
                    }
                    guard dq != nil || dk != nil, let v else { continue }
                    // dA = dO[block] · V[0..<width]ᵀ, then dZ = A ⊙ (dA − rowsum(dA ⊙ A))
                    GEMM.sgemm(false, true, rows, width, dv, 1, gb, hq * dv, v + vOffset, hkv * dv, 0, scratch, width)
                    for r in 0..<rows {
                        let z = scratch + r * width, ar = ab + r * width
                        var dot: Float = 0
                        for j in 0..<width { dot += z[j] * ar[j] }
                        for j in 0..<width { z[j] = ar[j] * (z[j] - dot) }
                    }
                    if let dq {  // dQ[block] = scale · dZ · K[0..<width]
                        GEMM.sgemm(false, false, rows, d, width, scale, scratch, width, k + kOffset, hkv * d, 0,
                                   dq + qOffset + i0 * hq * d, hq * d)
                    }
                    if let dk {  // dK[0..<width] += scale · dZᵀ · Q[block]
                        GEMM.sgemm(true, false, width, d, rows, scale, scratch, width, q + qOffset + i0 * hq * d, hq * d, 1,
                                   dk + kOffset, hkv * d)
                    }
                }
            }
        }
    }
}
