/// Rotary position embedding in the Hugging Face "rotate half" convention.
///
/// For head dimension D and h = D/2, position p and frequency fᵢ = θ^(−2i/D) (i < h):
///   y[i]     = x[i]·cos(p·fᵢ) − x[i+h]·sin(p·fᵢ)
///   y[i+h]   = x[i+h]·cos(p·fᵢ) + x[i]·sin(p·fᵢ)
/// The rotation is orthogonal, so the backward is the rotation by −p:
///   dx[i]    = g[i]·cos + g[i+h]·sin,   dx[i+h] = g[i+h]·cos − g[i]·sin
public struct RotaryTable: Sendable {
    public let headDimension: Int
    public let theta: Float
    public let maxPositions: Int
    /// [maxPositions, D/2], computed in float32 in the same order as transformers, so angles agree bit for bit.
    let cos: [Float]
    let sin: [Float]

    public init(headDimension: Int, theta: Float, maxPositions: Int) throws {
        guard headDimension > 0, headDimension % 2 == 0 else {
            throw TensorError.invalidArgument(op: "RotaryTable",
                                              message: "head dimension must be even and positive, got \(headDimension)")
        }
        self.headDimension = headDimension
        self.theta = theta
        self.maxPositions = maxPositions
        let half = headDimension / 2
        let inverseFrequency = (0..<half).map { i in 1 / Math.pow(theta, Float(2 * i) / Float(headDimension)) }
        var c = [Float](repeating: 0, count: maxPositions * half), s = c
        for p in 0..<maxPositions {
            for i in 0..<half {
                let angle = Float(p) * inverseFrequency[i]
                c[p * half + i] = Math.cos(angle)
                s[p * half + i] = Math.sin(angle)
            }
        }
        cos = c
        sin = s
    }
}

extension Tensor {
    /// Rotates x [..., T, ..., D], where `sequenceAxis` is the T axis (default: the one before D, as in
    /// [B, H, T, D]; use 1 for [B, T, H, D]). Position `offset + t` for index t along it.
    public func rotaryEmbedding(_ table: RotaryTable, offset: Int = 0, sequenceAxis: Int = -2) throws -> Tensor {
        guard rank >= 2, shape[rank - 1] == table.headDimension else {
            throw TensorError.shapeMismatch(op: "rotaryEmbedding (x vs [T, head dim])", lhs: shape,
                                            rhs: [-1, table.headDimension])
        }
        let axis = try normalizedAxis(sequenceAxis, op: "rotaryEmbedding")
        guard axis < rank - 1 else {
            throw TensorError.invalidArgument(op: "rotaryEmbedding",
                                              message: "the sequence axis must come before the head dimension")
        }
        let t = shape[axis]
        guard offset >= 0, offset + t <= table.maxPositions else {
            throw TensorError.invalidArgument(op: "rotaryEmbedding", message: "positions \(offset)..<\(offset + t) exceed the table's \(table.maxPositions)")
        }
        // Rows of D between consecutive positions (the axes after T, before D).
        let rowsPerPosition = shape[(axis + 1)..<(rank - 1)].reduce(1, *)
        let y = Tensor.rotate(self, table, offset: offset, positions: t, rowsPerPosition: rowsPerPosition,
                              inverse: false)
        if Tensor.needsGradient(self) {
            y.recordBackward("rotaryEmbedding", inputs: [self]) { g in
                [Tensor.rotate(g, table, offset: offset, positions: t, rowsPerPosition: rowsPerPosition, inverse: true)]
            }
        }
        return y
    }

    /// Rotates x [B, T, ..., D] (the sequence axis 1) with a position per (batch row, t): `positions` holds B·T
    /// values, batch-major. Records packed into one row, and prompts left-padded to one length, each count their
    /// positions from their own first token this way.
    public func rotaryEmbedding(_ table: RotaryTable, positions: [Int32]) throws -> Tensor {
        guard rank >= 3, shape[rank - 1] == table.headDimension, positions.count == shape[0] * shape[1] else {
            throw TensorError.shapeMismatch(op: "rotaryEmbedding (x vs [B, T, ..., head dim] with B·T positions)",
                                            lhs: shape, rhs: [positions.count, table.headDimension])
        }
        if let bad = positions.first(where: { $0 < 0 || Int($0) >= table.maxPositions }) {
            throw TensorError.invalidArgument(op: "rotaryEmbedding", message: "position \(bad) is outside the table's 0..<\(table.maxPositions)")
        }
        let rowsPerPosition = shape[2..<(rank - 1)].reduce(1, *)
        let y = Tensor.rotate(self, table, offset: 0, positions: shape[1], rowsPerPosition: rowsPerPosition,
                              inverse: false, perPosition: positions)
        if Tensor.needsGradient(self) {
            y.recordBackward("rotaryEmbedding", inputs: [self]) { [shape] g in
                [Tensor.rotate(g, table, offset: 0, positions: shape[1], rowsPerPosition: rowsPerPosition, inverse: true,
                               perPosition: positions)]
            }
        }
        return y
    }

    /// With `perPosition`, row r's position is `perPosition[r / rowsPerPosition]`; otherwise `offset` plus its
    /// index along the T axis.
    static func rotate(_ x: Tensor, _ table: RotaryTable, offset: Int, positions t: Int, rowsPerPosition: Int,
                       inverse: Bool, perPosition: [Int32]? = nil) -> Tensor {
        let d = table.headDimension, h = d / 2
        let rows = x.count / d
        let y = Tensor(uninitializedShape: x.shape)
        let sign: Float = inverse ? -1 : 1
        let xp = x.storage.pointer, yp = y.storage.pointer
        table.cos.withUnsafeBufferPointer { cp in
            table.sin.withUnsafeBufferPointer { sp in
                Parallel.forRows(rows, rowLength: d) { r in
                    let p = perPosition.map { Int($0[r / rowsPerPosition]) } ?? offset + (r / rowsPerPosition) % t
                    let c = cp.baseAddress! + p * h, s = sp.baseAddress! + p * h
                    let xr = xp + r * d, yr = yp + r * d
                    // Eight pairs at a time (the compiler cannot vectorise the loop: x and y might overlap),
                    // the same operations as the scalar tail.
                    var i = 0
                    while i + 8 <= h {
                        let a = UnsafeRawPointer(xr + i).loadUnaligned(as: SIMD8<Float>.self)
                        let b = UnsafeRawPointer(xr + i + h).loadUnaligned(as: SIMD8<Float>.self)
                        let ci = UnsafeRawPointer(c + i).loadUnaligned(as: SIMD8<Float>.self)
                        let si = sign * UnsafeRawPointer(s + i).loadUnaligned(as: SIMD8<Float>.self)
                        UnsafeMutableRawPointer(yr + i).storeBytes(of: a * ci - b * si, as: SIMD8<Float>.self)
                        UnsafeMutableRawPointer(yr + i + h).storeBytes(of: b * ci + a * si, as: SIMD8<Float>.self)
                        i += 8
                    }
                    while i < h {
                        let a = xr[i], b = xr[i + h], si = sign * s[i]
                        yr[i] = a * c[i] - b * si
                        yr[i + h] = b * c[i] + a * si
                        i += 1
                    }
                }
            }
        }
        return y
    }
}
