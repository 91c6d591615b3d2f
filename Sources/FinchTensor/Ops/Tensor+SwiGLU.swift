import Dispatch

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
            SwiGLUKernel.forward(gate: gp + r.lowerBound, up: upp + r.lowerBound, out: yp + r.lowerBound,
                                 count: r.count)
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
                let o = r.lowerBound
                SwiGLUKernel.backward(gradient: dp + o, gate: gp + o, up: upp + o,
                                      dGate: dgp.map { $0 + o }, dUp: dup.map { $0 + o }, count: r.count)
            }
            return [dGate, dUp]
        }
        return y
    }

    /// swiGLU(gate, up) · Wᵀ for W [out, hidden] (a LLaMA MLP's down projection), made a block of rows at a
    /// time on each core: the gated [rows, hidden] values are never held whole, forward or backward (on W3,
    /// 11 MB a layer). A W that trains gets its gradient gᵀ · swiGLU(gate, up) from the gated values made
    /// again, a block of rows and a share of the columns at a time, before the input gradients are written
    /// over the saved gate and up; so full fine-tuning keeps no gated values either (88 MB at W3's peak).
    /// The output and the input gradients are those of the unfused ops bit for bit: each element's products and
    /// sums are the same, and each core's rows are those `GEMM.multiply` would give it. The weight gradient's
    /// sums over the rows run in blocks, so it differs from the unfused product's in float32 rounding.
    public static func swiGLUProjected(gate: Tensor, up: Tensor, weight: Tensor) throws -> Tensor {
        guard gate.shape == up.shape else { throw TensorError.shapeMismatch(op: "swiGLU (gate vs up)", lhs: gate.shape, rhs: up.shape) }
        guard weight.rank == 2, gate.rank >= 1, weight.shape[1] == gate.shape[gate.rank - 1] else {
            throw TensorError.shapeMismatch(op: "swiGLUProjected (gated values vs weight [out, hidden])",
                                            lhs: gate.shape, rhs: weight.shape)
        }
        let hidden = weight.shape[1], outputs = weight.shape[0], rows = gate.count / max(hidden, 1)
        // Few rows (the product would be split by columns, or not at all) save nothing worth a second path.
        if GEMM.split(m: rows, n: outputs, k: hidden) != .rows {
            return try swiGLU(gate: gate, up: up).matmul(weight, transposeOther: true)
        }
        let blockRows = SwiGLUKernel.blockRows(width: hidden, outputs: outputs)
        let y = Tensor(uninitializedShape: Array(gate.shape.dropLast()) + [outputs])
        y.computeValues { [values = y.values] in
            let gp = gate.storage.pointer, upp = up.storage.pointer, wp = weight.storage.pointer, yp = values.pointer
            SwiGLUKernel.inRowBlocks(rows: rows, width: hidden, blockRows: blockRows) { lo, n, scratch in
                SwiGLUKernel.forward(gate: gp + lo * hidden, up: upp + lo * hidden, out: scratch, count: n * hidden)
                GEMM.sgemm(false, true, n, outputs, hidden, 1, scratch, hidden, wp, hidden, 0, yp + lo * outputs,
                           outputs)
            }
        }
        guard needsGradient(gate, up, weight) else { return y }
        let savedGate = gate.detached(), savedUp = up.detached(), savedWeight = weight.detached()
        let gateNeeds = gate.requiresGrad, upNeeds = up.requiresGrad, weightNeeds = weight.requiresGrad
        y.recordAccumulatingBackward("swiGLUProjected", inputs: [gate, up, weight]) { g, sums in
            let dp = g.storage.pointer, gp = savedGate.storage.pointer, upp = savedUp.storage.pointer
            // The weight's gradient first: it reads gate and up, which the input gradients then overwrite.
            var dWeight: Tensor?
            if weightNeeds {
                let sum = sums.count > 2 ? sums[2] : nil
                let dw = sum ?? Tensor(uninitializedShape: [outputs, hidden])
                SwiGLUKernel.weightGradient(gradient: dp, gate: gp, up: upp, rows: rows, width: hidden,
                                            outputs: outputs,
                                            blockRows: min(blockRows, SwiGLUKernel.blockRows), adding: sum != nil,
                                            into: dw.storage.pointer)
                dWeight = dw
            }
            guard gateNeeds || upNeeds else { return [nil, nil, dWeight] }
            // As in swiGLU: the gradients go over the saved inputs when nobody else holds them.
            let dGate = gateNeeds ? savedGate.reusedOrFresh(shape: savedGate.shape) : nil
            let dUp = upNeeds ? savedUp.reusedOrFresh(shape: savedUp.shape) : nil
            let wp = savedWeight.storage.pointer
            let dgp = dGate?.storage.pointer, dup = dUp?.storage.pointer
            SwiGLUKernel.inRowBlocks(rows: rows, width: hidden, blockRows: blockRows) { lo, n, scratch in
                // The gated values' gradient for these rows, g · W, then through the gate.
                GEMM.sgemm(false, false, n, hidden, outputs, 1, dp + lo * outputs, outputs, wp, hidden, 0, scratch,
                           hidden)
                let o = lo * hidden
                SwiGLUKernel.backward(gradient: scratch, gate: gp + o, up: upp + o,
                                      dGate: dgp.map { $0 + o }, dUp: dup.map { $0 + o }, count: n * hidden)
            }
            return [dGate, dUp, dWeight]
        }
        return y
    }
}

/// The element formulas of swiGLU, eight lanes at a time, and the row blocking of its fused projection.
enum SwiGLUKernel {
    /// Rows per block of the fused projection: big enough that OpenBLAS's packing of the weight, repeated
    /// for every block, stays a few per cent of the product; small enough that a block's gated values
    /// (256 × 1376 floats on W3, 1.4 MB) stay near the core's cache.
    static let blockRows = 256
    /// Blocks are used only when a block's product is at least this many multiply-adds. Below that OpenBLAS
    /// may take its small-matrix kernels, whose sums depend on the row count, and the fused values would
    /// differ from the unfused ones in the last bit; above it each element's sum is the same for any rows.
    /// (Products that small hold little memory anyway.)
    static let minimumBlockWork = 1 << 24

    /// Rows per block for a product of `width` × `outputs` per row.
    static func blockRows(width: Int, outputs: Int) -> Int {
        blockRows * width * outputs >= minimumBlockWork ? blockRows : Int.max
    }

    static func forward(gate gp: UnsafePointer<Float>, up upp: UnsafePointer<Float>,
                        out yp: UnsafeMutablePointer<Float>, count: Int) {
        var i = 0
        while i + 8 <= count {
            let g8 = UnsafeRawPointer(gp + i).loadUnaligned(as: SIMD8<Float>.self)
            let u8 = UnsafeRawPointer(upp + i).loadUnaligned(as: SIMD8<Float>.self)
            let sigma = 1 / (1 + Math.exp8(-g8))
            UnsafeMutableRawPointer(yp + i).storeBytes(of: g8 * sigma * u8, as: SIMD8<Float>.self)
            i += 8
        }
        while i < count {  // the lanes' expression, so a value does not depend on where a chunk or block ends
            yp[i] = gp[i] * (1 / (1 + Math.exp(-gp[i]))) * upp[i]
            i += 1
        }
    }

    /// d_gate and d_up from the output's gradient; either may be nil. Each element of gate and up is read
    /// before the same element of d_gate and d_up is written, so they may be the same memory.
    static func backward(gradient dp: UnsafePointer<Float>, gate gp: UnsafePointer<Float>, up upp: UnsafePointer<Float>,
                         dGate dgp: UnsafeMutablePointer<Float>?, dUp dup: UnsafeMutablePointer<Float>?, count: Int) {
        var i = 0
        while i + 8 <= count {
            let d8 = UnsafeRawPointer(dp + i).loadUnaligned(as: SIMD8<Float>.self)
            let g8 = UnsafeRawPointer(gp + i).loadUnaligned(as: SIMD8<Float>.self)
            let u8 = UnsafeRawPointer(upp + i).loadUnaligned(as: SIMD8<Float>.self)
            let sigma = 1 / (1 + Math.exp8(-g8))
            if let dup { UnsafeMutableRawPointer(dup + i).storeBytes(of: d8 * g8 * sigma, as: SIMD8<Float>.self) }
            if let dgp {
                UnsafeMutableRawPointer(dgp + i).storeBytes(of: d8 * u8 * sigma * (1 + g8 * (1 - sigma)),
                                                            as: SIMD8<Float>.self)
            }
            i += 8
        }
        while i < count {
            let d = dp[i], gv = gp[i], uv = upp[i]
            let sigma = 1 / (1 + Math.exp(-gv))
            dup?[i] = d * gv * sigma
            dgp?[i] = d * uv * sigma * (1 + gv * (1 - sigma))
            i += 1
        }
    }

    /// dW[outputs, width] (+)= gᵀ · swiGLU(gate, up) over `rows` rows, each core taking a contiguous share of
    /// the columns and making its columns' gated values again for a block of rows at a time; `adding` sums into
    /// what dW holds (gradient accumulation).
    static func weightGradient(gradient dp: UnsafePointer<Float>, gate gp: UnsafePointer<Float>,
                               up upp: UnsafePointer<Float>,
                               rows: Int, width: Int, outputs: Int, blockRows: Int, adding: Bool,
                               into dw: UnsafeMutablePointer<Float>) {
        let parts = min(Parallel.coreCount, max(1, width / 8))
        let share = (width + parts - 1) / parts
        let box = UncheckedSendable((dp, gp, upp, dw))
        DispatchQueue.concurrentPerform(iterations: parts) { part in
            let (dp, gp, upp, dw) = box.value
            let c0 = part * share, columns = min(width, c0 + share) - c0
            guard columns > 0 else { return }
            let scratch = Tensor(uninitializedShape: [min(blockRows, rows), columns])
            let sp = scratch.storage.pointer
            var lo = 0
            while lo < rows {
                let n = min(blockRows, rows - lo)
                for r in 0..<n {
                    let at = (lo + r) * width + c0
                    forward(gate: gp + at, up: upp + at, out: sp + r * columns, count: columns)
                }
                GEMM.sgemm(true, false, outputs, columns, n, 1, dp + lo * outputs, outputs, sp, columns,
                           adding || lo > 0 ? 1 : 0, dw + c0, width)
                lo += n
            }
            withExtendedLifetime(scratch) {}
        }
    }

    /// Calls `body(firstRow, rowCount, scratch)` for consecutive blocks of at most `blockRows` rows, the
    /// cores taking the contiguous shares of the rows that `GEMM.multiply` gives them; `scratch` holds
    /// `rowCount × width` floats of the core's own.
    static func inRowBlocks(rows: Int, width: Int, blockRows: Int,
                            _ body: (Int, Int, UnsafeMutablePointer<Float>) -> Void) {
        let parts = Parallel.coreCount
        let share = (rows + parts - 1) / parts
        withoutActuallyEscaping(body) { body in
            let box = UncheckedSendable(body)
            DispatchQueue.concurrentPerform(iterations: parts) { part in
                let start = part * share, end = min(rows, start + share)
                guard start < end else { return }
                let scratch = Tensor(uninitializedShape: [min(blockRows, end - start), width])
                var lo = start
                while lo < end {
                    let n = min(blockRows, end - lo)
                    box.value(lo, n, scratch.storage.pointer)
                    lo += n
                }
                withExtendedLifetime(scratch) {}
            }
        }
    }
}
