import Testing
@testable import FinchTensor

/// Central-difference gradient checking.
///
/// The function under test maps input tensors to an output y; the checked scalar is L = Σ y ⊙ w for a
/// fixed random w, so every output element contributes. L is summed in Double from the float32 outputs;
/// the perturbation is the one actually stored in float32.
struct GradientCheck {
    struct Result {
        var worstError = 0.0
        var worstInput = -1
        var worstIndex = -1
        var scale = 0.0
        var description: String { "worst |analytic − numeric| = \(worstError) at input \(worstInput)[\(worstIndex)], gradient scale \(scale)" }
    }

    /// Largest difference between analytic and numeric gradients, relative to max(1, largest gradient).
    static func measure(
        _ inputs: [Tensor], step: Float = 1e-2, seed: UInt64 = 7, _ f: ([Tensor]) throws -> Tensor
    ) throws -> Result {
        for x in inputs { x.requiresGrad = true; x.grad = nil }
        let y = try f(inputs)
        var generator = RandomGenerator(seed: seed)
        let w = Tensor.randomUniform(y.shape, low: -1, high: 1, generator: &generator)
        try (y * w).sum().backward()

        func objective() throws -> Double {
            try GradientMode.withoutGradients {
                let out = try f(inputs)
                return zip(out.scalars, w.scalars).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
            }
        }

        var result = Result()
        var numeric: [[Double]] = []
        for x in inputs {
            var column: [Double] = []
            let p = x.storage.pointer
            for i in 0..<x.count {
                let original = p[i]
                p[i] = original + step
                let plusValue = p[i]
                let plus = try objective()
                p[i] = original - step
                let minusValue = p[i]
                let minus = try objective()
                p[i] = original
                column.append((plus - minus) / (Double(plusValue) - Double(minusValue)))
            }
            numeric.append(column)
        }
        result.scale = max(1, numeric.flatMap { $0 }.map(abs).max() ?? 0)
        for (n, x) in inputs.enumerated() {
            let analytic = x.grad?.scalars ?? [Float](repeating: 0, count: x.count)
            for i in 0..<x.count {
                let e = abs(Double(analytic[i]) - numeric[n][i]) / result.scale
                if e > result.worstError { result = Result(worstError: e, worstInput: n, worstIndex: i, scale: result.scale) }
            }
        }
        return result
    }

    /// Records a test failure when the analytic gradient of `f` is off by more than `tolerance`.
    static func check(
        _ inputs: [Tensor], tolerance: Double = 1e-3, step: Float = 1e-2,
        sourceLocation: SourceLocation = #_sourceLocation,
        _ f: ([Tensor]) throws -> Tensor
    ) throws {
        let result = try measure(inputs, step: step, f)
        #expect(result.worstError <= tolerance, "\(result.description)", sourceLocation: sourceLocation)
    }
}

/// Seeded test inputs.
enum Inputs {
    static func normal(_ shape: [Int], seed: UInt64 = 1, std: Float = 1) -> Tensor {
        var g = RandomGenerator(seed: seed)
        return Tensor.randomNormal(shape, standardDeviation: std, generator: &g)
    }

    static func uniform(_ shape: [Int], _ low: Float, _ high: Float, seed: UInt64 = 1) -> Tensor {
        var g = RandomGenerator(seed: seed)
        return Tensor.randomUniform(shape, low: low, high: high, generator: &g)
    }
}

func expectClose(_ a: [Float], _ b: [Float], tolerance: Float = 1e-5,
                 sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(a.count == b.count, "counts \(a.count) vs \(b.count)", sourceLocation: sourceLocation)
    let worst = zip(a, b).map { abs($0 - $1) }.max() ?? 0
    #expect(worst <= tolerance, "worst difference \(worst) > \(tolerance)", sourceLocation: sourceLocation)
}
