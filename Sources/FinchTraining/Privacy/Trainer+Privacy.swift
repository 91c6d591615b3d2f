import Foundation
import FinchFormats
import FinchTensor

/// The trainer's DP-SGD: a private step's gradient, the accountant a resumed run continues, and RUN_DIR/privacy.json.
extension Trainer {
    /// One step of DP-SGD: a Poisson-sampled batch, each example's gradient clipped to privacy.max_grad_norm and
    /// summed, Gaussian noise of σ · max_grad_norm added, the sum divided by the expected batch size; the accountant
    /// counts the step. Examples run training.batch_size at a time, their per-example gradients kept by one batched
    /// backward pass where every trainable tensor is a LoRA matrix, otherwise one example per pass. Returns the drawn
    /// examples' mean loss per target (nan for a batch without any), the positions computed, the norm of the noisy
    /// gradient, and the batch's size with how many of its examples were clipped.
    func privateGradient(step: Int, _ privacy: PrivacySettings) throws -> (loss: Double, positions: Int, norm: Double, drawn: (examples: Int, clipped: Int)?) {
        let seed = session.recipe.seed, data = session.trainData.sequences
        let batch = PrivacyStreams.batch(count: data.count, rate: privacy.sampleRate, seed: seed, step: step)
        let together = session.capturesPerExampleGradients ? session.recipe.batchSize : 1
        clippedSum.reset()
        var lossSum = 0.0, targets = 0, positions = 0, clipped = 0
        for start in stride(from: 0, to: batch.count, by: together) {
            let indices = Array(batch[start..<min(start + together, batch.count)])
            let examples = indices.map { data[$0] }
            let counts = session.targetCounts(examples), total = counts.reduce(0, +)
            // Sequences with nothing to predict have no gradient: they join the batch and add nothing.
            guard total > 0 else { continue }
            let sequences = indices.count == 1 ? "training sequence \(indices[0] + 1)" : "training sequences \(indices.map { "\($0 + 1)" }.joined(separator: ", "))"
            let capture = together > 1 ? PerExampleGradients(examples: examples.count, weights: session.trainable.map(\.tensor)) : nil
            func forwardAndBackward() throws -> (Double, Int) {
                let (loss, _, computed) = try session.loss(examples)
                let value = Double(try loss.item())
                guard value.isFinite else {
                    throw nonFinite("the loss of \(sequences) is \(value.isNaN ? "nan" : "\(value)")", step: step + 1)
                }
                try loss.backward()
                return (value, computed)
            }
            let (value, computed) = try capture.map { try $0.capturing(forwardAndBackward) } ?? forwardAndBackward()
            let norms: [Double]
            if let capture {
                if let stray = session.trainable.first(where: { $0.tensor.grad != nil }) {
                    throw TrainingError(message: "step \(step + 1): '\(stray.name)' took a gradient outside the per-example capture; privacy cannot clip it per example")
                }
                // The capture holds the gradients of the batch's mean over all its targets: × total / count makes
                // each the gradient of the example's own mean loss.
                norms = try clippedSum.addExamples(from: capture, scales: counts.map { $0 > 0 ? Double(total) / Double($0) : 0 },
                                                   maxNorm: privacy.maxGradNorm)
            } else {
                norms = [clippedSum.addExample(maxNorm: privacy.maxGradNorm)]
            }
            if let bad = norms.firstIndex(where: { !$0.isFinite }) {
                throw nonFinite("the gradient norm of training sequence \(indices[bad] + 1) is \(norms[bad].isNaN ? "nan" : "\(norms[bad])")", step: step + 1)
            }
            clipped += norms.filter { $0 > privacy.maxGradNorm }.count
            lossSum += value * Double(total)
            targets += total
            positions += computed
        }
        var noise = PrivacyStreams.noise(seed: seed, step: step)
        let norm = clippedSum.makeNoisyMean(noiseStandardDeviation: privacy.noiseMultiplier * privacy.maxGradNorm,
                                            expectedBatchSize: privacy.expectedBatchSize, generator: &noise)
        accountant.step(sampleRate: privacy.sampleRate, noiseMultiplier: privacy.noiseMultiplier)
        return (targets > 0 ? lossSum / Double(targets) : .nan, positions, norm, (batch.count, clipped))
    }

    /// The accountant a resumed private run continues: the checkpoint's, or — for steps a checkpoint took without
    /// privacy — steps of no noise, which leave ε unbounded (the run was not private before).
    static func resumedAccountant(_ state: CheckpointState, session: TrainingSession,
                                  checkpoint: String) throws -> RDPAccountant {
        if let saved = state.privacy {
            let counted = saved.history.reduce(0) { $0 + $1.steps }
            guard counted == state.step, saved.history.allSatisfy({ $0.steps > 0 && $0.noiseMultiplier >= 0
                && $0.sampleRate >= 0 && $0.sampleRate <= 1 }) else {
                throw RecipeError(file: "\(checkpoint)/state.json", "privacy: the accountant counts \(counted) steps, the checkpoint \(state.step) (or holds a sampling rate outside [0, 1] or a negative noise multiplier)")
            }
            return saved
        }
        var accountant = RDPAccountant()
        if session.privacy != nil {
            for _ in 0..<state.step { accountant.step(sampleRate: 1, noiseMultiplier: 0) }
        }
        return accountant
    }

    /// RUN_DIR/privacy.json: the mechanism's settings and the ε spent through `step` at the run's δ.
    func writePrivacyReport(step: Int) throws {
        guard let privacy = session.privacy else { return }
        let (epsilon, order) = accountant.epsilon(delta: privacy.delta)
        var object: [String: Any] = [
            "mechanism": "DP-SGD: per-example clipping, Gaussian noise, Poisson sampling",
            "accountant": "RDP (Opacus' orders and conversion)",
            "steps": step, "noise_multiplier": privacy.noiseMultiplier, "max_grad_norm": privacy.maxGradNorm,
            "sample_rate": privacy.sampleRate, "expected_batch_size": privacy.expectedBatchSize,
            "examples": session.trainData.sequences.count, "delta": privacy.delta,
            "epsilon": epsilon.isFinite ? epsilon : "inf",
        ]
        if order.isFinite { object["order"] = order }
        if let target = privacy.targetEpsilon { object["target_epsilon"] = target }
        let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
        try AtomicFile.write(data + Data("\n".utf8), to: (runDirectory as NSString).appendingPathComponent("privacy.json"))
    }
}
