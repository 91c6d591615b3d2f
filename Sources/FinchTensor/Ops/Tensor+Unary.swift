/// exp, log, sqrt, rsqrt, tanh: element-wise, each with its derivative written beside it.
extension Tensor {
    /// Applies `forward` and records `backward(g, x, y)` for each element, keeping x and/or y alive only
    /// when the derivative reads them.
    @inline(__always)
    func unary(
        _ op: String, savesInput: Bool, savesOutput: Bool,
        forward: (Float) -> Float, backward: @escaping (Float, Float, Float) -> Float
    ) -> Tensor {
        let y = Elementwise.map(self, forward)
        guard Tensor.needsGradient(self) else { return y }
        let x = savesInput ? detached() : nil
        let out = savesOutput ? y.detached() : nil
        y.recordBackward(op, inputs: [self]) { g in
            let gx = Tensor(uninitializedShape: g.shape)
            let gp = g.storage.pointer, dst = gx.storage.pointer
            let xp = x?.storage.pointer, yp = out?.storage.pointer
            Parallel.forChunks(count: g.count) { r in
                for i in r { dst[i] = backward(gp[i], xp?[i] ?? 0, yp?[i] ?? 0) }
            }
            return [gx]
        }
        return y
    }

    // y = eˣ;  dx = g·y
    public func exp() -> Tensor {
        unary("exp", savesInput: false, savesOutput: true, forward: Math.exp) { g, _, y in g * y }
    }

    // y = ln x;  dx = g/x
    public func log() -> Tensor {
        unary("log", savesInput: true, savesOutput: false, forward: Math.log) { g, x, _ in g / x }
    }

    // y = √x;  dx = g/(2y)
    public func sqrt() -> Tensor {
        unary("sqrt", savesInput: false, savesOutput: true, forward: { $0.squareRoot() }) { g, _, y in g / (2 * y) }
    }

    // y = 1/√x;  dx = -g·y³/2
    public func rsqrt() -> Tensor {
        unary("rsqrt", savesInput: false, savesOutput: true, forward: { 1 / $0.squareRoot() }) { g, _, y in
            -0.5 * g * y * y * y
        }
    }

    // y = tanh x;  dx = g·(1 − y²)
    public func tanh() -> Tensor {
        unary("tanh", savesInput: false, savesOutput: true, forward: Math.tanh) { g, _, y in g * (1 - y * y) }
    }

    // y = σ(x) = 1/(1 + e⁻ˣ);  dx = g·y·(1 − y)
    public func sigmoid() -> Tensor {
        unary("sigmoid", savesInput: false, savesOutput: true, forward: { 1 / (1 + Math.exp(-$0)) }) { g, _, y in
            g * y * (1 - y)
        }
    }
}
