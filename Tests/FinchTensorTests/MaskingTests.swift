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
