import Testing
import FinchNN
import FinchTensor

/// FinchNN's layers against the same maths written out with the engine's primitive ops (slices, products,
/// softmax, means), values and gradients: the fused attention and normalisation kernels, the fused SwiGLU
/// down projection, and the key/value cache.
@Suite("layers against their maths")
struct LayerTests {
    static func normal(_ shape: [Int], seed: UInt64, std: Float = 1) -> Tensor {
        var g = RandomGenerator(seed: seed)
        return Tensor.randomNormal(shape, standardDeviation: std, generator: &g)
    }

    /// Values equal up to float32 rounding of sums this short: within `tolerance` of the larger magnitude (or of
    /// 1); 2·10⁻⁵ for sums of tens of terms, more for weight gradients summed over hundreds of rows in another
    /// order. A wrong mask, head mapping or scale moves values by tenths.
    static func expectClose(_ a: [Float], _ b: [Float], _ what: String, tolerance: Float = 2e-5) {
        #expect(a.count == b.count, "\(what): \(a.count) values against \(b.count)")
        let worst = zip(a, b).map { abs($0 - $1) / max(1, abs($0), abs($1)) }.max() ?? 0
        #expect(worst <= tolerance, "\(what): relative difference \(worst)")
        #expect(a.contains { $0 != 0 }, "\(what): all zero")
    }

    static func randomize(_ layer: any LinearLayer, seed: UInt64) throws {
        let linear = try #require(layer as? Linear)
        try linear.weight.assign(normal(linear.weight.shape, seed: seed, std: 0.3))
        if let bias = linear.bias { try bias.assign(normal(bias.shape, seed: seed + 100, std: 0.3)) }
    }

    /// Grouped-query causal attention written out head by head: scores q·kᵀ/√d plus −10⁹ above the diagonal,
    /// softmax, times v, heads side by side, then the output projection.
    static func attentionFromPrimitives(_ a: Attention, _ x: Tensor) throws -> Tensor {
        let d = a.headDimension, group = a.headCount / a.keyValueHeadCount, t = x.shape[1]
        let q = try a.qProj(x), k = try a.kProj(x), v = try a.vProj(x)
        var mask = [Float](repeating: 0, count: t * t)
        for i in 0..<t { for j in (i + 1)..<max(i + 1, t) { mask[i * t + j] = -1e9 } }
        let causal = try Tensor(shape: [t, t], scalars: mask)
        let heads = try (0..<a.headCount).map { h -> Tensor in
            let kv = h / group
            let qh = try q.slice(axis: 2, (h * d)..<((h + 1) * d))
            let kh = try k.slice(axis: 2, (kv * d)..<((kv + 1) * d)), vh = try v.slice(axis: 2, (kv * d)..<((kv + 1) * d))
            let scores = try qh.matmul(kh, transposeOther: true) * (1 / Float(d).squareRoot()) + causal
            return try scores.softmax().matmul(vh)
        }
        return try a.oProj(Tensor.concatenate(heads, axis: 2))
    }

    /// Runs `f` on fresh leaves of `inputs` with `seed` as the output's gradient: the output and every gradient.
    static func valuesAndGradients(_ inputs: [Tensor], seed: UInt64,
                                   _ f: ([Tensor]) throws -> Tensor) throws -> [[Float]] {
        let leaves = inputs.map { $0.detached().requiringGrad() }
        let y = try f(leaves)
        try y.backward(seed: normal(y.shape, seed: seed))
        return [y.scalars] + leaves.map { $0.grad?.scalars ?? [] }
    }

    @Test(arguments: [(4, 4), (4, 2), (6, 1)])
    func attentionMatchesItsMathsFromPrimitiveOps(_ heads: Int, _ keyValueHeads: Int) throws {
        let attention = Attention(dimensions: 24, headCount: heads, keyValueHeadCount: keyValueHeads, headDimension: 8,
                                  bias: true, rotary: nil)
        for (i, layer) in [attention.qProj, attention.kProj, attention.vProj, attention.oProj].enumerated() {
            try Self.randomize(layer, seed: UInt64(10 + i))
        }
        attention.unfreeze()
        let x = Self.normal([2, 7, 24], seed: 1)
        let weights = attention.namedParameters().map(\.tensor)
        func run(_ f: @escaping (Tensor) throws -> Tensor) throws -> [[Float]] {
            for w in weights { w.zeroGrad() }
            let out = try Self.valuesAndGradients([x], seed: 2) { try f($0[0]) }
            return out + weights.map { $0.grad?.scalars ?? [] }
        }
        let fused = try run { try attention($0, positionOffset: 0, cache: nil, prefix: nil) }
        let plain = try run { try Self.attentionFromPrimitives(attention, $0) }
        let names = ["output", "dx"] + attention.namedParameters().map { "d" + $0.name }
        for (name, (a, b)) in zip(names, zip(fused, plain)) { Self.expectClose(a, b, name) }
    }

    @Test func rmsNormMatchesItsMathsFromPrimitiveOps() throws {
        let norm = RMSNorm(dimensions: 40, epsilon: 1e-5)
        try norm.weight.assign(Self.normal([40], seed: 3))
        let x = Self.normal([3, 5, 40], seed: 4, std: 2)
        let fused = try Self.valuesAndGradients([x, norm.weight],
                                                seed: 5) { try $0[0].rmsNorm(weight: $0[1], epsilon: 1e-5) }
        let plain = try Self.valuesAndGradients([x, norm.weight], seed: 5) { t in
            try t[0] * (t[0].squared().mean(axis: 2, keepDims: true) + 1e-5).rsqrt() * t[1]
        }
        for (name, (a, b)) in zip(["output", "dx", "dweight"], zip(fused, plain)) { Self.expectClose(a, b, name) }
        // The module is the op.
        #expect(try norm(x).scalars == fused[0])
    }

    /// A down projection the MLP cannot fuse (any LinearLayer but a plain Linear): the two-op path.
    final class Wrapped: Module, LinearLayer {
        let inner: Linear
        init(_ inner: Linear) { self.inner = inner }
        var inputDimensions: Int { inner.inputDimensions }
        var outputDimensions: Int { inner.outputDimensions }
        func callAsFunction(_ x: Tensor) throws -> Tensor { try inner(x) }
    }

    @Test(arguments: [false, true])
    func gatedMLPsFusedDownProjectionMatchesTheTwoOps(_ bias: Bool) throws {
        // Rows enough for the fused path (it splits by rows), hidden width not a multiple of the vector width.
        let mlp = GatedMLP(dimensions: 16, hiddenDimensions: 52, bias: bias)
        for (i, layer) in [mlp.gateProj, mlp.upProj, mlp.downProj].enumerated() { try Self.randomize(layer, seed: UInt64(20 + i)) }
        mlp.unfreeze()
        let x = Self.normal([4, 150, 16], seed: 6)
        let weights = mlp.namedParameters().map(\.tensor)
        func run() throws -> [[Float]] {
            for w in weights { w.zeroGrad() }
            return try Self.valuesAndGradients([x], seed: 7) { try mlp($0[0]) } + weights.map { $0.grad?.scalars ?? [] }
        }
        let fused = try run()
        let down = try #require(mlp.downProj as? Linear)
        mlp.downProj = Wrapped(down)
        let plain = try run()
                // 600 rows: the weight gradients' sums are long.
        for (i, (a, b)) in zip(fused, plain).enumerated() { Self.expectClose(a, b, "tensor \(i)", tolerance: i < 2 ? 2e-5 : 2e-4) }
    }

    @Test func attentionWithACacheEqualsTheFullPass() throws {
        let rotary = try RotaryTable(headDimension: 8, theta: 10_000, maxPositions: 64)
        let attention = Attention(dimensions: 16, headCount: 4, keyValueHeadCount: 2, headDimension: 8, bias: false,
                                  rotary: rotary)
        for (i, layer) in [attention.qProj, attention.kProj, attention.vProj, attention.oProj].enumerated() {
            try Self.randomize(layer, seed: UInt64(30 + i))
        }
        let x = Self.normal([1, 9, 16], seed: 8)
        try GradientMode.withoutGradients {
            let full = try attention(x, positionOffset: 0, cache: nil, prefix: nil).scalars
            let cache = LayerCache()
            var stepped: [Float] = try attention(x.slice(axis: 1,
                                                         0..<5), positionOffset: 0, cache: cache, prefix: nil).scalars
            for t in 5..<9 {
                stepped += try attention(x.slice(axis: 1,
                                                 t..<(t + 1)), positionOffset: t, cache: cache, prefix: nil).scalars
            }
            #expect(cache.length == 9)
            Self.expectClose(stepped, full, "cached against full")
        }
    }

    final class Pair: Module {
        @Child var first: any LinearLayer
        let second: Linear
        let blocks: [Linear]
        override init() {
            first = Linear(inputDimensions: 2, outputDimensions: 3, bias: true)
            second = Linear(inputDimensions: 3, outputDimensions: 2)
            blocks = [Linear(inputDimensions: 2, outputDimensions: 2)]
        }
    }

    @Test func modulesAreNamedByPathAndReplacedInTheirSlots() throws {
        let pair = Pair()
        #expect(pair.namedParameters().map(\.name) == ["first.weight", "first.bias", "second.weight",
                                                       "blocks.0.weight"])
        pair.freeze()
        #expect(pair.trainableParameters().isEmpty)
        let replacement = Linear(inputDimensions: 2, outputDimensions: 3)
        replacement.unfreeze()
        try pair.replaceModule(at: "first", with: replacement)
        #expect(pair.first === replacement)
        #expect(pair.trainableParameters().map(\.name) == ["first.weight"])
        // A module held in a plain `let`, or a path that does not exist, cannot be replaced.
        #expect(throws: ModuleError.self) { try pair.replaceModule(at: "second", with: Linear(inputDimensions: 3, outputDimensions: 2)) }
        #expect(throws: ModuleError.self) { try pair.replaceModule(at: "third", with: replacement) }
    }
}
