import Foundation
import Testing
@testable import FinchTensor

/// Hand-computed cases of the tape: broadcasting, reuse, unused inputs, non-scalar intermediates.
@Suite("autograd tape")
struct TapeTests {
    @Test func broadcastGradientIsSummedToTheSourceShape() throws {
        // y = Σ (x + b),  x [2, 3], b [3]  →  dx = 1, db = 2 (each b[j] is used by both rows).
        let x = try Tensor(shape: [2, 3], scalars: [1, 2, 3, 4, 5, 6]).requiringGrad()
        let b = Tensor([10, 20, 30]).requiringGrad()
        try (x + b).sum().backward()
        #expect(x.grad?.shape == [2, 3])
        #expect(x.grad?.scalars == [1, 1, 1, 1, 1, 1])
        #expect(b.grad?.shape == [3])
        #expect(b.grad?.scalars == [2, 2, 2])
    }

    @Test func aValueUsedTwiceAccumulates() throws {
        // y = Σ x·x + 3x  →  dy/dx = 2x + 3
        let x = Tensor([1, -2, 0.5]).requiringGrad()
        try (x * x + x * 3).sum().backward()
        #expect(x.grad?.scalars == [5, -1, 4])
    }

    @Test func anUnusedInputGetsNoGradient() throws {
        let x = Tensor([1, 2]).requiringGrad()
        let unused = Tensor([3, 4]).requiringGrad()
        try (x * 2).sum().backward()
        #expect(x.grad?.scalars == [2, 2])
        #expect(unused.grad == nil)
    }

    @Test func aNonScalarIntermediate() throws {
        // h = W x (a [2] vector), y = Σ h²; dy/dW = 2 h xᵀ, dy/dx = 2 Wᵀ h.
        let w = try Tensor(shape: [2, 2], scalars: [1, 2, 3, 4]).requiringGrad()
        let x = try Tensor(shape: [2, 1], scalars: [1, -1]).requiringGrad()
        let h = try w.matmul(x)  // [-1, -1]
        #expect(h.scalars == [-1, -1])
        try h.squared().sum().backward()
        #expect(w.grad?.scalars == [-2, 2, -2, 2])
        #expect(x.grad?.scalars == [-8, -12])
    }

    @Test func gradientsAccumulateAcrossBackwardPassesUntilZeroed() throws {
        let x = Tensor([1, 2]).requiringGrad()
        try (x * 3).sum().backward()
        try (x * 3).sum().backward()
        #expect(x.grad?.scalars == [6, 6])
        x.zeroGrad()
        try (x * 3).sum().backward()
        #expect(x.grad?.scalars == [3, 3])
    }

    /// x feeds three products (which add into the gradient already summed for x), an elementwise use, and a
    /// product whose input's gradient so far is a tensor an add shared out (which no product may write into).
    @Test func productsAddIntoTheGradientAlreadySummedAndLeaveSharedOnesAlone() throws {
        let x0 = Inputs.normal([6, 5], seed: 3, std: 0.5)
        let w = (0..<3).map { Inputs.normal([5, 4], seed: 10 + UInt64($0)) }
        let k0 = Inputs.normal([6, 4], seed: 20), c = Inputs.normal([6, 4], seed: 21)
        let terms: [(Tensor, Tensor) throws -> Tensor] = [
            { x, _ in try x.matmul(w[0]).squared().sum() },
            { x, _ in try (x.matmul(w[1]) * c).sum() },
            { x, _ in try x.matmul(w[2], transposeOther: false).exp().sum() },
            { x, _ in try (x * x).sum() },
            // h + k hands one gradient tensor to h and to k; a product of h and k must not add into it (in one of
            // the two orders the product runs after the add).
            { x, k0 in let h = try x.matmul(w[0]), k = k0 * 2; return try ((h + k) * c).sum() + h.matmul(k, transposeOther: true).squared().sum() },
            { x, k0 in let h = try x.matmul(w[0]), k = k0 * 2; return try h.matmul(k, transposeOther: true).squared().sum() + ((h + k) * c).sum() },
        ]
        // Against central differences: the engine's own per-term gradients would share any fault.
        try GradientCheck.check([x0, k0]) { inputs in
            var loss = try terms[0](inputs[0], inputs[1])
            for term in terms.dropFirst() { loss = try loss + term(inputs[0], inputs[1]) }
            return loss
        }
    }

    @Test func aProductAddsIntoALeafsGradientFromAnEarlierPass() throws {
        let x = Inputs.normal([4, 3], seed: 5).requiringGrad(), w = Inputs.normal([3, 2], seed: 6).requiringGrad()
        try x.matmul(w).squared().sum().backward()
        let once = (x.grad!.scalars, w.grad!.scalars)
        let held = x.grad!
        try x.matmul(w).squared().sum().backward()
        #expect(x.grad! === held)  // added into, not replaced
        #expect(x.grad!.scalars == once.0.map { $0 * 2 })
        #expect(w.grad!.scalars == once.1.map { $0 * 2 })
    }

    @Test func frozenTensorsGetNoGradientAndRecordNothing() throws {
        let frozen = Inputs.normal([3, 3])
        let trainable = Inputs.normal([3, 3], seed: 2).requiringGrad()
        let y = try frozen.matmul(frozen)
        #expect(!y.requiresGrad)
        #expect(y.isLeaf)
        try (y.matmul(trainable)).sum().backward()
        #expect(frozen.grad == nil)
        #expect(trainable.grad != nil)
    }

    @Test func noGradientScopeRecordsNothing() throws {
        let x = Tensor([1, 2]).requiringGrad()
        let y = try GradientMode.withoutGradients { try (x * x).sum() }
        #expect(!y.requiresGrad)
        #expect(throws: TensorError.self) { try y.backward() }
    }

    @Test func backwardTwiceThroughTheSameGraphIsAnError() throws {
        let x = Tensor([1, 2]).requiringGrad()
        let y = try (x.exp() * 2).sum()
        try y.backward()
        #expect(throws: TensorError.self) { try y.backward() }
    }

    @Test func backwardNeedsAScalarOrASeed() throws {
        let x = Tensor([1, 2]).requiringGrad()
        let y = x * 2
        #expect(throws: TensorError.self) { try y.backward() }
        try y.backward(seed: Tensor([1, 10]))
        #expect(x.grad?.scalars == [2, 20])
    }

    @Test func shapeMismatchNamesTheOpAndBothShapes() throws {
        let a = Tensor.zeros([2, 3]), b = Tensor.zeros([4, 5])
        do {
            _ = try a.matmul(b)
            Issue.record("matmul of [2, 3] and [4, 5] did not throw")
        } catch let error as TensorError {
            #expect(error == .shapeMismatch(op: "matmul", lhs: [2, 3], rhs: [4, 5]))
            #expect(error.description == "matmul: shapes [2, 3] and [4, 5] do not match")
        }
        #expect(throws: TensorError.shapeMismatch(op: "add", lhs: [2, 3], rhs: [4, 5])) { try a + b }
        #expect(throws: TensorError.shapeMismatch(op: "rmsNorm", lhs: [2, 3], rhs: [4])) {
            try a.rmsNorm(weight: Tensor.ones([4]), epsilon: 1e-5)
        }
    }

    @Test func largeTensorsTakeTheParallelPathAndAgreeWithSmallOnes() throws {
        // 300 000 elements split across the cores, against the same values summed in Double.
        let x = Inputs.normal([600, 500]), y = Inputs.normal([500], seed: 2)
        let z = try x * y + x.exp()
        let xs = x.scalars, ys = y.scalars, zs = z.scalars
        var worst: Float = 0
        for i in stride(from: 0, to: xs.count, by: 997) {
            worst = max(worst, abs(zs[i] - (xs[i] * ys[i % 500] + Math.exp(xs[i]))))
        }
        #expect(worst == 0)
        let rowSums = try z.sum(axis: 1).scalars
        for r in [0, 299, 599] {
            let expected = (0..<500).reduce(0.0) { $0 + Double(zs[r * 500 + $1]) }
            #expect(abs(Double(rowSums[r]) - expected) < 1e-3 * max(1, abs(expected)))
        }
    }

    @Test func generatorIsDeterministicAndRestorable() throws {
        var a = RandomGenerator(seed: 42), b = RandomGenerator(seed: 42)
        let first = (0..<5).map { _ in a.next() }
        #expect(first == (0..<5).map { _ in b.next() })
        let saved = a.state
        let next = a.nextNormal()
        var restored = try RandomGenerator(state: saved)
        #expect(restored.nextNormal() == next)
        var c = RandomGenerator(seed: 43)
        #expect(c.next() != first[0])
        let n = Tensor.randomNormal([20_000], generator: &c).scalars
        let mean = n.reduce(0, +) / Float(n.count)
        let variance = n.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Float(n.count)
        #expect(abs(mean) < 0.03 && abs(variance - 1) < 0.05)
    }
}

@Suite("kernels")
struct KernelTests {
    @Test func fastExponentialIsWithinTwoUlpOfTheLibrary() {
        var worst: Float = 0
        var x: Float = -87
        while x < 88.7 {
            let fast = Math.exp(x), reference = Math.libraryExp(x)
            worst = max(worst, abs(fast - reference) / reference.ulp)
            x += 0.0137
        }
        #expect(worst <= 2, "worst error \(worst) ulp")
        #expect(Math.exp(-.infinity) == 0 && Math.exp(-100) == 0 && Math.exp(0) == 1 && Math.exp(100) == .infinity)
        #expect(Math.exp(.nan).isNaN)
        let lanes = Math.exp8(SIMD8(-.infinity, -100, 0, 1, 88.7, 100, .nan, -3.5))
        #expect(lanes[0] == 0 && lanes[1] == 0 && lanes[2] == 1 && lanes[5] == .infinity && lanes[6].isNaN)
        #expect(lanes[3] == Math.exp(1) && lanes[4] == Math.exp(88.7) && lanes[7] == Math.exp(-3.5))
    }
    /// The fused gated projection against swiGLU then a product: rows that split into a full block and a
    /// partial one on each core (hidden × outputs large enough for blocks), the gradients of gate and up, and a
    /// trained weight's gradient added to what it already holds. The two paths sum their products in different
    /// orders (blocked panels against one call, and OpenBLAS picks its kernels by CPU), so each is held to the
    /// float64 result within the float32 rounding bound of its sums: |error| ≤ γ(n)·Σ|terms|, γ(n) = n·u/(1 − n·u).
    @Test(arguments: [(false, 512), (true, 512), (false, 515)])
    func swiGLUProjectedMatchesTheTwoOps(weightTrains: Bool, hidden: Int) throws {
        let outputs = 128
        #expect(SwiGLUKernel.blockRows(width: hidden, outputs: outputs) == SwiGLUKernel.blockRows)
        let rows = 2 * SwiGLUKernel.blockRows + 75
        // An odd row count with hidden 515: the cores' shares of rows and swiGLU's shares of elements then end at
        // different places, so some values are a vector lane in one op and the scalar tail in the other.
        let lead = hidden % 8 == 0 ? [3, rows / 3 + 1] : [1, rows]
        let gate0 = Inputs.normal(lead + [hidden], seed: 1), up0 = Inputs.normal(lead + [hidden], seed: 2)
        let w0 = Inputs.normal([outputs, hidden], seed: 3, std: 0.05), seed = Inputs.normal(lead + [outputs], seed: 4)
        func run(fused: Bool) throws -> (y: [Float], dGate: [Float], dUp: [Float], dW: [Float]?) {
            let gate = gate0.detached().requiringGrad(), up = up0.detached().requiringGrad()
            let w = weightTrains ? w0.detached().requiringGrad() : w0.detached()
            let y = fused ? try Tensor.swiGLUProjected(gate: gate, up: up, weight: w)
                          : try Tensor.swiGLU(gate: gate, up: up).matmul(w, transposeOther: true)
            try y.backward(seed: seed)
            return (y.scalars, gate.grad!.scalars, up.grad!.scalars, w.grad?.scalars)
        }
        let fused = try run(fused: true), plain = try run(fused: false)
        // The float64 reference and each value's bound. With σ = sigmoid(g), s = g·σ, y = s·u:
        // y_o = Σ_h s_h w_oh;  dS_h = Σ_o dy_o w_oh;  dGate_h = dS_h·u_h·σ(1 + g(1 − σ));  dUp_h = dS_h·s_h.
        let g = gate0.scalars.map(Double.init), u = up0.scalars.map(Double.init)
        let w = w0.scalars.map(Double.init), d = seed.scalars.map(Double.init)
        let count = g.count / hidden
        func gamma(_ n: Int) -> Double { let nu = Double(n) * 0x1p-24; return nu / (1 - nu) }
        var yExact = [Double](repeating: 0, count: count * outputs), yBound = yExact
        var dGateExact = [Double](repeating: 0, count: g.count), dGateBound = dGateExact
        var dUpExact = dGateExact, dUpBound = dGateExact
        for r in 0..<count {
            var sv = [Double](repeating: 0, count: hidden)
            for h in 0..<hidden {
                let x = g[r * hidden + h], sig = 1 / (1 + Foundation.exp(-x))
                sv[h] = x * sig * u[r * hidden + h]
            }
            for o in 0..<outputs {
                var sum = 0.0, magnitude = 0.0
                for h in 0..<hidden { sum += sv[h] * w[o * hidden + h]; magnitude += abs(sv[h] * w[o * hidden + h]) }
                yExact[r * outputs + o] = sum
                // The gated values carry a few roundings of their own (exp, the products) into the sum.
                yBound[r * outputs + o] = gamma(hidden + 8) * magnitude
            }
            for h in 0..<hidden {
                var dS = 0.0, magnitude = 0.0
                for o in 0..<outputs { dS += d[r * outputs + o] * w[o * hidden + h]; magnitude += abs(d[r * outputs + o] * w[o * hidden + h]) }
                let x = g[r * hidden + h], sig = 1 / (1 + Foundation.exp(-x)), i = r * hidden + h
                let gateFactor = u[i] * sig * (1 + x * (1 - sig)), upFactor = x * sig
                dGateExact[i] = dS * gateFactor
                dUpExact[i] = dS * upFactor
                // 1 + g(1 − σ) cancels near g ≈ −1.28: its rounding is relative to its terms' magnitudes, not to it.
                dGateBound[i] = gamma(outputs + 8) * magnitude * abs(u[i]) * sig * (1 + abs(x * (1 - sig)))
                dUpBound[i] = gamma(outputs + 8) * magnitude * abs(upFactor)
            }
        }
        func withinBound(_ got: [Float], _ exact: [Double], _ bound: [Double], _ what: String,
                         sourceLocation: SourceLocation = #_sourceLocation) {
            #expect(got.count == exact.count, "\(what): \(got.count) values, expected \(exact.count)",
                    sourceLocation: sourceLocation)
            let outside = zip(got.indices, got).filter { abs(Double($1) - exact[$0]) > bound[$0] }
            #expect(outside.isEmpty, "\(what): \(outside.count) values outside float32 rounding, first at \(outside.first.map { "\($0.0): \($0.1) vs \(exact[$0.0]) ± \(bound[$0.0])" } ?? "")",
                    sourceLocation: sourceLocation)
        }
        for (name, path) in [("fused", fused), ("unfused", plain)] {
            withinBound(path.y, yExact, yBound, "\(name) y")
            withinBound(path.dGate, dGateExact, dGateBound, "\(name) dGate")
            withinBound(path.dUp, dUpExact, dUpBound, "\(name) dUp")
        }
        #expect((fused.dW == nil) == !weightTrains)
        // dW_oh = Σ_r dy_ro s_rh, a sum over the rows.
        var dWExact = [Double](repeating: 0, count: weightTrains ? outputs * hidden : 0), dWBound = dWExact
        if let a = fused.dW, let b = plain.dW {
            var exact = dWExact, bound = dWExact
            for r in 0..<count { for h in 0..<hidden {
                let x = g[r * hidden + h], sv = x / (1 + Foundation.exp(-x)) * u[r * hidden + h]
                for o in 0..<outputs {
                    exact[o * hidden + h] += d[r * outputs + o] * sv
                    bound[o * hidden + h] += abs(d[r * outputs + o] * sv)
                } } }
            bound = bound.map { gamma(count + 8) * $0 }
            withinBound(a, exact, bound, "fused dW")
            withinBound(b, exact, bound, "unfused dW")
            (dWExact, dWBound) = (exact, bound)
        }
        // The gated values are never on the tape, frozen weight or training.
        let y = try Tensor.swiGLUProjected(gate: gate0.detached().requiringGrad(), up: up0,
                                           weight: weightTrains ? w0.detached().requiringGrad() : w0)
        #expect(y.recordedOps == ["swiGLUProjected"])
        // Gradient accumulation: a second backward pass adds its weight gradient to the first's.
        if weightTrains {
            let w = w0.detached().requiringGrad()
            for _ in 0..<2 { try Tensor.swiGLUProjected(gate: gate0.detached(), up: up0.detached(), weight: w).backward(seed: seed) }
            // The second product may be summed onto the first in the kernel: twice the sum, rounded the same.
            withinBound(w.grad!.scalars, dWExact.map { 2 * $0 }, dWBound.map { 2 * $0 + 0x1p-23 * $0 },
                        "accumulated dW")
        }
    }

    @Test func swiGLUProjectedNamesAShapeMismatch() throws {
        let gate = Tensor.zeros([4, 6]), up = Tensor.zeros([4, 6])
        #expect(throws: TensorError.shapeMismatch(op: "swiGLUProjected (gated values vs weight [out, hidden])",
                                                  lhs: [4, 6], rhs: [3, 5])) {
            try Tensor.swiGLUProjected(gate: gate, up: up, weight: Tensor.zeros([3, 5]))
        }
        #expect(throws: TensorError.shapeMismatch(op: "swiGLU (gate vs up)", lhs: [4, 6], rhs: [4, 5])) {
            try Tensor.swiGLUProjected(gate: gate, up: Tensor.zeros([4, 5]), weight: Tensor.zeros([3, 6]))
        }
    }

    @Test func swiGLUWritesItsGradientsOverSavedInputsOnlyWhenNobodyElseHoldsThem() throws {
        var g = RandomGenerator(seed: 11)
        let x = Tensor.randomNormal([4, 25], generator: &g).requiringGrad()
        let wGate = Tensor.randomNormal([25], generator: &g), wUp = Tensor.randomNormal([25], generator: &g)
        // gate and up made on the tape and dropped after the forward pass: their storage may be reused.
        try Tensor.swiGLU(gate: x * wGate, up: x * wUp).sum().backward()
        let reused = x.grad!.scalars
        // The same with both held by the caller: fresh buffers, and the caller's values stay as they were.
        x.grad = nil
        let gate = try x * wGate, up = try x * wUp
        let gateBefore = gate.scalars, upBefore = up.scalars
        try Tensor.swiGLU(gate: gate, up: up).sum().backward()
        #expect(x.grad!.scalars == reused)
        #expect(gate.scalars == gateBefore && up.scalars == upBefore)
        // And both agree with the formula: d/dx Σ silu(a x) (b x) = a·σ(ax)(1 + ax(1 − σ(ax)))·bx + silu(ax)·b.
        let xs = x.scalars, a = wGate.scalars, b = wUp.scalars
        for i in xs.indices {
            let ax = a[i % 25] * xs[i], bx = b[i % 25] * xs[i], sigma = 1 / (1 + Foundation.exp(-ax))
            let expected = a[i % 25] * sigma * (1 + ax * (1 - sigma)) * bx + ax * sigma * b[i % 25]
            #expect(abs(reused[i] - expected) <= 1e-4 * max(1, abs(expected)))
        }
    }
}
