/// The activations of transformer MLPs: SiLU (LLaMA's SwiGLU) and GELU (GPT-2), each with its derivative.
extension Tensor {
    // y = x·σ(x);  dy/dx = σ(x)·(1 + x·(1 − σ(x)))
    public func silu() -> Tensor {
        unary("silu", savesInput: true, savesOutput: false, forward: { x in x / (1 + Math.exp(-x)) }) { g, x, _ in
            let s = 1 / (1 + Math.exp(-x))
            return g * s * (1 + x * (1 - s))
        }
    }

    public enum GELUApproximation: Sendable {
        /// 0.5·x·(1 + erf(x/√2)), as PyTorch's default `gelu`.
        case none
        /// 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), GPT-2's `gelu_new`.
        case tanh
    }

    public func gelu(approximation: GELUApproximation = .none) -> Tensor {
        switch approximation {
        case .none:
            // dy/dx = Φ(x) + x·φ(x), with Φ the normal CDF and φ its density.
            return unary("gelu", savesInput: true, savesOutput: false,
                         forward: { x in 0.5 * x * (1 + Math.erf(x * 0.70710678118654752)) }) { g, x, _ in
                let cdf = 0.5 * (1 + Math.erf(x * 0.70710678118654752))
                let pdf = Math.exp(-0.5 * x * x) * 0.3989422804014327
                return g * (cdf + x * pdf)
            }
        case .tanh:
            // u = c·(x + 0.044715x³), t = tanh u;  dy/dx = 0.5(1 + t) + 0.5·x·(1 − t²)·c·(1 + 3·0.044715x²)
            let c: Float = 0.7978845608028654
            return unary("gelu_tanh", savesInput: true, savesOutput: false,
                         forward: { x in 0.5 * x * (1 + Math.tanh(c * (x + 0.044715 * x * x * x))) }) { g, x, _ in
                let t = Math.tanh(c * (x + 0.044715 * x * x * x))
                return g * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * 0.044715 * x * x))
            }
        }
    }
}
