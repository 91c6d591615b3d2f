/// Scaled dot-product attention, fused: scores, mask, softmax and the weighted sum in one op, with
/// grouped-query heads, an optional key/value prefix and causal masking that skips the masked blocks.
///
/// Shapes, sequence-major as the projections produce them (B batch, T queries, S keys, P prefix,
/// Hq query heads, Hkv key/value heads dividing Hq, D head dim):
///   query [B, T, Hq, D], key [B, S, Hkv, D], value [B, S, Hkv, Dv], prefix key/value [B, P, Hkv, D/Dv]
///   → [B, T, Hq, Dv]. Query head h reads key/value head h / (Hq/Hkv).
/// Masking: every query sees all P prefix positions. With `causal`, the T queries are the last T of the S
/// positions (T < S while generating with a cache), so query i sees key j when j ≤ i + S − T. With
/// `firstKeys` (B·T values, causal: several records packed into one sequence, or prompts left-padded to one
/// length), query i of batch row b sees no key before `firstKeys[b·T + i]`, the start of its own record (an index
/// among all S keys, cached ones included).
///
/// Per head, with L = P + S, A = softmax(scale · Q Kᵀ + mask) [T, L] and O = A V:
///   dV += Aᵀ dO,  dA = dO Vᵀ,  dZ = A ⊙ (dA − rowsum(dA ⊙ A)),
///   dQ = scale · dZ K,  dK += scale · dZᵀ Q   (+= over the query heads sharing a key/value head)
///
/// Work is split by (batch, key/value head) across the cores, each task running single-threaded GEMMs
/// over blocks of 64 queries; a block's products stop at the last key any of its queries can see and, with
/// `firstKeys`, start at the first (so packed short records cost attention in proportion to their length, not
/// the window's). Only each row's log-sum-exp is saved; the backward recomputes a block's probabilities from it.
extension Tensor {
    public static func scaledDotProductAttention(
        query: Tensor, key: Tensor, value: Tensor,
        prefix: (key: Tensor, value: Tensor)? = nil,
        causal: Bool = true, scale: Float? = nil, firstKeys: [Int32]? = nil
    ) throws -> Tensor {
        if let firstKeys {
            guard query.rank == 4, key.rank == 4, causal, key.shape[1] >= query.shape[1],
                  firstKeys.count == query.shape[0] * query.shape[1] else {
                throw TensorError.invalidArgument(op: "attention", message: "firstKeys needs causal attention over at least as many keys as queries and one value per query (\(query.shape[0]) × \(query.shape[1])), got \(firstKeys.count)")
            }
            let t = query.shape[1], earlier = key.shape[1] - t
            for (n, first) in firstKeys.enumerated() where first < 0 || Int(first) > n % t + earlier {
                throw TensorError.invalidArgument(op: "attention", message: "firstKeys[\(n)] = \(first) is not a key query \(n % t) can see")
            }
        }
        if let prefix {
            guard prefix.key.rank == 4, prefix.value.rank == 4, prefix.key.shape[1] == prefix.value.shape[1] else {
                throw TensorError.shapeMismatch(op: "attention (prefix key vs prefix value)", lhs: prefix.key.shape,
                                                rhs: prefix.value.shape)
            }
            guard key.rank == 4, value.rank == 4,
                  prefix.key.shape[0] == key.shape[0], Array(prefix.key.shape[2...]) == Array(key.shape[2...]) else {
                throw TensorError.shapeMismatch(op: "attention (prefix key vs key)", lhs: prefix.key.shape,
                                                rhs: key.shape)
            }
            guard prefix.value.shape[0] == value.shape[0], Array(prefix.value.shape[2...]) == Array(value.shape[2...]) else {
                throw TensorError.shapeMismatch(op: "attention (prefix value vs value)", lhs: prefix.value.shape,
                                                rhs: value.shape)
            }
        }
        return try attention(query: query, key: key, value: value, prefix: prefix, causal: causal,
                             scale: scale ?? 1 / Float(query.shape.last ?? 1).squareRoot(), firstKeys: firstKeys)
    }

    static let attentionBlock = 64

    /// The fused kernel. The prefix's keys and values are read where they are, never copied beside the
    /// others: every product over the keys is two, one over the prefix and one over the rest.
    static func attention(query q: Tensor, key k: Tensor, value v: Tensor, prefix: (key: Tensor, value: Tensor)?,
                          causal: Bool, scale: Float, firstKeys: [Int32]? = nil) throws -> Tensor {
        guard q.rank == 4, k.rank == 4, v.rank == 4 else {
            throw TensorError.shapeMismatch(op: "attention (query vs key, need [B, T, H, D])", lhs: q.shape,
                                            rhs: k.shape)
        }
        let (b, t, hq, d) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3])
        let (s, hkv, dv) = (k.shape[1], k.shape[2], v.shape[3])
        guard k.shape[0] == b, k.shape[3] == d, hkv > 0, hq % hkv == 0 else {
            throw TensorError.shapeMismatch(op: "attention (query vs key)", lhs: q.shape, rhs: k.shape)
        }
        guard v.shape[0] == b, v.shape[1] == s, v.shape[2] == hkv else {
            throw TensorError.shapeMismatch(op: "attention (key vs value)", lhs: k.shape, rhs: v.shape)
        }
        guard !causal || s >= t else {
            throw TensorError.invalidArgument(op: "attention", message: "causal attention needs at least as many keys (\(s)) as queries (\(t))")
        }
        let pl = prefix?.key.shape[1] ?? 0
        let shape = AttentionShape(b: b, t: t, hq: hq, hkv: hkv, d: d, dv: dv, l: pl + s, prefix: pl, causal: causal,
                                   scale: scale,
                                   firstKeys: firstKeys)
        // Only each row's log-sum-exp is kept for the backward, which recomputes the probabilities block by
        // block: [B, Hq, T] floats instead of [B, Hq, T, L].
        let logSumExp = Tensor(uninitializedShape: [b, hq, t])
        let out = Tensor(uninitializedShape: [b, t, hq, dv])
        withExtendedLifetime((logSumExp, prefix?.key, prefix?.value)) {
            shape.forward(q: q.storage.pointer, k: k.storage.pointer, v: v.storage.pointer,
                          pk: prefix?.key.storage.pointer, pv: prefix?.value.storage.pointer,
                          lse: logSumExp.storage.pointer, o: out.storage.pointer)
        }
        let inputs = [q, k, v] + (prefix.map { [$0.key, $0.value] } ?? [])
        guard needsGradient(inputs) else { return out }
        let needs = inputs.map(\.requiresGrad)
        let savedQ = q.detached(), savedK = k.detached()
        let savedV = (needs[0] || needs[1] || needs.count > 3 && needs[3]) ? v.detached() : nil
        let savedPrefix = prefix.map { ($0.key.detached(), $0.value.detached()) }
        let shapes = inputs.map(\.shape)
        out.recordBackward("attention", inputs: inputs) { g in
            // dQ is written whole; the others are sums over the query heads and blocks.
            let grads: [Tensor?] = shapes.indices.map { i in
                needs[i] ? (i == 0 ? Tensor(uninitializedShape: shapes[i]) : Tensor.zeros(shapes[i])) : nil
            }
            func pointer(_ i: Int) -> UnsafeMutablePointer<Float>? { i < grads.count ? grads[i]?.storage.pointer : nil }
            shape.backward(g: g.storage.pointer, lse: logSumExp.storage.pointer,
                           q: savedQ.storage.pointer, k: savedK.storage.pointer, v: savedV?.storage.pointer,
                           pk: savedPrefix?.0.storage.pointer, pv: savedPrefix?.1.storage.pointer,
                           dq: pointer(0), dk: pointer(1), dv: pointer(2), dpk: pointer(3), dpv: pointer(4))
            return grads
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
    /// Per query (batch-major), the first of the real keys it may see: packed records see only their own.
    var firstKeys: [Int32]? = nil

    var group: Int { hq / hkv }
    /// Keys query i may read.
    @inline(__always) func visible(_ i: Int) -> Int { causal ? prefix + min(l - prefix, i + (l - prefix) - t + 1) : l }

    /// Where query i of batch row `bi` starts seeing real keys (past the prefix): `prefix` unless its record
    /// starts later in a packed sequence.
    @inline(__always) func firstVisible(_ bi: Int,
                                        _ i: Int) -> Int { prefix + (firstKeys.map { Int($0[bi * t + i]) } ?? 0) }

    /// Calls `body(batch, kvHead)` for every pair, split across the cores.
    func forEachTask(_ body: (Int, Int) -> Void) {
        Parallel.forChunks(count: b * hkv, minimumChunk: 1) { range in
            for task in range { body(task / hkv, task % hkv) }
        }
    }

    /// The first key column a block of queries `i0..<i0 + rows` of batch row `bi` can see past the prefix: the
    /// prefix's end, or with packed records the earliest start among the block's records. The block's products
    /// skip the columns between the prefix and it.
    @inline(__always)
    func firstColumn(_ bi: Int, _ i0: Int, rows: Int) -> Int {
        guard firstKeys != nil else { return prefix }
        var first = Int.max
        for r in 0..<rows { first = min(first, firstVisible(bi, i0 + r)) }
        return first
    }

    /// C[rows, 0..<P] and C[rows, lo..<width] = alpha · A · K[...]ᵀ, key rows 0..<P from the prefix `pk`, the
    /// rest from `k` (rows `hkv · dim` apart in both); columns P..<lo are left as they are.
    @inline(__always)
    func timesKeys(_ a: UnsafePointer<Float>, lda: Int, rows: Int, width: Int, from lo: Int, dim: Int, alpha: Float,
                   pk: UnsafePointer<Float>?, k: UnsafePointer<Float>, into c: UnsafeMutablePointer<Float>) {
        let p = min(prefix, width)
        if p > 0, let pk { GEMM.sgemm(false, true, rows, p, dim, alpha, a, lda, pk, hkv * dim, 0, c, width) }
        if width > lo { GEMM.sgemm(false, true, rows, width - lo, dim, alpha, a, lda, k + (lo - prefix) * hkv * dim, hkv * dim, 0, c + lo, width) }
    }

    /// C[rows, dim] = alpha · A[rows, 0..<width] · K[0..<width] over the columns of `timesKeys` (A must be 0
    /// between P and lo).
    @inline(__always)
    func weightedKeys(_ a: UnsafePointer<Float>, rows: Int, width: Int, from lo: Int, dim: Int, alpha: Float,
                      pk: UnsafePointer<Float>?, k: UnsafePointer<Float>, into c: UnsafeMutablePointer<Float>, ldc: Int) {
        let p = min(prefix, width)
        var beta: Float = 0
        if p > 0, let pk {
            GEMM.sgemm(false, false, rows, dim, p, alpha, a, width, pk, hkv * dim, 0, c, ldc)
            beta = 1
        }
        if width > lo {
            GEMM.sgemm(false, false, rows, dim, width - lo, alpha, a + lo, width, k + (lo - prefix) * hkv * dim,
                       hkv * dim, beta, c, ldc)
        }
    }

    /// dK[...] += alpha · A[rows, ...]ᵀ · B[rows, dim] over the columns of `timesKeys`, into the prefix's rows
    /// `dpk` and the rest's `dk` (either may be nil: not wanted).
    @inline(__always)
    func addToKeys(_ a: UnsafePointer<Float>, rows: Int, width: Int, from lo: Int, dim: Int, alpha: Float,
                   _ bm: UnsafePointer<Float>, ldb: Int,
                   dpk: UnsafeMutablePointer<Float>?, dk: UnsafeMutablePointer<Float>?) {
        let p = min(prefix, width)
        if p > 0, let dpk { GEMM.sgemm(true, false, p, dim, rows, alpha, a, width, bm, ldb, 1, dpk, hkv * dim) }
        if width > lo, let dk {
            GEMM.sgemm(true, false, width - lo, dim, rows, alpha, a + lo, width, bm, ldb, 1,
                       dk + (lo - prefix) * hkv * dim, hkv * dim)
        }
    }

    /// A[block] = softmax(scale · Q[block] · K[0..<width]ᵀ + mask) into `ab` (rows of `width`, zero from P
    /// up to each row's first visible key and past its last; columns P..<lo untouched), with each row's
    /// log-sum-exp of the scaled scores into `lse`.
    @inline(__always)
    func probabilities(_ qBlock: UnsafePointer<Float>, pk: UnsafePointer<Float>?, k: UnsafePointer<Float>, rows: Int,
                       first i0: Int,
                       width: Int, from lo: Int, into ab: UnsafeMutablePointer<Float>, lse: UnsafeMutablePointer<Float>?, batch bi: Int) {
        timesKeys(qBlock, lda: hq * d, rows: rows, width: width, from: lo, dim: d, alpha: scale, pk: pk, k: k, into: ab)
        for r in 0..<rows {
            let row = ab + r * width, n = visible(i0 + r), f = firstVisible(bi, i0 + r)
            // The visible keys: 0..<n, or the prefix and f..<n when the row's record starts later (keys of
            // earlier records in the window are left out, e^−∞ = 0).
            let m = f == prefix ? Tensor.rowMax(row, n) : max(Tensor.rowMax(row, prefix), Tensor.rowMax(row + f, n - f))
            let s = f == prefix ? Tensor.expShiftedSum(row, row, n, m)
                : Tensor.expShiftedSum(row, row, prefix, m) + Tensor.expShiftedSum(row + f, row + f, n - f, m)
            let inv = 1 / s
            for j in 0..<prefix { row[j] *= inv }
            for j in f..<n { row[j] *= inv }
            (row + lo).update(repeating: 0, count: f - lo)
            (row + n).update(repeating: 0, count: width - n)
            lse?[r] = m + Math.log(s)
        }
    }

    /// x[0..<count] = e^(x − shift), eight lanes at a time.
    @inline(__always)
    static func exponentiate(_ x: UnsafeMutablePointer<Float>, count n: Int, shift: Float) {
        var j = 0
        while j + 8 <= n {
            let v = UnsafeRawPointer(x + j).loadUnaligned(as: SIMD8<Float>.self)
            UnsafeMutableRawPointer(x + j).storeBytes(of: Math.exp8(v - shift), as: SIMD8<Float>.self)
            j += 8
        }
        while j < n { x[j] = Math.exp(x[j] - shift); j += 1 }
    }

    /// Where batch `bi`'s key/value head `kvh` starts in the keys (`k`, `v`) and in the prefix (`pk`, `pv`).
    @inline(__always)
    func offsets(_ bi: Int, _ kvh: Int) -> (k: Int, v: Int, pk: Int, pv: Int) {
        let s = l - prefix
        return ((bi * s * hkv + kvh) * d, (bi * s * hkv + kvh) * dv, (bi * prefix * hkv + kvh) * d,
                (bi * prefix * hkv + kvh) * dv)
    }

    func forward(q: UnsafeMutablePointer<Float>, k: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>,
                 pk: UnsafeMutablePointer<Float>?, pv: UnsafeMutablePointer<Float>?,
                 lse: UnsafeMutablePointer<Float>, o: UnsafeMutablePointer<Float>) {
        let block = Tensor.attentionBlock
        forEachTask { bi, kvh in
            let scratch = UnsafeMutablePointer<Float>.allocate(capacity: block * l)
            defer { scratch.deallocate() }
            let at = offsets(bi, kvh)
            let kBase = k + at.k, vBase = v + at.v, pkBase = pk.map { $0 + at.pk }, pvBase = pv.map { $0 + at.pv }
            for h in (kvh * group)..<((kvh + 1) * group) {
                let qBase = q + (bi * t * hq + h) * d, oBase = o + (bi * t * hq + h) * dv
                let lseBase = lse + (bi * hq + h) * t
                for i0 in stride(from: 0, to: t, by: block) {
                    let rows = min(block, t - i0), width = visible(i0 + rows - 1), lo = firstColumn(bi, i0, rows: rows)
                    probabilities(qBase + i0 * hq * d, pk: pkBase, k: kBase, rows: rows, first: i0, width: width,
                                  from: lo,
                                  into: scratch, lse: lseBase + i0, batch: bi)
                    // O[block] = A[block] · V[0..<width]
                    weightedKeys(scratch, rows: rows, width: width, from: lo, dim: dv, alpha: 1, pk: pvBase, k: vBase,
                                 into: oBase + i0 * hq * dv, ldc: hq * dv)
                }
            }
        }
    }

    func backward(g: UnsafeMutablePointer<Float>, lse: UnsafeMutablePointer<Float>,
                  q: UnsafeMutablePointer<Float>, k: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>?,
                  pk: UnsafeMutablePointer<Float>?, pv: UnsafeMutablePointer<Float>?,
                  dq: UnsafeMutablePointer<Float>?, dk: UnsafeMutablePointer<Float>?, dv dvOut: UnsafeMutablePointer<Float>?,
                  dpk: UnsafeMutablePointer<Float>?, dpv: UnsafeMutablePointer<Float>?) {
        let block = Tensor.attentionBlock
        forEachTask { bi, kvh in
            let scratch = UnsafeMutablePointer<Float>.allocate(capacity: block * l)
            let ab = UnsafeMutablePointer<Float>.allocate(capacity: block * l)
            defer { scratch.deallocate(); ab.deallocate() }
            let at = offsets(bi, kvh)
            let kBase = k + at.k, pkBase = pk.map { $0 + at.pk }, pvBase = pv.map { $0 + at.pv }
            for h in (kvh * group)..<((kvh + 1) * group) {
                let qBase = q + (bi * t * hq + h) * d, gBase = g + (bi * t * hq + h) * dv
                for i0 in stride(from: 0, to: t, by: block) {
                    let rows = min(block, t - i0), width = visible(i0 + rows - 1), lo = firstColumn(bi, i0, rows: rows)
                    let gb = gBase + i0 * hq * dv, qb = qBase + i0 * hq * d
                    // The block's probabilities again: scores, minus the saved log-sum-exp, exponentiated over each
                    // row's visible keys (the prefix and f..<n), zero elsewhere from lo on.
                    timesKeys(qb, lda: hq * d, rows: rows, width: width, from: lo, dim: d, alpha: scale, pk: pkBase,
                              k: kBase, into: ab)
                    let lseRows = lse + (bi * hq + h) * t + i0
                    for r in 0..<rows {
                        let row = ab + r * width, n = visible(i0 + r), f = firstVisible(bi, i0 + r), shift = lseRows[r]
                        if f == prefix {
                            Self.exponentiate(row, count: n, shift: shift)
                        } else {
                            Self.exponentiate(row, count: prefix, shift: shift)
                            Self.exponentiate(row + f, count: n - f, shift: shift)
                            (row + lo).update(repeating: 0, count: f - lo)
                        }
                        (row + n).update(repeating: 0, count: width - n)
                    }
                    // dV[...] += A[block]ᵀ dO[block]
                    addToKeys(ab, rows: rows, width: width, from: lo, dim: dv, alpha: 1, gb, ldb: hq * dv,
                              dpk: dpv.map { $0 + at.pv }, dk: dvOut.map { $0 + at.v })
                    guard dq != nil || dk != nil || dpk != nil, let v else { continue }
                    // dA = dO[block] · V[...]ᵀ, then dZ = A ⊙ (dA − rowsum(dA ⊙ A)) over the prefix and lo..<width
                    timesKeys(gb, lda: hq * dv, rows: rows, width: width, from: lo, dim: dv, alpha: 1, pk: pvBase,
                              k: v + at.v, into: scratch)
                    for r in 0..<rows {
                        let z = scratch + r * width, ar = ab + r * width
                        if lo == prefix {  // no keys skipped between the prefix and lo: one pass over the row
                            let dot = Tensor.dot(z, ar, width)
                            for j in 0..<width { z[j] = ar[j] * (z[j] - dot) }
                        } else {
                            let dot = Tensor.dot(z, ar, prefix) + Tensor.dot(z + lo, ar + lo, width - lo)
                            for j in 0..<prefix { z[j] = ar[j] * (z[j] - dot) }
                            for j in lo..<width { z[j] = ar[j] * (z[j] - dot) }
                        }
                    }
                    if let dq {  // dQ[block] = scale · dZ · K[...]
                        weightedKeys(scratch, rows: rows, width: width, from: lo, dim: d, alpha: scale, pk: pkBase,
                                     k: kBase,
                                     into: dq + (bi * t * hq + h) * d + i0 * hq * d, ldc: hq * d)
                    }
                    // dK[...] += scale · dZᵀ · Q[block]
                    addToKeys(scratch, rows: rows, width: width, from: lo, dim: d, alpha: scale, qb, ldb: hq * d,
                              dpk: dpk.map { $0 + at.pk }, dk: dk.map { $0 + at.k })
                }
            }
        }
    }
}
