/// A float32 tensor: contiguous row-major storage and a shape, plus its place on the autograd tape.
///
/// A tensor is a reference: reshaped views share storage, and an optimizer updates a parameter in place.
/// Leaves (parameters, inputs) carry `requiresGrad`; results of ops on them carry the node that computes
/// their inputs' gradients. A tensor whose inputs all lack `requiresGrad` records nothing.
public final class Tensor {
    public let shape: [Int]
    /// The values; shared with views made by `reshaped`. Values deferred by `computeValues` are computed here,
    /// on the first read.
    public internal(set) var storage: TensorStorage {
        get {
            if let pending {
                self.pending = nil
                pending()
            }
            return values
        }
        set {
            pending = nil
            values = newValue
        }
    }
    /// The storage, whether or not its values have been computed yet.
    var values: TensorStorage
    /// What fills `values` in, while it has not run (see `computeValues`).
    private var pending: (() -> Void)?
    /// How this tensor was made, when a gradient must flow through it.
    var gradientNode: GradientNode?
    private var isTrainableLeaf: Bool
    /// The accumulated gradient of the last `backward()` with respect to this leaf.
    public var grad: Tensor?
    /// An optional name, used in messages.
    public var name: String?

    /// A tensor over existing storage (shared, not copied).
    init(shape: [Int], storage: TensorStorage) {
        precondition(shape.reduce(1, *) == storage.count, "internal: storage count does not match shape")
        self.shape = shape
        self.values = storage
        self.isTrainableLeaf = false
    }

    /// Storage whose values the caller fills in completely.
    convenience init(uninitializedShape shape: [Int]) {
        self.init(shape: shape, storage: TensorStorage(uninitializedCount: shape.reduce(1, *)))
    }

    /// A tensor holding `scalars` in row-major order.
    /// - Throws: when `scalars.count` is not the product of `shape`, or a dimension is negative.
    public convenience init(shape: [Int], scalars: [Float]) throws {
        try Tensor.checkShape(shape, op: "Tensor(shape:scalars:)")
        let count = shape.reduce(1, *)
        guard scalars.count == count else {
            throw TensorError.invalidArgument(
                op: "Tensor(shape:scalars:)", message: "shape \(shape) holds \(count) values, got \(scalars.count)")
        }
        self.init(uninitializedShape: shape)
        scalars.withUnsafeBufferPointer { src in
            if let base = src.baseAddress { storage.pointer.update(from: base, count: count) }
        }
    }

    /// A rank-0 tensor.
    public convenience init(_ value: Float) {
        self.init(shape: [], storage: TensorStorage(count: 1, repeating: value))
    }

    /// A rank-1 tensor.
    public convenience init(_ scalars: [Float]) {
        try! self.init(shape: [scalars.count], scalars: scalars)
    }

    public static func filled(_ value: Float, shape: [Int]) -> Tensor {
        Tensor(shape: shape, storage: TensorStorage(count: shape.reduce(1, *), repeating: value))
    }

    public static func zeros(_ shape: [Int]) -> Tensor { filled(0, shape: shape) }
    public static func ones(_ shape: [Int]) -> Tensor { filled(1, shape: shape) }

    /// Values drawn from N(mean, std²) by Finch's generator.
    public static func randomNormal(
        _ shape: [Int], mean: Float = 0, standardDeviation: Float = 1, generator: inout RandomGenerator
    ) -> Tensor {
        let t = Tensor(uninitializedShape: shape)
        let p = t.storage.pointer
        for i in 0..<t.count { p[i] = mean + standardDeviation * generator.nextNormal() }
        return t
    }

    /// Values drawn uniformly from [low, high) by Finch's generator.
    public static func randomUniform(
        _ shape: [Int], low: Float = 0, high: Float = 1, generator: inout RandomGenerator
    ) -> Tensor {
        let t = Tensor(uninitializedShape: shape)
        let p = t.storage.pointer
        let width = high - low
        for i in 0..<t.count { p[i] = low + width * generator.nextUniform() }
        return t
    }

    static func checkShape(_ shape: [Int], op: String) throws {
        guard shape.allSatisfy({ $0 >= 0 }) else {
            throw TensorError.invalidArgument(op: op, message: "dimensions must be non-negative, got \(shape)")
        }
    }

    // MARK: Properties

    public var count: Int { storage.count }
    public var rank: Int { shape.count }

    /// The values, copied out in row-major order.
    public var scalars: [Float] { Array(storage.buffer) }

    /// The single value of a one-element tensor.
    public func item() throws -> Float {
        guard count == 1 else {
            throw TensorError.invalidArgument(op: "item", message: "expected one element, shape is \(shape)")
        }
        return storage.pointer[0]
    }

    /// Whether every value is finite (no NaN, no infinity). Multiplying by zero keeps a finite value at zero and
    /// turns a NaN or an infinity into NaN, so one pass of eight-lane products answers it.
    public var isFinite: Bool {
        let p = storage.pointer, n = count
        var lanes = SIMD8<Float>()
        var i = 0
        while i + 8 <= n {
            lanes += UnsafeRawPointer(p + i).loadUnaligned(as: SIMD8<Float>.self) * 0
            i += 8
        }
        var tail: Float = 0
        while i < n { tail += p[i] * 0; i += 1 }
        return (lanes.sum() + tail) == 0
    }

    /// Whether a gradient flows to or through this tensor.
    public var requiresGrad: Bool {
        get { isTrainableLeaf || gradientNode != nil }
        set {
            precondition(gradientNode == nil, "requiresGrad can be set on leaf tensors only")
            isTrainableLeaf = newValue
            if !newValue { grad = nil }
        }
    }

    /// Marks this leaf as needing a gradient and returns it.
    @discardableResult
    public func requiringGrad(_ flag: Bool = true) -> Tensor {
        requiresGrad = flag
        return self
    }

    /// True when no op on the tape made this tensor (it has no node there): a parameter, an input, or a value
    /// made while recording was off.
    public var isLeaf: Bool { gradientNode == nil }

    /// The same values, off the tape: shares storage, records nothing.
    public func detached() -> Tensor { Tensor(shape: shape, storage: storage) }

    /// The first values of this tensor as a tensor of `shape`, off the tape and sharing its memory (not a
    /// copy): what is written to this tensor past them later leaves the view as it is. A key/value cache
    /// grows into spare room this way instead of copying itself for every new token.
    public func leadingView(_ shape: [Int]) throws -> Tensor {
        let n = shape.reduce(1, *)
        guard shape.allSatisfy({ $0 >= 0 }), n <= count else {
            throw TensorError.shapeMismatch(op: "leadingView (view within the values)", lhs: self.shape, rhs: shape)
        }
        return Tensor(shape: shape, storage: TensorStorage(leadingValuesOf: storage, count: n))
    }

    /// A tensor of `shape` for an op's result: this tensor's own storage when nothing else holds it (a value
    /// a backward step saved and is about to drop), else fresh storage. The caller overwrites every value.
    func reusedOrFresh(shape: [Int]) -> Tensor {
        if TensorStorage.isExclusive(&values) && storage.count == shape.reduce(1, *) {
            return Tensor(shape: shape, storage: storage)
        }
        return Tensor(uninitializedShape: shape)
    }

    /// Runs `fill`, which writes this tensor's values into `values`, now; or, while a checkpointed block runs again
    /// for its backward pass (`Recomputation`), when the values are first read. That second run needs the block's
    /// graph, not its output's values, so an op whose result only that output reads is never computed then.
    /// `fill` must read its inputs' values through `storage` when it runs, not before.
    func computeValues(_ fill: @escaping () -> Void) {
        guard let recomputation = Recomputation.current else { return fill() }
        pending = fill
        recomputation.deferred.append(self)
    }

    /// Whether this tensor's values are deferred and not yet computed.
    var valuesArePending: Bool { pending != nil }

    /// Gives up deferred values that will never be read: a read afterwards finds NaN rather than stale memory.
    func discardPendingValues() {
        guard pending != nil else { return }
        pending = { [values] in values.pointer.update(repeating: .nan, count: values.count) }
    }

    /// A copy of the values in fresh storage, off the tape.
    public func copy() -> Tensor {
        let t = Tensor(uninitializedShape: shape)
        t.storage.pointer.update(from: storage.pointer, count: count)
        return t
    }

    /// Overwrites this tensor's values with `other`'s (same element count); records nothing.
    public func assign(_ other: Tensor) throws {
        guard other.shape == shape else { throw TensorError.shapeMismatch(op: "assign", lhs: shape, rhs: other.shape) }
        storage.pointer.update(from: other.storage.pointer, count: count)
    }

    /// Sets the gradient to nil (it is allocated afresh by the next backward).
    public func zeroGrad() { grad = nil }
}

extension Tensor: CustomStringConvertible {
    public var description: String {
        let shown = scalars.prefix(8).map { String($0) }.joined(separator: ", ")
        return "Tensor(shape: \(shape), [\(shown)\(count > 8 ? ", …" : "")])"
    }
}
