/// Activation checkpointing: a block's intermediate values are not kept for the backward pass but computed
/// again when the gradient reaches the block.
///
/// `Tensor.checkpoint(inputs) { inputs in … }` runs the block with recording off, so nothing inside it is
/// held, and records one node on the block's output. Its backward runs the block a second time, now
/// recording, on fresh leaves that share the inputs' storage, back-propagates the incoming gradient through
/// that small graph (parameters used inside get their gradients there, as usual) and hands the leaves'
/// gradients on to the inputs. Memory falls to the blocks' outputs plus one block's intermediates; the
/// price is one more forward pass of every checkpointed block.
///
/// The block must be a function of `inputs` and of leaf tensors (parameters): a tensor made on the tape
/// outside the block has to come in through `inputs`, or the second run would back-propagate into the
/// outer graph early. Dropout inside the block draws its masks once; the second run reuses them, so both
/// runs compute the same values and the generator advances once. On the second run, values nothing reads (a
/// last product that only the block's output sums) are not computed at all (see `Recomputation`).
extension Tensor {
    public static func checkpoint(_ inputs: [Tensor], _ block: @escaping ([Tensor]) throws -> Tensor) throws -> Tensor {
        guard GradientMode.isEnabled else { return try block(inputs) }
        let masks = DropoutMasks()
        let output = try DropoutMasks.$current.withValue(masks) {
            try GradientMode.withoutGradients { try block(inputs) }
        }
        let needed = inputs.map(\.requiresGrad)
        output.recordBackward("checkpoint", inputs: inputs) { gradient in
            let leaves = zip(inputs, needed).map { input, needs in
                needs ? input.detached().requiringGrad() : input.detached()
            }
            masks.replaying = true
            masks.next = 0
            let recomputation = Recomputation()
            let recomputed = try DropoutMasks.$current.withValue(masks) {
                try Recomputation.$current.withValue(recomputation) {
                    try GradientMode.$isEnabled.withValue(true) { try block(leaves) }
                }
            }
            // What the block left unread (its output, and what only the output read) stays uncomputed.
            recomputation.discardUnread()
            guard recomputed.shape == gradient.shape else {
                throw TensorError.gradient("checkpoint: the block gave shape \(recomputed.shape) on its second run, \(gradient.shape) on its first")
            }
            guard masks.next == masks.masks.count else {
                throw TensorError.gradient("checkpoint: the block drew \(masks.masks.count) dropout masks on its first run, \(masks.next) on its second")
            }
            if recomputed.requiresGrad { try recomputed.backward(seed: gradient) }
            return zip(leaves, needed).map { leaf, needs in needs ? (leaf.grad ?? Tensor.zeros(leaf.shape)) : nil }
        }
        return output
    }
}

/// A checkpointed block's second run, whose output's values nobody reads: only its graph is back-propagated.
/// Ops whose results may be left uncomputed (`Tensor.computeValues`) defer them while it lasts; those still
/// unread when the block returns are given up before the backward pass, so their inputs' storage is free to be
/// reused for gradients there.
final class Recomputation: @unchecked Sendable {
    @TaskLocal static var current: Recomputation?

    var deferred: [Tensor] = []

    func discardUnread() {
        for tensor in deferred { tensor.discardPendingValues() }
        deferred = []
    }
}

/// The dropout masks a checkpointed block drew on its first run, handed out again in order on its second.
final class DropoutMasks: @unchecked Sendable {
    @TaskLocal static var current: DropoutMasks?

    var masks: [Tensor] = []
    var next = 0
    var replaying = false

    /// The mask for the next dropout call: made by `make` and kept on the first run, the kept one on the second.
    func mask(shape: [Int], _ make: () -> Tensor) throws -> Tensor {
        guard replaying else {
            let m = make()
            masks.append(m)
            return m
        }
        guard next < masks.count, masks[next].shape == shape else {
            throw TensorError.gradient("checkpoint: dropout call \(next + 1) of the block's second run asked for shape \(shape), which its first run did not draw")
        }
        next += 1
        return masks[next - 1]
    }
}
