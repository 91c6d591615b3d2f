import Testing
@testable import FinchTensor

/// Products with a quantised frozen weight: the same as with its dequantised float32 copy, in both directions,
/// and the same bit for bit from run to run.
@Suite("quantised matrix products")
struct QuantizedMatrixTests {
    static func random(_ shape: [Int], seed: UInt64, scale: Float = 1) -> Tensor {
        var generator = RandomGenerator(seed: seed)
        let t = Tensor(uninitializedShape: shape)
        for i in 0..<t.count { t.storage.buffer[i] = scale * (generator.nextUniform() * 2 - 1) }
        return t
    }

    static func maxRelative(_ a: Tensor, _ b: Tensor) -> Float {
        var worst: Float = 0, largest: Float = 0
        for i in 0..<a.count {
            worst = max(worst, abs(a.storage.buffer[i] - b.storage.buffer[i]))
            largest = max(largest, abs(b.storage.buffer[i]))
        }
        return worst / max(largest, 1e-30)
    }

    /// Shapes with a partial last panel of rows, one row of x (decoding), and a batch axis.
    @Test(arguments: [([2, 5, 192], 300), ([1, 128], 129), ([7, 64], 64), ([3, 64], 9000)])
    func productsEqualTheDequantisedWeights(_ xShape: [Int], _ rows: Int) throws {
        let k = xShape.last!
        let w = try QuantizedMatrix.nf4(Self.random([rows, k], seed: 1, scale: 0.05))
        let dense = w.dequantized()
        let x = Self.random(xShape, seed: 2)
        x.requiresGrad = true
        let y = try x.matmul(quantized: w)
        let reference = try x.detached().matmul(dense, transposeOther: true)
        #expect(y.shape == reference.shape)
        #expect(Self.maxRelative(y, reference) <= 1e-5)
        let g = Self.random(y.shape, seed: 3)
        try y.backward(seed: g)
        let dx = try #require(x.grad)
        let dxReference = try g.matmul(dense)
        #expect(Self.maxRelative(dx, try dxReference.reshaped(xShape)) <= 1e-5)
        // The same again, bit for bit.
        let again = try x.detached().matmul(quantized: w)
        #expect(again.scalars.map(\.bitPattern) == y.scalars.map(\.bitPattern))
    }

    /// The head's loss over a quantised table equals the loss over its dequantised copy, with the same gradient
    /// for the hidden states, in several chunks and with ignored rows; and row lookups are the copy's rows.
    @Test func theLossOverAQuantisedHeadEqualsTheDequantisedHeads() throws {
        let w = try QuantizedMatrix.nf4(Self.random([300, 128], seed: 4, scale: 0.1))
        let dense = w.dequantized()
        let targets: [Int32] = [3, -100, 299, 0, 17, -100, 150, 42, 8]
        var losses: [Float] = [], gradients: [Tensor] = []
        for quantised in [true, false] {
            let hidden = Self.random([targets.count, 128], seed: 5)
            hidden.requiresGrad = true
            let loss = quantised
                ? try Tensor.linearCrossEntropy(hidden: hidden, quantizedWeight: w, targets: targets, chunkRows: 3)
                : try Tensor.linearCrossEntropy(hidden: hidden, weight: dense, targets: targets, chunkRows: 3)
            try loss.backward()
            losses.append(loss.scalars[0])
            gradients.append(try #require(hidden.grad))
        }
        #expect(abs(losses[0] - losses[1]) <= 1e-5 * abs(losses[1]))
        #expect(Self.maxRelative(gradients[0], gradients[1]) <= 1e-5)
        let ids: [Int32] = [299, 0, 7, 7]
        #expect(try w.rows(ids, shape: [2, 2]).scalars == (try dense.gatherRows(ids, indexShape: [2, 2])).scalars)
        #expect(throws: TensorError.self) { try w.rows([300], shape: [1]) }
        #expect(throws: TensorError.self) { try Tensor.linearCrossEntropy(hidden: Self.random([2, 64], seed: 1), quantizedWeight: w, targets: [1, 2]) }
    }

    @Test func aShapeMismatchIsNamed() throws {
        let w = try QuantizedMatrix.nf4(Self.random([8, 64], seed: 1))
        #expect(throws: TensorError.self) { try Self.random([3, 32], seed: 2).matmul(quantized: w) }
        #expect(throws: TensorError.self) { try QuantizedMatrix.nf4(Self.random([8, 48], seed: 1)) }
        #expect(w.byteCount < 8 * 64 * 4 / 6)
    }
}
