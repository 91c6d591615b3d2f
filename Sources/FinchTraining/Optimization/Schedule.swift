import Foundation
import FinchTensor

/// The learning rate as a pure function of the step (0-based):
/// warmup lr·(step+1)/warmup for step < warmup, then constant, or linear or cosine decay from lr to min_lr
/// over the remaining steps.
public struct LearningRateSchedule: Sendable, Equatable {
    public let kind: Recipe.Schedule
    public let peak: Double
    public let floor: Double
    public let warmupSteps: Int
    public let totalSteps: Int

    public init(kind: Recipe.Schedule, peak: Double, floor: Double, warmupSteps: Int, totalSteps: Int) {
        self.kind = kind
        self.peak = peak
        self.floor = floor
        self.warmupSteps = warmupSteps
        self.totalSteps = totalSteps
    }

    public func learningRate(at step: Int) -> Double {
        if step < warmupSteps { return peak * Double(step + 1) / Double(warmupSteps) }
        let span = max(1, totalSteps - warmupSteps - 1)
        let progress = min(1, Double(step - warmupSteps) / Double(span))
        switch kind {
        case .constant: return peak
        case .linear: return floor + (peak - floor) * (1 - progress)
        case .cosine: return floor + (peak - floor) * 0.5 * (1 + cos(Double.pi * progress))
        }
    }
}

/// PyTorch's `clip_grad_norm_`: the global L2 norm over every gradient, and when it exceeds `maxNorm`,
/// every gradient scaled by maxNorm / (norm + 1e-6). Returns the norm before clipping.
public func clipGradientNorm(_ parameters: [(name: String, tensor: Tensor)], maxNorm: Double) -> Double {
    var total = 0.0
    for (_, p) in parameters {
        guard let g = p.grad else { continue }
        var s: Float = 0
        for v in g.storage.buffer { s += v * v }
        total += Double(s)
    }
    let norm = total.squareRoot()
    guard maxNorm > 0 else { return norm }
    let coefficient = Float(maxNorm / (norm + 1e-6))
    if coefficient < 1 {
        for (_, p) in parameters {
            guard let g = p.grad else { continue }
            let gp = g.storage.pointer
            for i in 0..<g.count { gp[i] *= coefficient }
        }
    }
    return norm
}
