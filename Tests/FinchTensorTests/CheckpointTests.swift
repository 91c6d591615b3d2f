import Testing
@testable import FinchTensor

/// Activation checkpointing: the same gradients as the plain graph, and the block's intermediates gone
/// after the forward pass.
@Suite("activation checkpointing")
struct CheckpointTests {
    /// Everything the test block reads besides its input: two weights and the dropout generator.
    final class Block {
        let w1: Tensor, w2: Tensor
        var generator = RandomGenerator(seed: 5)
        weak var lastHidden: TensorStorage?

        init() {
            var g = RandomGenerator(seed: 3)
            w1 = Tensor.randomNormal([6, 4], standardDeviation: 0.5, generator: &g).requiringGrad()
            w2 = Tensor.randomNormal([4, 6], standardDeviation: 0.5, generator: &g).requiringGrad()
        }

        /// x [n, 4] → x + tanh(dropout(x) · w1ᵀ) · w2ᵀ … a residual block with dropout and a value used twice.
        func callAsFunction(_ x: Tensor) throws -> Tensor {
            let hidden = try x.dropout(probability: 0.3, generator: &generator).matmul(w1, transposeOther: true)
            lastHidden = hidden.storage
            let mixed = try (hidden * hidden.tanh()).matmul(w2, transposeOther: true)
            return try x + mixed
        }
    }

    /// Two blocks after a trainable input transform; returns the gradients of every leaf.
    func gradients(checkpointed: Bool) throws -> [[Float]] {
        var g = RandomGenerator(seed: 1)
        let input = Tensor.randomNormal([5, 4], generator: &g)
        let scale = Tensor.randomNormal([4], generator: &g).requiringGrad()
        let blocks = [Block(), Block()]
        var x = try input * scale  // made on the tape: the checkpoint must pass its gradient on
        for block in blocks {
            x = checkpointed ? try Tensor.checkpoint([x]) { try block($0[0]) } : try block(x)
        }
        try (x * x).sum().backward()
        return [scale.grad!.scalars] + blocks.flatMap { [$0.w1.grad!.scalars, $0.w2.grad!.scalars] }
    }

    @Test func gradientsAreThoseOfThePlainGraph() throws {
        let plain = try gradients(checkpointed: false)
        let checkpointed = try gradients(checkpointed: true)
        #expect(plain.count == 5)
        // The second run computes the same values with the same dropout masks, so the sums are bitwise equal.
        #expect(plain == checkpointed)
        #expect(plain.allSatisfy { $0.contains { $0 != 0 } })
    }

    @Test func theBlockKeepsNothingAfterTheForwardPass() throws {
        let block = Block()
        let x = Tensor.ones([5, 4]).requiringGrad()
        let plain = try block(x)
        #expect(block.lastHidden != nil)  // the product's backward holds its values
        let checkpointed = try Tensor.checkpoint([x]) { try block($0[0]) }
        #expect(block.lastHidden == nil)
        #expect(checkpointed.requiresGrad)
        _ = plain
    }

    /// On a block's second run, a fused down projection and the residual sum that alone reads it wait for a read;
    /// what nothing read is given up (NaN if ever read), and everything else is computed at once, as always.
    @Test func aSecondRunLeavesTheUnreadOutputUncomputed() throws {
        let rows = 600, hidden = 40, outputs = 24
        let gate = Inputs.normal([rows, hidden], seed: 1).requiringGrad(), up = Inputs.normal([rows, hidden], seed: 2)
        let w = Inputs.normal([outputs, hidden], seed: 3), residual = Inputs.normal([rows, outputs], seed: 4)
        #expect(GEMM.split(m: rows, n: outputs, k: hidden) == .rows)  // the fused path
        let eager = try residual + Tensor.swiGLUProjected(gate: gate, up: up, weight: w)
        let recomputation = Recomputation()
        let (projected, sum, plainSum) = try Recomputation.$current.withValue(recomputation) {
            let projected = try Tensor.swiGLUProjected(gate: gate, up: up, weight: w)
            return (projected, try residual + projected, try residual + residual)
        }
        #expect(projected.valuesArePending && sum.valuesArePending && !plainSum.valuesArePending)
        #expect(recomputation.deferred.count == 2)
        // Read, they are the values computed at once.
        #expect(sum.scalars == eager.scalars && !projected.valuesArePending)
        let unread = try Recomputation.$current.withValue(recomputation) {
            try residual + Tensor.swiGLUProjected(gate: gate, up: up, weight: w)
        }
        recomputation.discardUnread()
        let allNaN = unread.scalars.allSatisfy { $0.isNaN }
        #expect(allNaN)
        #expect(!unread.valuesArePending && recomputation.deferred.isEmpty)
    }

    @Test func withoutGradientsTheBlockSimplyRuns() throws {
        let x = Inputs.normal([5, 4], seed: 9).requiringGrad()
        // Two blocks made alike (the same weights and dropout seed): one run plainly, one through the checkpoint.
        let plain = try Block()(x)
        let y = try GradientMode.withoutGradients { try Tensor.checkpoint([x]) { try Block()($0[0]) } }
        #expect(!y.requiresGrad)
        #expect(y.shape == [5, 4])
        #expect(y.scalars == plain.scalars)
        #expect(y.scalars != x.scalars)
    }

    @Test func aBlockThatChangesBetweenRunsIsAnError() throws {
        var runs = 0
        let x = Tensor.ones([2, 3]).requiringGrad()
        let y = try Tensor.checkpoint([x]) { t in
            runs += 1
            return runs == 1 ? t[0] * 2 : try t[0].sum(axis: 1)
        }
        #expect(throws: TensorError.self) { try y.sum().backward() }
    }
}
