import Testing
@testable import FinchTensor

@Suite("masked loss and attention visibility")
struct MaskingTests {
    @Test func crossEntropyIgnoresMaskedPositionsInValueAndGradient() throws {
        let logits = Inputs.normal([5, 7], std: 2).requiringGrad()
        let targets: [Int32] = [3, -100, 6, -100, 0]
        let loss = try logits.crossEntropy(targets: targets)
        try loss.backward()

        // The same loss from the kept rows alone, composed from log-softmax.
        let kept = [0, 2, 4]
        let ls = logits.logSoftmax().scalars
        let expected = kept.reduce(0.0) { $0 - Double(ls[$1 * 7 + Int(targets[$1])]) } / Double(kept.count)
        #expect(abs(Double(try loss.item()) - expected) < 1e-5)

        let g = logits.grad!.scalars
        for r in [1, 3] { #expect(g[(r * 7)..<(r * 7 + 7)].allSatisfy { $0 == 0 }, "masked row \(r) has a gradient") }
        for r in kept { #expect(g[(r * 7)..<(r * 7 + 7)].contains { $0 != 0 }) }

        // Changing a masked row's logits changes nothing.
        let changed = logits.copy()
        for j in 0..<7 { changed.storage.pointer[7 + j] = 100 }
        #expect(try changed.crossEntropy(targets: targets).item() == loss.item())
    }

    @Test func everyQuerySeesEveryPrefixPositionAndNoFutureToken() throws {
        let (b, h, t, p, d) = (1, 2, 5, 3, 4)
        let q = Inputs.normal([b, t, h, d], seed: 1), k = Inputs.normal([b, t, h, d], seed: 2)
        let v = Inputs.normal([b, t, h, d], seed: 3)
        let pk = Inputs.normal([b, p, h, d], seed: 4), pv = Inputs.normal([b, p, h, d], seed: 5)
        func run(_ v: Tensor, _ pv: Tensor) throws -> [Float] {
            try Tensor.scaledDotProductAttention(query: q, key: k, value: v, prefix: (pk, pv)).scalars
        }
        let base = try run(v, pv)
        func changedQueries(_ out: [Float]) -> Set<Int> {
            var rows = Set<Int>()
            for i in 0..<out.count where out[i] != base[i] { rows.insert((i / (d * h)) % t) }
            return rows
        }
        // A prefix value at any position reaches every query.
        for pos in 0..<p {
            let pv2 = pv.copy()
            for j in 0..<(d * h) { pv2.storage.pointer[pos * d * h + j] += 1 }
            #expect(changedQueries(try run(v, pv2)) == Set(0..<t), "prefix position \(pos)")
        }
        // A real value at position j reaches queries j and later only.
        for pos in 0..<t {
            let v2 = v.copy()
            for j in 0..<(d * h) { v2.storage.pointer[pos * d * h + j] += 1 }
            #expect(changedQueries(try run(v2, pv)) == Set(pos..<t), "token position \(pos)")
        }
    }

    @Test func cachedQueriesAttendLikeTheFullSequence() throws {
        // The last 2 of 6 queries against all 6 keys equal the last 2 rows of the full causal pass.
        let q = Inputs.normal([1, 6, 2, 4], seed: 1), k = Inputs.normal([1, 6, 2, 4], seed: 2)
        let v = Inputs.normal([1, 6, 2, 4], seed: 3)
        let full = try Tensor.scaledDotProductAttention(query: q, key: k, value: v)
        let tail = try Tensor.scaledDotProductAttention(query: q.slice(axis: 1, 4..<6), key: k, value: v)
        expectClose(tail.scalars, try full.slice(axis: 1, 4..<6).scalars, tolerance: 1e-6)
    }

    @Test func dropoutIsSeededAndScaled() throws {
        let x = Tensor.ones([10_000])
        var g1 = RandomGenerator(seed: 5), g2 = RandomGenerator(seed: 5)
        let a = try x.dropout(probability: 0.25, generator: &g1).scalars
        let b = try x.dropout(probability: 0.25, generator: &g2).scalars
        #expect(a == b)
        #expect(Set(a) == [0, Float(1) / 0.75])
        let dropped = Float(a.filter { $0 == 0 }.count) / Float(a.count)
        #expect(abs(dropped - 0.25) < 0.02)
    }
}

/// Packed records: with `firstKeys`, each query sees only its own record (and the prefix), so every record's
/// outputs and gradients are those of the record run alone.
@Suite("attention over packed records")
struct PackedAttentionTests {
    static let (h, d) = (2, 4)
    /// Record starts per batch row in a window of `t`.
    struct Packing: CustomTestStringConvertible {
        let t: Int
        let starts: [[Int]]
        var firstKeys: [Int32] { starts.flatMap { s in (0..<t).map { i in Int32(s.last { $0 <= i }!) } } }
        var testDescription: String { "\(t) positions, records at \(starts)" }
    }
    /// Row 0 holds three records, row 1 two (the second 4 long, then a third of 0).
    static let short = Packing(t: 10, starts: [[0, 4, 7], [0, 6]])
    /// Longer than one 64-query block: later blocks start past their earliest record's first key, so their
    /// products skip the keys before it (row 0's blocks from keys 50, 70 and 190; row 1's from 0, 100, 100).
    static let long = Packing(t: 200, starts: [[0, 50, 70, 130, 190], [0, 100]])
    static var firstKeys: [Int32] { short.firstKeys }
    static var t: Int { short.t }

    /// Rows `range` of batch row `bi` of x [B, T, H, D], as [1, range.count, H, D].
    static func slice(_ x: Tensor, _ bi: Int, _ range: Range<Int>) throws -> Tensor {
        let row = h * d, s = x.scalars, t = x.shape[1]
        return try Tensor(shape: [1, range.count, h, d],
                          scalars: Array(s[((bi * t + range.lowerBound) * row)..<((bi * t + range.upperBound) * row)]))
    }

    @Test(arguments: [(short, 0), (short, 3), (long, 0), (long, 3)])
    func eachRecordAttendsAsIfAlone(_ packing: Packing, _ p: Int) throws {
        let t = packing.t
        let q = Inputs.normal([2, t, Self.h, Self.d], seed: 1).requiringGrad(), k = Inputs.normal([2, t, Self.h, Self.d], seed: 2).requiringGrad()
        let v = Inputs.normal([2, t, Self.h, Self.d], seed: 3).requiringGrad()
        let pk = Inputs.normal([2, max(p, 1), Self.h, Self.d],
                               seed: 4), pv = Inputs.normal([2, max(p, 1), Self.h, Self.d], seed: 5)
        let prefix = p > 0 ? (key: pk, value: pv) : nil
        let seed = Inputs.normal([2, t, Self.h, Self.d], seed: 6)
        let packed = try Tensor.scaledDotProductAttention(query: q, key: k, value: v, prefix: prefix,
                                                          firstKeys: packing.firstKeys)
        try packed.backward(seed: seed)
        for (bi, s) in packing.starts.enumerated() {
            for (n, start) in s.enumerated() {
                let range = start..<(n + 1 < s.count ? s[n + 1] : t)
                let (q1, k1, v1) = (try Self.slice(q, bi, range).requiringGrad(), try Self.slice(k, bi, range).requiringGrad(), try Self.slice(v, bi, range).requiringGrad())
                let p1 = try prefix.map { (key: try Self.slice2($0.key, bi), value: try Self.slice2($0.value, bi)) }
                let alone = try Tensor.scaledDotProductAttention(query: q1, key: k1, value: v1, prefix: p1)
                try alone.backward(seed: try Self.slice(seed, bi, range))
                expectClose(alone.scalars, try Self.slice(packed, bi, range).scalars, tolerance: 1e-6)
                expectClose(q1.grad!.scalars, try Self.slice(q.grad!, bi, range).scalars, tolerance: 1e-5)
                expectClose(k1.grad!.scalars, try Self.slice(k.grad!, bi, range).scalars, tolerance: 1e-5)
                expectClose(v1.grad!.scalars, try Self.slice(v.grad!, bi, range).scalars, tolerance: 1e-5)
            }
        }
    }

    /// A prefix [B, P, H, D] for batch row `bi` alone.
    static func slice2(_ x: Tensor, _ bi: Int) throws -> Tensor {
        let per = x.count / x.shape[0]
        return try Tensor(shape: [1] + Array(x.shape.dropFirst()),
                          scalars: Array(x.scalars[(bi * per)..<((bi + 1) * per)]))
    }

    @Test func packedGradientsMatchFiniteDifferences() throws {
        let inputs = [Inputs.normal([2, Self.t, Self.h, Self.d], seed: 1),
                      Inputs.normal([2, Self.t, Self.h, Self.d], seed: 2),
                      Inputs.normal([2, Self.t, Self.h, Self.d], seed: 3), Inputs.normal([2, 2, Self.h, Self.d], seed: 4),
                      Inputs.normal([2, 2, Self.h, Self.d], seed: 5)]
        try GradientCheck.check(inputs) { x in
            try Tensor.scaledDotProductAttention(query: x[0], key: x[1], value: x[2], prefix: (x[3], x[4]),
                                                 firstKeys: Self.firstKeys)
        }
    }

    @Test func firstKeysMustBeVisibleKeys() throws {
        let x = Tensor.zeros([1, 3, 1, 4])
        #expect(throws: TensorError.self) { try Tensor.scaledDotProductAttention(query: x, key: x, value: x, firstKeys: [0, 2, 0]) }
        #expect(throws: TensorError.self) { try Tensor.scaledDotProductAttention(query: x, key: x, value: x, firstKeys: [0, 0]) }
        #expect(throws: TensorError.self) { try Tensor.scaledDotProductAttention(query: x, key: x, value: x, causal: false, firstKeys: [0, 0, 0]) }
    }
}
