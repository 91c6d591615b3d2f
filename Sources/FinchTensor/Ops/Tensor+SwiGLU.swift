/// LLaMA's gated activation, fused: silu(gate) ⊙ up in one pass, without the silu tensor in between.
///
/// With σ = sigmoid(gate) and s = gate·σ:  y = s · up,
///   d_up = g · s,   d_gate = g · up · σ · (1 + gate · (1 − σ)).
extension Tensor {
    public static func swiGLU(gate: Tensor, up: Tensor) throws -> Tensor {
        guard gate.shape == up.shape else { throw TensorError.shapeMismatch(op: "swiGLU (gate vs up)", lhs: gate.shape, rhs: up.shape) }
        let y = Tensor(uninitializedShape: gate.shape)
        let gp = gate.storage.pointer, upp = up.storage.pointer, yp = y.storage.pointer
        Parallel.forChunks(count: y.count) { r in
            var i = r.lowerBound
            while i + 8 <= r.upperBound {
                let g8 = UnsafeRawPointer(gp + i).loadUnaligned(as: SIMD8<Float>.self)
                let u8 = UnsafeRawPointer(upp + i).loadUnaligned(as: SIMD8<Float>.self)
                let sigma = 1 / (1 + Math.exp8(-g8))
                UnsafeMutableRawPointer(yp + i).storeBytes(of: g8 * sigma * u8, as: SIMD8<Float>.self)
                i += 8
            }
            while i < r.upperBound {
                yp[i] = gp[i] / (1 + Math.exp(-gp[i])) * upp[i]
                i += 1
            }
        }
        guard needsGradient(gate, up) else { return y }
        let savedGate = gate.detached(), savedUp = up.detached()
        let gateNeeds = gate.requiresGrad, upNeeds = up.requiresGrad
        y.recordBackward("swiGLU", inputs: [gate, up]) { g in
            // The saved inputs die with this step: when nothing else holds their storage, the gradients are
            // written over them (each element is read before it is written), which saves two [.., hidden]
            // buffers at the top of the backward pass.
            let dGate = gateNeeds ? savedGate.reusedOrFresh(shape: g.shape) : nil
            let dUp = upNeeds ? savedUp.reusedOrFresh(shape: g.shape) : nil
            let dp = g.storage.pointer, gp = savedGate.storage.pointer, upp = savedUp.storage.pointer
            let dgp = dGate?.storage.pointer, dup = dUp?.storage.pointer
            Parallel.forChunks(count: g.count) { r in
                var i = r.lowerBound
                while i + 8 <= r.upperBound {
                    let d8 = UnsafeRawPointer(dp + i).loadUnaligned(as: SIMD8<Float>.self)
                    let g8 = UnsafeRawPointer(gp + i).loadUnaligned(as: SIMD8<Float>.self)
                    let u8 = UnsafeRawPointer(upp + i).loadUnaligned(as: SIMD8<Float>.self)
                    let sigma = 1 / (1 + Math.exp8(-g8))
                    if let dup { UnsafeMutableRawPointer(dup + i).storeBytes(of: d8 * g8 * sigma, as: SIMD8<Float>.self) }
                    if let dgp {
                        UnsafeMutableRawPointer(dgp + i).storeBytes(of: d8 * u8 * sigma * (1 + g8 * (1 - sigma)), as: SIMD8<Float>.self)
                    }
                    i += 8
                }
                while i < r.upperBound {
                    let d = dp[i], gv = gp[i], uv = upp[i]
                    let sigma = 1 / (1 + Math.exp(-gv))
                    dup?[i] = d * gv * sigma
                    dgp?[i] = d * uv * sigma * (1 + gv * (1 - sigma))
                    i += 1
                }
            }
            return [dGate, dUp]
        }
        return y
    }
}
