import Testing
@testable import FinchTensor

/// Every differentiable op, against central differences, on several shapes.
@Suite("finite-difference gradient checks")
struct GradientCheckTests {
    // MARK: Arithmetic with broadcasting

    static let broadcastPairs: [([Int], [Int])] = [
        ([3, 4], [3, 4]), ([2, 3, 4], [4]), ([3, 1], [1, 4]), ([2, 1, 3], [4, 1]), ([], [2, 3]),
    ]

    @Test(arguments: broadcastPairs)
    func add(_ shapes: ([Int], [Int])) throws {
        try GradientCheck.check([Inputs.normal(shapes.0, seed: 1),
                                 Inputs.normal(shapes.1, seed: 2)]) { try $0[0] + $0[1] }
    }

    @Test(arguments: broadcastPairs)
    func subtract(_ shapes: ([Int], [Int])) throws {
        try GradientCheck.check([Inputs.normal(shapes.0, seed: 1),
                                 Inputs.normal(shapes.1, seed: 2)]) { try $0[0] - $0[1] }
    }

    @Test(arguments: broadcastPairs)
    func multiply(_ shapes: ([Int], [Int])) throws {
        try GradientCheck.check([Inputs.normal(shapes.0, seed: 1),
                                 Inputs.normal(shapes.1, seed: 2)]) { try $0[0] * $0[1] }
    }

    @Test(arguments: broadcastPairs)
    func divide(_ shapes: ([Int], [Int])) throws {
        try GradientCheck.check([Inputs.normal(shapes.0, seed: 1),
                                 Inputs.uniform(shapes.1, 0.5, 1.5, seed: 2)]) { try $0[0] / $0[1] }
    }

    @Test func scalarOps() throws {
        let x = Inputs.uniform([3, 5], 0.5, 2)
        try GradientCheck.check([x]) { ($0[0] + 2) * 3 - 1 }
        try GradientCheck.check([x]) { 2 - $0[0] / 4 }
        try GradientCheck.check([x]) { -$0[0] }
        try GradientCheck.check([x]) { $0[0].pow(1.7) }
        try GradientCheck.check([x]) { $0[0].squared() }
    }

    // MARK: Reductions and shapes

    @Test(arguments: [[4, 5], [2, 3, 4]])
    func sumAndMean(_ shape: [Int]) throws {
        let x = Inputs.normal(shape)
        try GradientCheck.check([x]) { try $0[0].sum() }
        try GradientCheck.check([x]) { try $0[0].sum(axis: 0) }
        try GradientCheck.check([x]) { try $0[0].sum(axis: -1, keepDims: true) }
        try GradientCheck.check([x]) { try $0[0].mean(axes: [0, shape.count - 1]) }
        try GradientCheck.check([x]) { try $0[0].mean(axis: 1, keepDims: true) }
    }

    @Test func reshapePermuteSliceConcat() throws {
        let x = Inputs.normal([2, 3, 4])
        try GradientCheck.check([x]) { try $0[0].reshaped([6, -1]) }
        try GradientCheck.check([x]) { try $0[0].permuted([2, 0, 1]) }
        try GradientCheck.check([x]) { try $0[0].transposed(0, 1) }
        try GradientCheck.check([x]) { try $0[0].slice(axis: 1, 1..<3) }
        try GradientCheck.check([x]) { try $0[0].slice(axis: -1, 0..<1) }
        let y = Inputs.normal([2, 1, 4], seed: 3)
        try GradientCheck.check([x, y]) { try Tensor.concatenate([$0[0], $0[1], $0[0]], axis: 1) }
        try GradientCheck.check([y]) { try $0[0].expanded(to: [3, 2, 5, 4]) }
    }

    // MARK: Matrix products

    static let matmulCases: [([Int], [Int], Bool, Bool)] = [
        ([3, 4], [4, 5], false, false), ([4, 3], [4, 5], true, false),
        ([3, 4], [5, 4], false, true), ([4, 3], [5, 4], true, true),
        ([2, 3, 4], [2, 4, 5], false, false), ([2, 4, 3], [2, 5, 4], true, true),
        ([2, 3, 4], [5, 4], false, true),   // Linear: batched input, shared weight [out, in]
        ([2, 3, 4], [4, 5], false, false),
        ([2, 4, 3], [4, 5], true, false), ([2, 4, 3], [5, 4], true, true),
    ]

    @Test(arguments: matmulCases)
    func matmul(_ c: ([Int], [Int], Bool, Bool)) throws {
        try GradientCheck.check([Inputs.normal(c.0, seed: 1), Inputs.normal(c.1, seed: 2)]) {
            try $0[0].matmul($0[1], transposeSelf: c.2, transposeOther: c.3)
        }
    }

    // MARK: Lookup, softmax, losses, norms

    @Test func gatherRows() throws {
        let table = Inputs.normal([5, 3])
        try GradientCheck.check([table]) { try $0[0].gatherRows([4, 0, 4, 2, 1, 4], indexShape: [2, 3]) }
    }

    @Test(arguments: [[7], [3, 5], [2, 2, 6]])
    func softmaxAndLogSoftmax(_ shape: [Int]) throws {
        let x = Inputs.normal(shape, std: 2)
        try GradientCheck.check([x]) { $0[0].softmax() }
        try GradientCheck.check([x]) { $0[0].logSoftmax() }
    }

    @Test func crossEntropy() throws {
        let logits = Inputs.normal([6, 5], std: 2)
        try GradientCheck.check([logits]) { try $0[0].crossEntropy(targets: [1, 4, -100, 0, 3, -100]) }
        let batched = Inputs.normal([2, 3, 4], std: 2)
        try GradientCheck.check([batched]) { try $0[0].crossEntropy(targets: [0, 1, 2, 3, 7, 2], ignoreIndex: 7) }
    }

    /// Both of RMSNorm's backward paths: from its output (x̂ = y / w), and from its input when a weight element
    /// is zero and y / w cannot give x̂ back.
    @Test(arguments: [[4, 6], [2, 3, 8]], [false, true])
    func rmsNorm(_ shape: [Int], zeroInWeight: Bool) throws {
        let x = Inputs.normal(shape)
        var w = Inputs.normal([shape.last!], seed: 5)
        if zeroInWeight { w = try Tensor(shape: w.shape, scalars: [0] + w.scalars.dropFirst()) }
        try GradientCheck.check([x, w]) { try $0[0].rmsNorm(weight: $0[1], epsilon: 1e-5) }
    }

    @Test(arguments: [[4, 6], [2, 3, 8]])
    func layerNorm(_ shape: [Int]) throws {
        let x = Inputs.normal(shape), w = Inputs.normal([shape.last!], seed: 5), b = Inputs.normal([shape.last!], seed: 6)
        try GradientCheck.check([x, w, b]) { try $0[0].layerNorm(weight: $0[1], bias: $0[2], epsilon: 1e-5) }
        try GradientCheck.check([x, w]) { try $0[0].layerNorm(weight: $0[1], bias: nil, epsilon: 1e-5) }
    }

    // MARK: Element-wise functions

    @Test(arguments: [[9], [3, 4]])
    func activations(_ shape: [Int]) throws {
        let x = Inputs.normal(shape, std: 1.5)
        try GradientCheck.check([x]) { $0[0].silu() }
        try GradientCheck.check([x]) { $0[0].gelu() }
        try GradientCheck.check([x]) { $0[0].gelu(approximation: .tanh) }
        try GradientCheck.check([x]) { $0[0].tanh() }
        try GradientCheck.check([x]) { $0[0].sigmoid() }
        try GradientCheck.check([x]) { $0[0].exp() }
        let positive = Inputs.uniform(shape, 0.5, 3)
        try GradientCheck.check([positive]) { $0[0].log() }
        try GradientCheck.check([positive]) { $0[0].sqrt() }
        try GradientCheck.check([positive]) { $0[0].rsqrt() }
    }

    @Test func dropoutUsesItsMaskInBackward() throws {
        let x = Inputs.normal([4, 8])
        try GradientCheck.check([x]) { inputs in
            var generator = RandomGenerator(seed: 99)  // same mask at every evaluation
            return try inputs[0].dropout(probability: 0.3, generator: &generator)
        }
    }

    // MARK: Position and attention

    @Test(arguments: [0, 5])
    func rotaryEmbedding(_ offset: Int) throws {
        let table = try RotaryTable(headDimension: 6, theta: 10_000, maxPositions: 16)
        let x = Inputs.normal([2, 2, 3, 6])
        try GradientCheck.check([x]) { try $0[0].rotaryEmbedding(table, offset: offset) }
        try GradientCheck.check([x]) { try $0[0].rotaryEmbedding(table, offset: offset, sequenceAxis: 1) }
    }

    @Test func rotaryEmbeddingOnEitherLayoutAgrees() throws {
        // [B, H, T, D] along axis 2 equals [B, T, H, D] along axis 1, permuted.
        let table = try RotaryTable(headDimension: 4, theta: 10_000, maxPositions: 16)
        let x = Inputs.normal([2, 3, 5, 4])
        let headMajor = try x.rotaryEmbedding(table, offset: 2)
        let sequenceMajor = try x.permuted([0, 2, 1, 3]).rotaryEmbedding(table, offset: 2, sequenceAxis: 1)
        #expect(try sequenceMajor.permuted([0, 2, 1, 3]).scalars == headMajor.scalars)
    }

    static let attentionCases: [(hq: Int, hkv: Int, t: Int, s: Int, p: Int, causal: Bool)] = [
        (2, 2, 4, 4, 0, true), (4, 2, 3, 3, 0, true), (4, 2, 3, 3, 2, true),
        (2, 1, 2, 5, 0, true), (2, 2, 3, 4, 2, false), (2, 1, 70, 70, 1, true),
    ]

    @Test(arguments: attentionCases)
    func attention(_ c: (hq: Int, hkv: Int, t: Int, s: Int, p: Int, causal: Bool)) throws {
        let d = 4
        var inputs = [Inputs.normal([2, c.t, c.hq, d], seed: 1), Inputs.normal([2, c.s, c.hkv, d], seed: 2),
                      Inputs.normal([2, c.s, c.hkv, d], seed: 3)]
        if c.p > 0 { inputs += [Inputs.normal([2, c.p, c.hkv, d], seed: 4), Inputs.normal([2, c.p, c.hkv, d], seed: 5)] }
        try GradientCheck.check(inputs) { x in
            try Tensor.scaledDotProductAttention(
                query: x[0], key: x[1], value: x[2], prefix: x.count > 3 ? (x[3], x[4]) : nil, causal: c.causal)
        }
    }

    /// Prefix tuning's first layer: only the prefix trains (query, key and value come from a frozen
    /// embedding). Its gradients must not depend on whether the others' are taken too.
    @Test func attentionPrefixGradientsAloneEqualThoseBesideTheOthers() throws {
        let q = Inputs.normal([2, 70, 4, 4], seed: 1), k = Inputs.normal([2, 70, 2, 4], seed: 2), v = Inputs.normal([2, 70, 2, 4], seed: 3)
        let seed = Inputs.normal([2, 70, 4, 4], seed: 6)
        func prefixGradients(othersTrain: Bool) throws -> [[Float]] {
            let pk = Inputs.normal([2, 3, 2, 4], seed: 4).requiringGrad(), pv = Inputs.normal([2, 3, 2, 4], seed: 5).requiringGrad()
            let (qq, kk, vv) = othersTrain ? (q.detached().requiringGrad(), k.detached().requiringGrad(),
                                              v.detached().requiringGrad())
                                           : (q.detached(), k.detached(), v.detached())
            try Tensor.scaledDotProductAttention(query: qq, key: kk, value: vv, prefix: (pk, pv)).backward(seed: seed)
            return [pk.grad!.scalars, pv.grad!.scalars]
        }
        #expect(try prefixGradients(othersTrain: false) == prefixGradients(othersTrain: true))
    }

    @Test func attentionNamesAPrefixThatDoesNotFitTheKeys() throws {
        let q = Tensor.zeros([2, 3, 4, 8]), k = Tensor.zeros([2, 3, 2, 8]), v = Tensor.zeros([2, 3, 2, 8])
        #expect(throws: TensorError.shapeMismatch(op: "attention (prefix key vs key)", lhs: [2, 5, 4, 8],
                                                  rhs: [2, 3, 2, 8])) {
            try Tensor.scaledDotProductAttention(query: q, key: k, value: v,
                                                 prefix: (Tensor.zeros([2, 5, 4, 8]), Tensor.zeros([2, 5, 4, 8])))
        }
        #expect(throws: TensorError.shapeMismatch(op: "attention (prefix value vs value)", lhs: [1, 5, 2, 8],
                                                  rhs: [2, 3, 2, 8])) {
            try Tensor.scaledDotProductAttention(query: q, key: k, value: v,
                                                 prefix: (Tensor.zeros([2, 5, 2, 8]), Tensor.zeros([1, 5, 2, 8])))
        }
    }

    // MARK: The checker itself

    @Test func checkerCatchesAWrongBackward() throws {
        // tanh whose backward forgets the (1 − y²) factor.
        let x = Inputs.normal([3, 4])
        let result = try GradientCheck.measure([x]) { inputs in
            let y = Elementwise.map(inputs[0]) { Math.tanh($0) }
            if Tensor.needsGradient(inputs[0]) {
                y.recordBackward("wrong tanh", inputs: [inputs[0]]) { g in [g] }
            }
            return y
        }
        #expect(result.worstError > 0.05, "a wrong backward passed the check: \(result.description)")
    }
}

@Suite("fused kernels against their composition")
struct FusedKernelTests {
    @Test(arguments: [[7], [3, 21]])
    func swiGLUEqualsSiluTimesUp(_ shape: [Int]) throws {
        let gate = Inputs.normal(shape, seed: 1, std: 2), up = Inputs.normal(shape, seed: 2)
        expectClose(try Tensor.swiGLU(gate: gate, up: up).scalars, try (gate.silu() * up).scalars, tolerance: 1e-6)
        try GradientCheck.check([gate, up]) { try Tensor.swiGLU(gate: $0[0], up: $0[1]) }
    }

    @Test(arguments: [(5, 3, 7), (40, 6, 9)])
    func linearCrossEntropyEqualsMatmulThenCrossEntropy(_ s: (Int, Int, Int)) throws {
        let (n, d, v) = s
        let targets: [Int32] = (0..<n).map { $0 % 4 == 3 ? -100 : Int32(($0 * 5) % v) }
        let h1 = Inputs.normal([n, d], seed: 1).requiringGrad(), w1 = Inputs.normal([v, d], seed: 2).requiringGrad()
        let fused = try Tensor.linearCrossEntropy(hidden: h1, weight: w1, targets: targets, chunkRows: 7)
        try fused.backward()
        let h2 = h1.copy().requiringGrad(), w2 = w1.copy().requiringGrad()
        let composed = try h2.matmul(w2, transposeOther: true).crossEntropy(targets: targets)
        try composed.backward()
        #expect(abs(try fused.item() - composed.item()) < 1e-5)
        expectClose(h1.grad!.scalars, h2.grad!.scalars, tolerance: 1e-5)
        expectClose(w1.grad!.scalars, w2.grad!.scalars, tolerance: 1e-5)
        try GradientCheck.check([Inputs.normal([n, d], seed: 3), Inputs.normal([v, d], seed: 4)]) {
            try Tensor.linearCrossEntropy(hidden: $0[0], weight: $0[1], targets: targets, chunkRows: 3)
        }
    }

    @Test func linearCrossEntropyWithEveryRowIgnoredIsZeroWithZeroGradients() throws {
        let h = Inputs.normal([4, 3], seed: 5).requiringGrad(), w = Inputs.normal([6, 3], seed: 6).requiringGrad()
        let loss = try Tensor.linearCrossEntropy(hidden: h, weight: w, targets: [-100, -100, -100, -100])
        try loss.backward()
        #expect(try loss.item() == 0)
        #expect(h.grad!.scalars.allSatisfy { $0 == 0 })
        #expect(w.grad!.scalars.allSatisfy { $0 == 0 })
    }
}
