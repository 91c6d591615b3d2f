import FinchTensor

/// AdamW exactly as PyTorch's `torch.optim.AdamW` (single-tensor path), with state keyed by parameter name:
///
///     θ ← θ · (1 − lr·λ)
///     m ← β₁ m + (1 − β₁) g          v ← β₂ v + (1 − β₂) g²
///     θ ← θ − (lr / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε)
public final class AdamW {
    public struct Moments {
        public let first: Tensor
        public let second: Tensor
    }

    public let parameters: [(name: String, tensor: Tensor)]
    public var beta1: Float
    public var beta2: Float
    public var epsilon: Float
    public var weightDecay: Float
    /// Optimizer steps taken (t in the bias corrections).
    public private(set) var step = 0
    public private(set) var moments: [String: Moments] = [:]

    public init(parameters: [(name: String, tensor: Tensor)], betas: (Float, Float) = (0.9, 0.999),
                epsilon: Float = 1e-8,
                weightDecay: Float = 0) {
        self.parameters = parameters
        beta1 = betas.0
        beta2 = betas.1
        self.epsilon = epsilon
        self.weightDecay = weightDecay
        for (name, t) in parameters {
            moments[name] = Moments(first: Tensor.zeros(t.shape), second: Tensor.zeros(t.shape))
        }
    }

    /// One update with learning rate `lr`; parameters without a gradient are left alone.
    public func update(learningRate lr: Double) {
        step += 1
        // The scalar factors in Double, as PyTorch computes them in Python floats.
        let bc1 = 1 - Double(beta1).powInt(step)
        let bc2 = 1 - Double(beta2).powInt(step)
        let stepSize = Float(lr / bc1)
        let bc2Sqrt = Float(bc2.squareRoot())
        let decay = Float(1 - lr * Double(weightDecay))
        let b2 = beta2, eps = epsilon
        let oneMinusB1 = 1 - beta1, oneMinusB2 = 1 - beta2
        for (name, p) in parameters {
            guard let g = p.grad, let m = moments[name] else { continue }
            let pp = p.storage.pointer, gp = g.storage.pointer
            let mp = m.first.storage.pointer, vp = m.second.storage.pointer
            Parallel.forChunks(count: p.count) { range in
                // Eight lanes at a time, each the same operations in the same order as the scalar tail below,
                // so the result is bitwise the one the scalar loop gives (the pointers may alias for all the
                // compiler knows, so it would not vectorise that loop itself).
                var i = range.lowerBound
                while i + 8 <= range.upperBound {
                    var p8 = UnsafeRawPointer(pp + i).loadUnaligned(as: SIMD8<Float>.self)
                    let g8 = UnsafeRawPointer(gp + i).loadUnaligned(as: SIMD8<Float>.self)
                    var m8 = UnsafeRawPointer(mp + i).loadUnaligned(as: SIMD8<Float>.self)
                    var v8 = UnsafeRawPointer(vp + i).loadUnaligned(as: SIMD8<Float>.self)
                    p8 *= decay
                    m8 += (g8 - m8) * oneMinusB1
                    v8 = v8 * b2 + oneMinusB2 * g8 * g8
                    let denom = v8.squareRoot() / bc2Sqrt + eps
                    p8 -= stepSize * (m8 / denom)
                    UnsafeMutableRawPointer(pp + i).storeBytes(of: p8, as: SIMD8<Float>.self)
                    UnsafeMutableRawPointer(mp + i).storeBytes(of: m8, as: SIMD8<Float>.self)
                    UnsafeMutableRawPointer(vp + i).storeBytes(of: v8, as: SIMD8<Float>.self)
                    i += 8
                }
                for i in i..<range.upperBound {
                    pp[i] *= decay
                    mp[i] += (gp[i] - mp[i]) * oneMinusB1  // lerp, as PyTorch
                    vp[i] = vp[i] * b2 + oneMinusB2 * gp[i] * gp[i]
                    let denom = vp[i].squareRoot() / bc2Sqrt + eps
                    pp[i] -= stepSize * (mp[i] / denom)
                }
            }
        }
    }

    /// Restores the step count and moments saved by a checkpoint.
    public func restore(step: Int, moments saved: [String: (first: [Float], second: [Float])]) throws {
        for (name, p) in parameters {
            guard let s = saved[name], s.first.count == p.count, s.second.count == p.count, let m = moments[name] else {
                throw TensorError.invalidArgument(op: "AdamW.restore",
                                                  message: "no saved moments of \(p.count) values for '\(name)'")
            }
            m.first.storage.buffer.update(from: s.first)
            m.second.storage.buffer.update(from: s.second)
        }
        self.step = step
    }
}

extension Double {
    func powInt(_ n: Int) -> Double {
        var r = 1.0
        for _ in 0..<n { r *= self }
        return r
    }
}

extension UnsafeMutableBufferPointer where Element == Float {
    func update(from values: [Float]) {
        values.withUnsafeBufferPointer { src in
            if let s = src.baseAddress, let d = baseAddress { d.update(from: s, count: Swift.min(count, src.count)) }
        }
    }
}
