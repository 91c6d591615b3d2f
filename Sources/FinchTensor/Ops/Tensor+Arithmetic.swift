/// Add, subtract, multiply and divide with NumPy broadcasting, and the same with a scalar.
///
/// Each backward returns gradients in the broadcast output shape; the tape sums them down to each
/// input's own shape.
extension Tensor {
    static func broadcastShape(_ op: String, _ a: Tensor, _ b: Tensor) throws -> [Int] {
        guard let shape = Broadcast.shape(a.shape, b.shape) else {
            throw TensorError.shapeMismatch(op: op, lhs: a.shape, rhs: b.shape)
        }
        return shape
    }

    // y = a + b;  da = g, db = g
    public static func + (a: Tensor, b: Tensor) throws -> Tensor {
        let shape = try broadcastShape("add", a, b)
        let y = a.shape == b.shape ? Elementwise.add(a, b, shape: shape) : Elementwise.broadcast(a, b, outShape: shape) { $0 + $1 }
        if needsGradient(a, b) {
            y.recordBackward("add", inputs: [a, b]) { g in [g, g] }
        }
        return y
    }

    // y = a - b;  da = g, db = -g
    public static func - (a: Tensor, b: Tensor) throws -> Tensor {
        let y = Elementwise.broadcast(a, b, outShape: try broadcastShape("subtract", a, b)) { $0 - $1 }
        if needsGradient(a, b) {
            let bNeeds = b.requiresGrad
            y.recordBackward("subtract", inputs: [a, b]) { g in [g, bNeeds ? -g : nil] }
        }
        return y
    }

    // y = a · b;  da = g · b, db = g · a
    public static func * (a: Tensor, b: Tensor) throws -> Tensor {
        let shape = try broadcastShape("multiply", a, b)
        let y = Elementwise.broadcast(a, b, outShape: shape) { $0 * $1 }
        if needsGradient(a, b) {
            let savedA = b.requiresGrad ? a.detached() : nil
            let savedB = a.requiresGrad ? b.detached() : nil
            y.recordBackward("multiply", inputs: [a, b]) { g in
                [try savedB.map { try g * $0 }, try savedA.map { try g * $0 }]
            }
        }
        return y
    }

    // y = a / b;  da = g / b, db = -g · a / b²  = -g · y / b
    public static func / (a: Tensor, b: Tensor) throws -> Tensor {
        let shape = try broadcastShape("divide", a, b)
        let y = Elementwise.broadcast(a, b, outShape: shape) { $0 / $1 }
        if needsGradient(a, b) {
            let savedB = b.detached()
            let savedY = b.requiresGrad ? y.detached() : nil
            let aNeeds = a.requiresGrad
            y.recordBackward("divide", inputs: [a, b]) { g in
                let ga = aNeeds ? try g / savedB : nil
                let gb = try savedY.map { yv in
                    Elementwise.broadcast(try g * yv, savedB, outShape: shape) { -$0 / $1 }
                }
                return [ga, gb]
            }
        }
        return y
    }

    public static prefix func - (x: Tensor) -> Tensor { x * -1 }

    // y = x + s;  dx = g
    public static func + (x: Tensor, s: Float) -> Tensor {
        let y = Elementwise.map(x) { $0 + s }
        if needsGradient(x) { y.recordBackward("add scalar", inputs: [x]) { g in [g] } }
        return y
    }

    public static func + (s: Float, x: Tensor) -> Tensor { x + s }
    public static func - (x: Tensor, s: Float) -> Tensor { x + (-s) }
    public static func - (s: Float, x: Tensor) -> Tensor { (x * -1) + s }

    // y = x · s;  dx = g · s
    public static func * (x: Tensor, s: Float) -> Tensor {
        let y = Elementwise.scale(x, s)
        if needsGradient(x) { y.recordBackward("multiply scalar", inputs: [x]) { g in [g * s] } }
        return y
    }

    public static func * (s: Float, x: Tensor) -> Tensor { x * s }
    public static func / (x: Tensor, s: Float) -> Tensor { x * (1 / s) }

    // y = x^p;  dx = g · p · x^(p-1)
    public func pow(_ p: Float) -> Tensor {
        let y = Elementwise.map(self) { Math.pow($0, p) }
        if Tensor.needsGradient(self) {
            let x = detached()
            y.recordBackward("pow", inputs: [self]) { g in
                [Elementwise.zip(g, x, shape: x.shape) { $0 * p * Math.pow($1, p - 1) }]
            }
        }
        return y
    }

    // y = x²;  dx = 2 g x
    public func squared() -> Tensor {
        let y = Elementwise.map(self) { $0 * $0 }
        if Tensor.needsGradient(self) {
            let x = detached()
            y.recordBackward("square", inputs: [self]) { g in
                [Elementwise.zip(g, x, shape: x.shape) { 2 * $0 * $1 }]
            }
        }
        return y
    }
}
