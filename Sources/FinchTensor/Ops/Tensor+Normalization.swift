/// RMSNorm (LLaMA) and LayerNorm (GPT-2) over the last axis, fused: one pass forward, one backward.
/// x [..., D], weight and bias [D]; statistics per row are kept for the backward.
extension Tensor {
    func checkNormWeight(_ w: Tensor, _ op: String) throws -> Int {
        let d = shape.last ?? 0
        guard w.shape == [d] else { throw TensorError.shapeMismatch(op: op, lhs: shape, rhs: w.shape) }
        return d
    }

    /// y = w ⊙ x / √(mean(x²) + ε)
    ///
    /// With r = 1/√(mean(x²) + ε), x̂ = r·x and ĝ = g ⊙ w:
    /// dw = Σ_rows g ⊙ x̂,  dx = r · (ĝ − x̂ · mean(ĝ ⊙ x̂)).
    ///
    /// The backward keeps the output rather than the input, x̂ = y / w (ĝ ⊙ x̂ = g ⊙ y): what reads the norm's
    /// output (the projections after it, the fused head) usually keeps it anyway, so the input (the residual
    /// stream) need not be kept for the norm. A weight with a zero or subnormal element cannot give x̂ back; then
    /// the backward keeps the input instead.
    public func rmsNorm(weight: Tensor, epsilon: Float) throws -> Tensor {
        let d = try checkNormWeight(weight, "rmsNorm")
        let rows = count / max(d, 1)
        let y = Tensor(uninitializedShape: shape)
        let rstd = Tensor(uninitializedShape: [rows])
        let xp = storage.pointer, wp = weight.storage.pointer, yp = y.storage.pointer, rp = rstd.storage.pointer
        withExtendedLifetime(rstd) {
        Parallel.forRows(rows, rowLength: d) { r in
            let x = xp + r * d, o = yp + r * d
            let inv = 1 / (Tensor.dot(x, x, d) / Float(d) + epsilon).squareRoot()
            rp[r] = inv
            var j = 0
            while j + 8 <= d {
                let x8 = UnsafeRawPointer(x + j).loadUnaligned(as: SIMD8<Float>.self)
                let w8 = UnsafeRawPointer(wp + j).loadUnaligned(as: SIMD8<Float>.self)
                UnsafeMutableRawPointer(o + j).storeBytes(of: w8 * (x8 * inv), as: SIMD8<Float>.self)
                j += 8
            }
            while j < d { o[j] = wp[j] * (x[j] * inv); j += 1 }
        }
        }
        guard Tensor.needsGradient(self, weight) else { return y }
        let w = weight.detached(), xNeeds = requiresGrad, wNeeds = weight.requiresGrad
        let keepsOutput = (0..<d).allSatisfy { wp[$0].isNormal }
        let kept = keepsOutput ? y.detached() : detached()
        y.recordBackward("rmsNorm", inputs: [self, weight]) { g in
            Tensor.rmsNormBackward(g, kept: kept, isOutput: keepsOutput, weight: w, rstd: rstd, rows: rows, d: d,
                                   input: xNeeds, weight: wNeeds)
        }
        return y
    }

    /// RMSNorm's gradients from what its forward kept, s: the output (x̂ = s / w, w ⊙ x̂ = s) or the input
    /// (x̂ = s · r, w ⊙ x̂ = w ⊙ s · r).
    static func rmsNormBackward(_ g: Tensor, kept s: Tensor, isOutput: Bool, weight w: Tensor, rstd: Tensor, rows: Int,
                                d: Int,
                                input xNeeds: Bool, weight wNeeds: Bool) -> [Tensor?] {
        let gp = g.storage.pointer, sp = s.storage.pointer, wp = w.storage.pointer, rp = rstd.storage.pointer
        // The weight's gradient first (the input's may then be written over what was kept): Σ_rows g ⊙ x̂, the
        // division by w once per element of w.
        var gw: Tensor?
        if wNeeds {
            let dw = Tensor.zeros([d])
            let dp = dw.storage.pointer
            for r in 0..<rows {
                let gr = gp + r * d, sr = sp + r * d, scale: Float = isOutput ? 1 : rp[r]
                for j in 0..<d { dp[j] += gr[j] * sr[j] * scale }
            }
            if isOutput { for j in 0..<d { dp[j] /= wp[j] } }
            gw = dw
        }
        guard xNeeds else { return [nil, gw] }
        // Per element x̂ = s · a · b with a = 1/w, b = 1 (output) or a = 1, b = r (input).
        let inverse = Tensor(uninitializedShape: [d])
        let ip = inverse.storage.pointer
        for j in 0..<d { ip[j] = isOutput ? 1 / wp[j] : 1 }
        let dx = s.reusedOrFresh(shape: s.shape)  // a row's values are all read before any is written
        let dp = dx.storage.pointer
        withExtendedLifetime(inverse) {
            Parallel.forRows(rows, rowLength: d) { r in
                let gr = gp + r * d, sr = sp + r * d, dr = dp + r * d, inv = rp[r], b: Float = isOutput ? 1 : inv
                // c = mean(g ⊙ w ⊙ x̂), eight partial sums at a time
                var dot8 = SIMD8<Float>()
                var j = 0
                while j + 8 <= d {
                    let g8 = UnsafeRawPointer(gr + j).loadUnaligned(as: SIMD8<Float>.self)
                    let s8 = UnsafeRawPointer(sr + j).loadUnaligned(as: SIMD8<Float>.self)
                    dot8 += isOutput ? g8 * s8 : g8 * UnsafeRawPointer(wp + j).loadUnaligned(as: SIMD8<Float>.self) * s8 * inv
                    j += 8
                }
                var dot = dot8.sum()
                while j < d { dot += isOutput ? gr[j] * sr[j] : gr[j] * wp[j] * sr[j] * inv; j += 1 }
                let c = dot / Float(d)
                // dx = r · (g ⊙ w − x̂ · c)
                j = 0
                while j + 8 <= d {
                    let g8 = UnsafeRawPointer(gr + j).loadUnaligned(as: SIMD8<Float>.self)
                    let w8 = UnsafeRawPointer(wp + j).loadUnaligned(as: SIMD8<Float>.self)
                    let s8 = UnsafeRawPointer(sr + j).loadUnaligned(as: SIMD8<Float>.self)
                    let a8 = UnsafeRawPointer(ip + j).loadUnaligned(as: SIMD8<Float>.self)
                    UnsafeMutableRawPointer(dr + j).storeBytes(of: inv * (g8 * w8 - s8 * a8 * b * c), as: SIMD8<Float>.self)
                    j += 8
                }
                while j < d { dr[j] = inv * (gr[j] * wp[j] - sr[j] * ip[j] * b * c); j += 1 }
            }
        }
        return [dx, gw]
    }

    /// y = w ⊙ (x − μ)/√(σ² + ε) + b, with σ² the biased variance of the row.
    ///
    /// With x̂ = (x − μ)·r and ĝ = g ⊙ w:  dw = Σ g ⊙ x̂,  db = Σ g,
    /// dx = r · (ĝ − mean(ĝ) − x̂ · mean(ĝ ⊙ x̂)).
    public func layerNorm(weight: Tensor, bias: Tensor?, epsilon: Float) throws -> Tensor {
        let d = try checkNormWeight(weight, "layerNorm")
        if let bias { _ = try checkNormWeight(bias, "layerNorm (bias)") }
        let rows = count / max(d, 1)
        let y = Tensor(uninitializedShape: shape)
        let xhat = Tensor(uninitializedShape: shape)
        let rstd = Tensor(uninitializedShape: [rows])
        let xp = storage.pointer, wp = weight.storage.pointer, bp = bias?.storage.pointer
        let yp = y.storage.pointer, hp = xhat.storage.pointer, rp = rstd.storage.pointer
        withExtendedLifetime((xhat, rstd)) {
        Parallel.forRows(rows, rowLength: d) { r in
            let x = xp + r * d, o = yp + r * d, h = hp + r * d
            var mean: Float = 0
            for j in 0..<d { mean += x[j] }
            mean /= Float(d)
            var variance: Float = 0
            for j in 0..<d { variance += (x[j] - mean) * (x[j] - mean) }
            let inv = 1 / (variance / Float(d) + epsilon).squareRoot()
            rp[r] = inv
            for j in 0..<d {
                h[j] = (x[j] - mean) * inv
                o[j] = wp[j] * h[j] + (bp?[j] ?? 0)
            }
        }
        }
        let inputs = [self, weight] + (bias.map { [$0] } ?? [])
        guard Tensor.needsGradient(inputs) else { return y }
        let w = weight.detached()
        let xNeeds = requiresGrad, wNeeds = weight.requiresGrad, bNeeds = bias?.requiresGrad ?? false
        y.recordBackward("layerNorm", inputs: inputs) { g in
            let gp = g.storage.pointer, wp = w.storage.pointer, hp = xhat.storage.pointer, rp = rstd.storage.pointer
            var gx: Tensor?
            if xNeeds {
                let dx = Tensor(uninitializedShape: xhat.shape)
                let dp = dx.storage.pointer
                Parallel.forRows(rows, rowLength: d) { r in
                    let gr = gp + r * d, h = hp + r * d, dr = dp + r * d
                    var sum: Float = 0, dot: Float = 0
                    for j in 0..<d {
                        let gh = gr[j] * wp[j]
                        sum += gh
                        dot += gh * h[j]
                    }
                    let mg = sum / Float(d), mgh = dot / Float(d)
                    for j in 0..<d { dr[j] = rp[r] * (gr[j] * wp[j] - mg - h[j] * mgh) }
                }
                gx = dx
            }
            var gw: Tensor?, gb: Tensor?
            if wNeeds || bNeeds {
                let dw = Tensor.zeros([d]), db = Tensor.zeros([d])
                let wq = dw.storage.pointer, bq = db.storage.pointer
                for r in 0..<rows {
                    let gr = gp + r * d, h = hp + r * d
                    for j in 0..<d {
                        wq[j] += gr[j] * h[j]
                        bq[j] += gr[j]
                    }
                }
                gw = wNeeds ? dw : nil
                gb = bNeeds ? db : nil
            }
            return [gx, gw] + (inputs.count == 3 ? [gb] : [])
        }
        return y
    }
}
