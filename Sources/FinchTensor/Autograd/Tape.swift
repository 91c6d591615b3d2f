/// The reverse-mode tape.
///
/// Each op that has an input needing a gradient records a `GradientNode` on its output: the op's name,
/// one `Edge` per input (nil for inputs that need no gradient) and a closure that maps the output's
/// gradient to the inputs' gradients. The closure captures only what it needs; edges point at the
/// producing node, not at the input tensor, so an intermediate value is freed as soon as nothing needs it.
///
/// The engine does what every op would otherwise repeat: it sums a gradient down to its input's shape
/// when the op broadcast that input, adds gradients of a value used more than once, and walks the graph
/// in an iterative topological order.
final class GradientNode {
    let op: String
    let edges: [Edge?]
    /// Maps the output's gradient to the inputs' gradients. The second argument has one entry per input:
    /// a gradient already summed for that input which the step may add its own into, in place, and return
    /// (nil when there is none, or for a step that never accumulates).
    var backward: ((Tensor, [Tensor?]) throws -> [Tensor?])?
    /// Whether the step uses the second argument, so the engine looks the running sums up only for it.
    let accumulates: Bool

    init(op: String, edges: [Edge?], accumulates: Bool, backward: @escaping (Tensor, [Tensor?]) throws -> [Tensor?]) {
        self.op = op
        self.edges = edges
        self.accumulates = accumulates
        self.backward = backward
    }
}

/// Where an input's gradient goes: the node that made the input, or the leaf itself.
struct Edge {
    let node: GradientNode?
    let leaf: Tensor?
    let shape: [Int]
}

extension Tensor {
    /// True when an op over `inputs` must record a backward step.
    @inline(__always)
    static func needsGradient(_ inputs: Tensor...) -> Bool {
        GradientMode.isEnabled && inputs.contains { $0.requiresGrad }
    }

    @inline(__always)
    static func needsGradient(_ inputs: [Tensor]) -> Bool {
        GradientMode.isEnabled && inputs.contains { $0.requiresGrad }
    }

    /// Records how to take this tensor's gradient back to `inputs`.
    ///
    /// `backward` receives the gradient of this tensor (this tensor's shape) and returns one entry per
    /// input: nil where the input needs no gradient, otherwise a gradient in the input's shape or in any
    /// shape the input was broadcast to.
    func recordBackward(_ op: String, inputs: [Tensor], _ backward: @escaping (Tensor) throws -> [Tensor?]) {
        record(op, inputs: inputs, accumulates: false) { g, _ in try backward(g) }
    }

    /// Like `recordBackward`, for a step that can add an input's gradient into the sum already waiting for
    /// that input: `backward(g, sums)` gets, per input, that sum (its shape, the engine's own tensor, free to
    /// write) or nil; returning the very tensor it was given says "added in place", anything else is added by
    /// the engine as usual. A matrix product adds with beta = 1 and so skips a fresh buffer, its zeroing and
    /// an add pass for every further use of a value (q, k and v of one normed input; gate and up).
    func recordAccumulatingBackward(_ op: String, inputs: [Tensor],
                                    _ backward: @escaping (Tensor, [Tensor?]) throws -> [Tensor?]) {
        record(op, inputs: inputs, accumulates: true, backward)
    }

    private func record(_ op: String, inputs: [Tensor], accumulates: Bool,
                        _ backward: @escaping (Tensor, [Tensor?]) throws -> [Tensor?]) {
        let edges = inputs.map { input -> Edge? in
            guard input.requiresGrad else { return nil }
            if let node = input.gradientNode { return Edge(node: node, leaf: nil, shape: input.shape) }
            return Edge(node: nil, leaf: input, shape: input.shape)
        }
        gradientNode = GradientNode(op: op, edges: edges, accumulates: accumulates, backward: backward)
    }

    /// Back-propagates from this scalar, accumulating into every reachable leaf's `grad`.
    public func backward() throws {
        guard count == 1 else {
            throw TensorError.gradient("backward() needs a one-element tensor, got shape \(shape); pass a seed gradient")
        }
        try backward(seed: Tensor.filled(1, shape: shape))
    }

    /// Back-propagates `seed` (the gradient of some scalar with respect to this tensor).
    public func backward(seed: Tensor) throws {
        guard seed.shape == shape else {
            throw TensorError.shapeMismatch(op: "backward(seed:)", lhs: shape, rhs: seed.shape)
        }
        guard requiresGrad else {
            throw TensorError.gradient("this tensor does not require a gradient: no input of it was marked requiresGrad")
        }
        guard let root = gradientNode else {
            Tensor.accumulate(seed.copy(), intoLeaf: self)
            return
        }
        // Gradients waiting for their node, and whether the engine may add into them in place (a gradient
        // an op returned for two inputs is shared until someone adds to it; then the sum is a new tensor).
        var pending: [ObjectIdentifier: (tensor: Tensor, owned: Bool)] = [ObjectIdentifier(root): (seed, false)]
        for node in Tensor.topologicalOrder(from: root) {
            guard var gradient = pending.removeValue(forKey: ObjectIdentifier(node))?.tensor else { continue }
            guard let step = node.backward else {
                throw TensorError.gradient("the graph through '\(node.op)' was already used by a backward pass")
            }
            // The sums this step may add into: the engine's own pending sum of the input's node, or the leaf's
            // gradient so far.
            let sums: [Tensor?] = node.accumulates ? node.edges.map { edge in
                guard let edge else { return nil }
                if let next = edge.node {
                    guard let (sum, owned) = pending[ObjectIdentifier(next)], owned, sum.shape == edge.shape else { return nil }
                    return sum
                }
                return edge.leaf?.grad.flatMap { $0.shape == edge.shape ? $0 : nil }
            } : []
            let summedInPlace = sums.map { $0.map(ObjectIdentifier.init) }
            var results = try step(gradient, sums)
            node.backward = nil  // frees what the step captured
            gradient = Tensor(0)
            guard results.count == node.edges.count else {
                throw TensorError.gradient("'\(node.op)' returned \(results.count) gradients for \(node.edges.count) inputs")
            }
            for (i, edge) in node.edges.enumerated() {
                guard let edge, var g = results[i] else { continue }
                results[i] = nil
                if i < summedInPlace.count, let id = summedInPlace[i], id == ObjectIdentifier(g) { continue }
                if g.shape != edge.shape {
                    g = try g.summed(toShape: edge.shape, op: node.op)
                }
                if let next = edge.node {
                    let key = ObjectIdentifier(next)
                    if let (existing, owned) = pending[key] {
                        if owned {
                            existing.addInPlace(g)
                        } else {
                            pending[key] = (Elementwise.add(existing, g, shape: existing.shape), true)
                        }
                    } else {
                        let unique = isKnownUniquelyReferenced(&g) && TensorStorage.isExclusive(&g.values)
                        pending[key] = (g, unique)
                    }
                } else if let leaf = edge.leaf {
                    Tensor.accumulate(g, intoLeaf: leaf)
                }
            }
        }
    }

    /// `tensor` itself when nobody else can see it or its storage, otherwise a copy, so the engine
    /// may add into it in place.
    private static func owned(_ tensor: inout Tensor) -> Tensor {
        if isKnownUniquelyReferenced(&tensor) && TensorStorage.isExclusive(&tensor.values) {
            return tensor
        }
        return tensor.copy()
    }

    private static func accumulate(_ gradient: Tensor, intoLeaf leaf: Tensor) {
        if let existing = leaf.grad {
            existing.addInPlace(gradient)
        } else {
            var g = gradient
            leaf.grad = owned(&g)
        }
    }

    /// The ops recorded on the way to this tensor, inputs first (for tests that check which path ran).
    var recordedOps: [String] {
        guard let gradientNode else { return [] }
        return Tensor.topologicalOrder(from: gradientNode).map(\.op)
    }

    /// Nodes reachable from `root`, each after every node that feeds gradient into it (iterative DFS).
    private static func topologicalOrder(from root: GradientNode) -> [GradientNode] {
        var order: [GradientNode] = []
        var visited = Set<ObjectIdentifier>()
        var stack: [(node: GradientNode, nextEdge: Int)] = [(root, 0)]
        visited.insert(ObjectIdentifier(root))
        while !stack.isEmpty {
            let (node, index) = stack[stack.count - 1]
            if index < node.edges.count {
                stack[stack.count - 1].nextEdge += 1
                if let child = node.edges[index]?.node, visited.insert(ObjectIdentifier(child)).inserted {
                    stack.append((child, 0))
                }
            } else {
                order.append(node)
                stack.removeLast()
            }
        }
        return order.reversed()
    }

    /// Adds `other` (same element count) into this tensor's storage. Off the tape.
    func addInPlace(_ other: Tensor) {
        let n = count
        let dst = storage.pointer, src = other.storage.pointer
        Parallel.forChunks(count: n) { r in
            for i in r { dst[i] += src[i] }
        }
    }

    /// Sums a gradient of a broadcast shape down to `target`, the shape the input had.
    func summed(toShape target: [Int], op: String) throws -> Tensor {
        guard let axes = Broadcast.reducedAxes(from: shape, to: target) else {
            throw TensorError.gradient("'\(op)' returned a gradient of shape \(shape) for an input of shape \(target)")
        }
        return Reduce.sum(self, axes: axes, keepDims: true).reshapedStorage(target)
    }

    /// A view with a new shape over the same storage; off the tape.
    func reshapedStorage(_ newShape: [Int]) -> Tensor {
        Tensor(shape: newShape, storage: storage)
    }
}
