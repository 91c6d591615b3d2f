/// Knowledge distillation fused with the head's loss (`linearCrossEntropy(…, teacher:)`): for each row with a
/// target, with student logits z, teacher logits t, temperature T and weight α,
///
///     loss_r = α · T² · KL(softmax(t / T) ‖ softmax(z / T)) + (1 − α) · CE(z, y)
///
/// and the gradient of loss_r in z is α · T · (softmax(z / T) − softmax(t / T)) + (1 − α) · (softmax(z) − y).
/// The teacher's logits are made a chunk of rows at a time beside the student's, so neither exists whole.
public struct DistillationTeacher {
    /// The teacher's hidden states [N, dₜ], one row per row of the student's (constants: no gradient reaches them).
    public let hidden: Tensor
    public let vocabulary: Int
    /// logits [rows, V] of `rows` teacher hidden rows.
    let logits: (UnsafeMutablePointer<Float>, Int, UnsafeMutablePointer<Float>) -> Void
    public let temperature: Float
    public let alpha: Float

    /// A teacher whose head is a float32 matrix [V, dₜ].
    public init(hidden: Tensor, weight: Tensor, temperature: Float, alpha: Float) throws {
        guard hidden.rank == 2, weight.rank == 2, hidden.shape[1] == weight.shape[1] else {
            throw TensorError.shapeMismatch(op: "distillation teacher (hidden vs head [V, d])", lhs: hidden.shape, rhs: weight.shape)
        }
        let (d, v) = (hidden.shape[1], weight.shape[0])
        let w = weight.detached()
        self.init(hidden: hidden, vocabulary: v, temperature: temperature, alpha: alpha) { h, rows, out in
            GEMM.multiply(transposeA: false, transposeB: true, m: rows, n: v, k: d, a: h, lda: d, b: w.storage.pointer,
                          ldb: d, c: out, ldc: v)
        }
    }

    /// A teacher whose head is a block-quantised matrix (its token table held quantised).
    public init(hidden: Tensor, quantizedWeight w: QuantizedMatrix, temperature: Float, alpha: Float) throws {
        guard hidden.rank == 2, hidden.shape[1] == w.columns else {
            throw TensorError.shapeMismatch(op: "distillation teacher (hidden vs quantised head [V, d])", lhs: hidden.shape, rhs: w.shape)
        }
        self.init(hidden: hidden, vocabulary: w.rows, temperature: temperature, alpha: alpha) { h, rows, out in
            w.multiplyTransposed(h, rows: rows, into: out, stride: w.rows)
        }
    }

    init(hidden: Tensor, vocabulary: Int, temperature: Float, alpha: Float,
         logits: @escaping (UnsafeMutablePointer<Float>, Int, UnsafeMutablePointer<Float>) -> Void) {
        self.hidden = hidden.detached()
        self.vocabulary = vocabulary
        self.temperature = temperature
        self.alpha = alpha
        self.logits = logits
    }

    func check(rows n: Int, vocabulary v: Int) throws {
        guard hidden.shape[0] == n else {
            throw TensorError.shapeMismatch(op: "distillation (teacher rows vs student rows)", lhs: hidden.shape, rhs: [n])
        }
        guard vocabulary == v else {
            throw TensorError.invalidArgument(op: "distillation", message: "the teacher's vocabulary has \(vocabulary) entries, the student's \(v)")
        }
        guard temperature > 0, temperature.isFinite, alpha >= 0, alpha <= 1 else {
            throw TensorError.invalidArgument(op: "distillation", message: "temperature must be positive and alpha in [0, 1], got \(temperature) and \(alpha)")
        }
    }
}

extension Tensor {
    /// One row of the distillation loss. `x` holds the student's logits and, when `gradient`, leaves with the
    /// row's unscaled gradient; `u` holds the teacher's logits and `w` is scratch (both overwritten).
    /// Returns loss_r.
    @inline(__always)
    static func distillationRow(_ x: UnsafeMutablePointer<Float>, teacher u: UnsafeMutablePointer<Float>,
                                scratch w: UnsafeMutablePointer<Float>, _ n: Int, target: Int, temperature t: Float,
                                alpha: Float, gradient: Bool) -> Double {
        let picked = x[target]
        let m = rowMax(x, n), mt = rowMax(u, n), inverse = 1 / t
        // One pass: e^(x − m) (the plain softmax), e^((x − m)/T) and e^((u − mt)/T) (the tempered ones), and
        // Σ e^((u − mt)/T) · ((u − mt)/T − (x − m)/T) for the KL divergence.
        var zs8 = SIMD8<Float>(), zq8 = SIMD8<Float>(), zp8 = SIMD8<Float>(), cross8 = SIMD8<Float>()
        var j = 0
        while j + 8 <= n {
            let xv = UnsafeRawPointer(x + j).loadUnaligned(as: SIMD8<Float>.self) - m
            let a = (UnsafeRawPointer(u + j).loadUnaligned(as: SIMD8<Float>.self) - mt) * inverse
            let b = xv * inverse
            let es = Math.exp8(xv), eq = Math.exp8(b), ep = Math.exp8(a)
            UnsafeMutableRawPointer(x + j).storeBytes(of: es, as: SIMD8<Float>.self)
            UnsafeMutableRawPointer(w + j).storeBytes(of: eq, as: SIMD8<Float>.self)
            UnsafeMutableRawPointer(u + j).storeBytes(of: ep, as: SIMD8<Float>.self)
            zs8 += es; zq8 += eq; zp8 += ep; cross8 += ep * (a - b)
            j += 8
        }
        var zs = zs8.sum(), zq = zq8.sum(), zp = zp8.sum(), cross = cross8.sum()
        while j < n {
            let xv = x[j] - m, a = (u[j] - mt) * inverse, b = xv * inverse
            let es = Math.exp(xv), eq = Math.exp(b), ep = Math.exp(a)
            x[j] = es; w[j] = eq; u[j] = ep
            zs += es; zq += eq; zp += ep; cross += ep * (a - b)
            j += 1
        }
        let crossEntropy = Double(m) + Double(Math.log(zs)) - Double(picked)
        let kl = Double(cross) / Double(zp) + Double(Math.log(zq)) - Double(Math.log(zp))
        if gradient {
            let cs = (1 - alpha) / zs, cq = alpha * t / zq, cp = alpha * t / zp
            var j = 0
            while j + 8 <= n {
                let es = UnsafeRawPointer(x + j).loadUnaligned(as: SIMD8<Float>.self)
                let eq = UnsafeRawPointer(w + j).loadUnaligned(as: SIMD8<Float>.self)
                let ep = UnsafeRawPointer(u + j).loadUnaligned(as: SIMD8<Float>.self)
                UnsafeMutableRawPointer(x + j).storeBytes(of: es * cs + eq * cq - ep * cp, as: SIMD8<Float>.self)
                j += 8
            }
            while j < n { x[j] = x[j] * cs + w[j] * cq - u[j] * cp; j += 1 }
            x[target] -= 1 - alpha
        }
        return Double(alpha) * Double(t) * Double(t) * kl + Double(1 - alpha) * crossEntropy
    }
}
