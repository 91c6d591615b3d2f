import Foundation
import FinchFormats
import FinchNN
import FinchTensor

/// A decoder-only language model: token ids in, next-token logits out.
public protocol CausalLanguageModel: Module {
    var config: ModelConfig { get }
    var layerCount: Int { get }
    var keyValueHeadCount: Int { get }
    var headDimension: Int { get }
    var hiddenSize: Int { get }

    /// When on, training forgets each decoder layer's intermediate values after the forward pass and computes
    /// them again during the backward pass (`Tensor.checkpoint`): activation memory falls to one layer's worth
    /// plus the layers' inputs, for one extra forward pass of every layer but the last. Off by default;
    /// evaluation and generation ignore it.
    var checkpointsActivations: Bool { get set }

    /// Token ids laid out [batch, length] → the final hidden states [batch, length, hidden] (after the last norm).
    ///
    /// Positions start after what `cache` has seen and after the `prefix`'s virtual tokens (the Hugging Face
    /// convention for prefix tuning), so a cached step continues where the previous call stopped.
    /// `recordStarts` (B·T values) marks where each position's record starts among the keys (cached ones counted):
    /// records packed into one sequence, or prompts left-padded to one length. A position attends only within its
    /// record (and to the prefix) and counts its position from the record's start, as if the record were alone.
    func hiddenStates(_ tokens: [Int32], batch: Int, length: Int, cache: KVCache?, prefix: AttentionPrefix?,
                      recordStarts: [Int32]?) throws -> Tensor

    /// The language-model head's weight [vocabulary, hidden] (the token embedding when tied).
    var outputWeight: HeadWeight { get }

    /// The head as one product, logits = hidden' · weight'ᵀ: (hidden, outputWeight) unless an adapter on a
    /// tied embedding widens both (see `EmbeddingLayer.tiedHeadInputs`).
    func headInputs(_ hidden: Tensor) throws -> (hidden: Tensor, weight: HeadWeight)

    /// Gives the head its own reference to the embedding table (the same tensor, so nothing is copied and
    /// nothing changes yet), so that an adapter on the input embedding can leave the head as it was.
    /// Afterwards the config says `tie_word_embeddings: false`. Does nothing when the head is untied already.
    func untieWordEmbeddings() throws

    /// Whether the Hugging Face checkpoint stores this parameter transposed (GPT-2's `Conv1D` is [in, out]).
    func storesTransposed(_ name: String) -> Bool

    /// Checkpoint names that may be present without a parameter (buffers older transformers saved).
    func isIgnorableCheckpointKey(_ name: String) -> Bool
}

extension CausalLanguageModel {
    public var layerCount: Int { config.layerCount }
    public var keyValueHeadCount: Int { config.keyValueHeadCount }
    public var headDimension: Int { config.headDimension }
    public var hiddenSize: Int { config.hiddenSize }

    /// Runs the decoder `layers` over `x` in order, each with its slot of `cache` and its share of the prefix's keys
    /// and values, through `runLayer` (so activation checkpointing applies). `apply` is one layer's forward pass.
    func runLayers<Layer>(_ layers: [Layer], _ x: Tensor, batch: Int, cache: KVCache?, prefix: AttentionPrefix?,
                          _ apply: @escaping (Layer, Tensor, LayerCache?, (key: Tensor, value: Tensor)?) throws -> Tensor) throws -> Tensor {
        let prefixes = try prefixKeysAndValues(prefix, batch: batch)
        var x = x
        for (i, layer) in layers.enumerated() {
            let layerCache = cache?.layers[i]
            x = try runLayer(x, isLast: i == layers.count - 1, cache: layerCache, prefix: prefixes?[i]) { x, prefix in
                try apply(layer, x, layerCache, prefix)
            }
        }
        return x
    }

    /// Runs one decoder layer on `x`, checkpointed when `checkpointsActivations` is on and gradients are being
    /// recorded; the prefix's keys and values are the layer's inputs too, as they come from the tape. The last
    /// layer is not checkpointed: its backward pass follows the head's at once, so it would be computed again
    /// only to hold the same values at about the same moment.
    func runLayer(_ x: Tensor, isLast: Bool, cache: LayerCache?, prefix: (key: Tensor, value: Tensor)?,
                  _ layer: @escaping (Tensor, (key: Tensor, value: Tensor)?) throws -> Tensor) throws -> Tensor {
        guard checkpointsActivations, !isLast, cache == nil, GradientMode.isRecording else { return try layer(x, prefix) }
        let inputs = [x] + (prefix.map { [$0.key, $0.value] } ?? [])
        return try Tensor.checkpoint(inputs) { t in
            try layer(t[0], t.count == 3 ? (key: t[1], value: t[2]) : nil)
        }
    }

    /// The prefix's keys and values for every layer of this model, made once for a forward pass.
    func prefixKeysAndValues(_ prefix: AttentionPrefix?, batch: Int) throws -> [(key: Tensor, value: Tensor)]? {
        guard let prefix else { return nil }
        let layers = try prefix.keysAndValues(batch: batch)
        guard layers.count == layerCount else {
            throw TensorError.invalidArgument(
                op: config.modelType, message: "the prefix has keys and values for \(layers.count) layers; this model has \(layerCount)")
        }
        return layers
    }

    public func headInputs(_ hidden: Tensor) throws -> (hidden: Tensor, weight: HeadWeight) { (hidden, outputWeight) }

    public func hiddenStates(_ tokens: [Int32], batch: Int, length: Int, cache: KVCache?,
                             prefix: AttentionPrefix?) throws -> Tensor {
        try hiddenStates(tokens, batch: batch, length: length, cache: cache, prefix: prefix, recordStarts: nil)
    }

    /// Token ids laid out [batch, length] → logits [batch, length, vocabulary].
    public func logits(_ tokens: [Int32], batch: Int, length: Int, cache: KVCache?,
                       prefix: AttentionPrefix?) throws -> Tensor {
        let head = try headInputs(try hiddenStates(tokens, batch: batch, length: length, cache: cache, prefix: prefix))
        return try head.weight.logits(head.hidden)
    }

    /// The logits after the last of `tokens` (one sequence), the head run on that position alone: what decoding
    /// needs, without the [length, vocabulary] logits of the whole feed.
    public func lastLogits(_ tokens: [Int32], cache: KVCache?, prefix: AttentionPrefix?) throws -> [Float] {
        let hidden = try hiddenStates(tokens, batch: 1, length: tokens.count, cache: cache, prefix: prefix)
        let last = try hidden.slice(axis: 1, (tokens.count - 1)..<tokens.count).reshaped([1, hiddenSize])
        let head = try headInputs(last)
        return try head.weight.logits(head.hidden).scalars
    }

    /// Mean cross-entropy of the next-token `targets` (one per position, `Losses.ignoreIndex` to skip),
    /// through the fused head, so the [positions, vocabulary] logits are never held at once.
    public func loss(_ tokens: [Int32], batch: Int, length: Int, targets: [Int32], prefix: AttentionPrefix?,
                     recordStarts: [Int32]? = nil, teacher: DistillationTeacher? = nil) throws -> Tensor {
        let h = try hiddenStates(tokens, batch: batch, length: length, cache: nil, prefix: prefix,
                                 recordStarts: recordStarts)
        let head = try headInputs(try h.reshaped([batch * length, hiddenSize]))
        return try head.weight.crossEntropy(hidden: head.hidden, targets: targets, ignoreIndex: Losses.ignoreIndex,
                                            teacher: teacher)
    }

    /// Each position's next-token cross-entropy (0 where the target is `Losses.ignoreIndex`), without gradients: what
    /// comparing two models example by example needs. The logits are made 64 positions at a time.
    public func positionLosses(_ tokens: [Int32], batch: Int, length: Int, targets: [Int32],
                               prefix: AttentionPrefix?) throws -> [Double] {
        try GradientMode.withoutGradients {
            let h = try hiddenStates(tokens, batch: batch, length: length, cache: nil, prefix: prefix, recordStarts: nil)
            let head = try headInputs(try h.reshaped([batch * length, hiddenSize]))
            let kept = targets.indices.filter { targets[$0] != Losses.ignoreIndex }
            var losses = [Double](repeating: 0, count: targets.count)
            let width = head.hidden.shape[1], all = head.hidden.scalars
            for start in stride(from: 0, to: kept.count, by: 64) {
                let rows = Array(kept[start..<min(start + 64, kept.count)])
                let chunk = try Tensor(shape: [rows.count, width], scalars: rows.flatMap { all[($0 * width)..<($0 * width + width)] })
                let logits = try head.weight.logits(chunk).scalars
                let v = logits.count / rows.count
                for (i, row) in rows.enumerated() {
                    let values = logits[(i * v)..<(i * v + v)]
                    let m = Double(values.max()!)
                    let sum = values.reduce(0.0) { $0 + Foundation.exp(Double($1) - m) }
                    losses[row] = m + Foundation.log(sum) - Double(values[values.startIndex + Int(targets[row])])
                }
            }
            return losses
        }
    }

    /// This model as a distillation teacher on a batch: its hidden states (no graph is built) and its head.
    public func distillationTeacher(_ tokens: [Int32], batch: Int, length: Int, recordStarts: [Int32]? = nil,
                                    temperature: Float, alpha: Float) throws -> DistillationTeacher {
        try GradientMode.withoutGradients {
            let h = try hiddenStates(tokens, batch: batch, length: length, cache: nil, prefix: nil, recordStarts: recordStarts)
            let head = try headInputs(try h.reshaped([batch * length, hiddenSize]))
            return try head.weight.teacher(hidden: head.hidden, temperature: temperature, alpha: alpha)
        }
    }

    public func makeCache() -> KVCache { KVCache(layerCount: layerCount) }

    /// The first position of a forward pass, after `checkInputs` has checked the batch against this model.
    func checkedOffset(_ tokens: [Int32], batch: Int, length: Int, cache: KVCache?, prefix: AttentionPrefix?,
                       recordStarts: [Int32]?) throws -> Int {
        let offset = positionOffset(cache: cache, prefix: prefix)
        try checkInputs(tokens, batch: batch, length: length, config: config, positionOffset: offset,
                        recordStarts: recordStarts, cache: cache)
        return offset
    }

    /// The first position a new call will use.
    func positionOffset(cache: KVCache?, prefix: AttentionPrefix?) -> Int {
        (cache?.length ?? 0) + (prefix?.length ?? 0)
    }

    /// Number of values in every parameter.
    public var parameterCount: Int {
        namedParameters().reduce(0) { $0 + $1.tensor.count }
            + namedModules().reduce(0) { $0 + (($1.module as? any QuantizedModule).map { $0.quantized.rows * $0.quantized.columns } ?? 0) }
    }
}

/// What every model checks before a forward pass: the batch's shape, token ids within the vocabulary, positions
/// within the config's (the first at `positionOffset`), and record starts (one per token, no cache).
func checkInputs(_ tokens: [Int32], batch: Int, length: Int, config: ModelConfig, positionOffset: Int,
                 recordStarts: [Int32]?, cache: KVCache?) throws {
    guard tokens.count == batch * length, batch > 0, length > 0 else {
        throw TensorError.invalidArgument(op: "model", message: "\(tokens.count) token ids do not fill a [\(batch), \(length)] batch")
    }
    guard recordStarts != nil || positionOffset + length <= config.maxPositions else {
        throw TensorError.invalidArgument(op: config.modelType, message: "positions up to \(positionOffset + length) "
                                          + "exceed \(config.maxPositionsKey) \(config.maxPositions)")
    }
    let vocabulary = config.vocabularySize
    // A tokenizer with more tokens than the model (added tokens, a table never resized) shows up here.
    if let outside = tokens.first(where: { $0 < 0 || Int($0) >= vocabulary }) {
        throw TensorError.invalidArgument(op: "model", message: "token id \(outside) is outside the model's vocabulary of \(vocabulary) (vocab_size in config.json): does the tokenizer have tokens the model does not?")
    }
    if let recordStarts {
        guard recordStarts.count == tokens.count else {
            throw TensorError.invalidArgument(op: "model", message: "record starts need one value per token (\(tokens.count), got \(recordStarts.count))")
        }
        // A token's position counts from its record's start: each must lie within the positions the model has.
        let cached = cache?.length ?? 0
        for (n, start) in recordStarts.enumerated() where start < 0 || Int(start) > cached + n % length
            || positionOffset + n % length - Int(start) >= config.maxPositions {
            throw TensorError.invalidArgument(op: "model", message: "record start \(start) for token \(n % length) of row \(n / length) is not a key it can see")
        }
    }
}
