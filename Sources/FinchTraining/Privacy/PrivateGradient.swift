import Foundation
import FinchTensor

/// DP-SGD's settings for one run, resolved from the recipe's `privacy:` section and the training data: the noise
/// multiplier σ (given, or chosen for a target ε), the clipping norm C, δ, and the Poisson sampling rate q.
public struct PrivacySettings: Equatable, Sendable {
    public var noiseMultiplier: Double
    public var maxGradNorm: Double
    public var delta: Double
    /// The chance q that each example joins a step's batch.
    public var sampleRate: Double
    /// q · N: the batch size the noisy sum is divided by (Opacus' `expected_batch_size`).
    public var expectedBatchSize: Int
    /// The ε the noise multiplier was chosen for (nil: `privacy.noise_multiplier` was given).
    public var targetEpsilon: Double?

    public init(noiseMultiplier: Double, maxGradNorm: Double, delta: Double, sampleRate: Double,
                expectedBatchSize: Int, targetEpsilon: Double? = nil) {
        self.noiseMultiplier = noiseMultiplier
        self.maxGradNorm = maxGradNorm
        self.delta = delta
        self.sampleRate = sampleRate
        self.expectedBatchSize = expectedBatchSize
        self.targetEpsilon = targetEpsilon
    }
}

extension PrivacySettings {
    /// The line a private run starts with: its mechanism and the ε it will have spent after `steps` steps.
    public func summary(steps: Int) -> String {
        var whole = RDPAccountant()
        for _ in 0..<steps { whole.step(sampleRate: sampleRate, noiseMultiplier: noiseMultiplier) }
        let epsilon = whole.epsilon(delta: delta).epsilon
        return String(format: "privacy: DP-SGD, noise multiplier %.4g, per-example clip %.4g, Poisson sampling rate %.4g (batches of %ld on average), δ %.3g: ε %@ after %ld steps",
                      noiseMultiplier, maxGradNorm, sampleRate, expectedBatchSize, delta,
                      epsilon.isFinite ? String(format: "%.3f", epsilon) : "unbounded", steps)
    }
}

/// The random streams of a private run, each a function of (seed, step) alone, so a resumed run draws the same
/// batches and the same noise as the run it continues without any generator state in the checkpoint.
public enum PrivacyStreams {
    /// A generator that depends on (seed, step) and `stream` alone: one per purpose and step of a run.
    static func generator(seed: Int, step: Int, stream: UInt64) -> RandomGenerator {
        RandomGenerator(seed: (UInt64(truncatingIfNeeded: seed) &* 0x9E37_79B9_7F4A_7C15)
            ^ (UInt64(truncatingIfNeeded: step) &* 0xBF58_476D_1CE4_E5B9) ^ stream)
    }

    /// Poisson sampling: each of `count` examples joins step `step`'s batch with probability `rate`, on its own;
    /// the indices that joined, in order. The batch's size varies from step to step (it may be empty), which is
    /// what the accountant's sampled Gaussian mechanism assumes.
    public static func batch(count: Int, rate: Double, seed: Int, step: Int) -> [Int] {
        var generator = generator(seed: seed, step: step, stream: 0x5A4D_504C_4500_0001)
        return (0..<count).filter { _ in generator.nextUniformDouble() < rate }
    }

    /// The generator of step `step`'s Gaussian noise.
    public static func noise(seed: Int, step: Int) -> RandomGenerator {
        generator(seed: seed, step: step, stream: 0x4E4F_4953_4500_0002)
    }
}

/// The sum of per-example gradients, each clipped to an L2 norm of at most C over every trainable tensor together,
/// and the step's gradient made from it: (sum + N(0, σ²C²)) / expected batch size, as Opacus' DPOptimizer makes it
/// with flat clipping and a mean loss. Each example's gradient is the one its own backward pass leaves in the
/// parameters' `grad`; this adds it, scaled, and clears it for the next example, so one example's gradient is held
/// at a time beside the sum (never a copy per example).
public final class ClippedGradientSum {
    public let parameters: [(name: String, tensor: Tensor)]
    private let sums: [Tensor]

    public init(parameters: [(name: String, tensor: Tensor)]) {
        self.parameters = parameters
        sums = parameters.map { Tensor.zeros($0.tensor.shape) }
    }

    /// Clears the sum for a new step.
    public func reset() {
        for s in sums { s.storage.pointer.update(repeating: 0, count: s.count) }
    }

    /// The L2 norm of the gradient the parameters hold (a parameter without one counts as zero).
    public func currentNorm() -> Double {
        var total = 0.0
        for (_, p) in parameters {
            guard let g = p.grad else { continue }
            let gp = g.storage.pointer
            var partial = 0.0
            for i in 0..<g.count { partial += Double(gp[i]) * Double(gp[i]) }
            total += partial
        }
        return total.squareRoot()
    }

    /// Opacus' clipping factor for a gradient of norm `norm`: min(1, C / (norm + 10⁻⁶)).
    public static func clipFactor(norm: Double, maxNorm: Double) -> Double { min(1, maxNorm / (norm + 1e-6)) }

    /// Adds the parameters' current gradient (one example's) clipped to `maxNorm`, and clears it. Returns the
    /// example's norm before clipping.
    @discardableResult
    public func addExample(maxNorm: Double) -> Double {
        let norm = currentNorm()
        let factor = Float(Self.clipFactor(norm: norm, maxNorm: maxNorm))
        for (i, (_, p)) in parameters.enumerated() {
            guard let g = p.grad else { continue }
            let sp = sums[i].storage.pointer, gp = g.storage.pointer
            for j in 0..<g.count { sp[j] += factor * gp[j] }
            p.zeroGrad()
        }
        return norm
    }

    /// Adds the per-example gradients `capture` holds for every parameter, example e's multiplied by `scales[e]`
    /// (the capture kept the gradient of the batch's loss; the scale makes it the example's own), each clipped to
    /// `maxNorm`. Returns the examples' norms before clipping.
    public func addExamples(from capture: PerExampleGradients, scales: [Double], maxNorm: Double) throws -> [Double] {
        let slots = try parameters.map { name, p in
            guard let slot = capture.gradients(of: p) else {
                throw TensorError.invalidArgument(op: "per-example clipping", message: "no per-example gradient was kept for '\(name)'")
            }
            return slot
        }
        var squares = [Double](repeating: 0, count: capture.examples)
        for slot in slots {
            let width = slot.count / capture.examples, sp = slot.storage.pointer
            for e in 0..<capture.examples {
                var partial = 0.0
                for j in e * width..<(e + 1) * width { partial += Double(sp[j]) * Double(sp[j]) }
                squares[e] += partial
            }
        }
        let norms = zip(squares, scales).map { $0.squareRoot() * $1 }
        let factors = zip(norms, scales).map { Float(Self.clipFactor(norm: $0, maxNorm: maxNorm) * $1) }
        for (i, slot) in slots.enumerated() {
            let width = slot.count / capture.examples, sp = slot.storage.pointer, sum = sums[i].storage.pointer
            for e in 0..<capture.examples where factors[e] != 0 {
                let f = factors[e], row = sp + e * width
                for j in 0..<width { sum[j] += f * row[j] }
            }
        }
        return norms
    }

    /// The clipped sum of `name` so far (for tests).
    public func sum(of name: String) -> Tensor? { parameters.firstIndex { $0.name == name }.map { sums[$0] } }

    /// Sets every parameter's `grad` to (sum + noise) / `expectedBatchSize`, the noise N(0, σ²) per value with
    /// σ = `noiseStandardDeviation`, drawn from `generator` parameter by parameter, value by value; returns the
    /// norm of the result.
    @discardableResult
    public func makeNoisyMean(noiseStandardDeviation sigma: Double, expectedBatchSize: Int,
                              generator: inout RandomGenerator) -> Double {
        let scale = Float(1 / Double(expectedBatchSize)), sigma = Float(sigma)
        var total = 0.0
        for (i, (_, p)) in parameters.enumerated() {
            let gradient = Tensor.zeros(p.shape)
            let sp = sums[i].storage.pointer, gp = gradient.storage.pointer
            for j in 0..<gradient.count {
                let noise = sigma > 0 ? sigma * generator.nextNormal() : 0
                gp[j] = (sp[j] + noise) * scale
                total += Double(gp[j]) * Double(gp[j])
            }
            p.grad = gradient
        }
        return total.squareRoot()
    }
}
