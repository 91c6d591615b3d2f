import Foundation
import FinchNN
import FinchTensor

/// How `generate` picks each next token.
public struct GenerationOptions: Sendable {
    public var maxTokens: Int
    /// 0 picks the most likely token (greedy); above 0 samples from softmax(logits / temperature).
    public var temperature: Float
    /// Keep only the k most likely tokens before sampling (nil: all).
    public var topK: Int?
    /// Keep the smallest set of most likely tokens whose probability reaches p (nil: all).
    public var topP: Float?
    public var seed: UInt64
    /// Generation stops after emitting one of these.
    public var stopTokens: Set<Int>
    /// Use the key/value cache (the no-cache path re-runs the whole sequence; for checking).
    public var useCache: Bool
    /// Over a base kept in ggml's Q4_0, Q4_1 or Q8_0 blocks, multiply the blocks by activations quantised to
    /// 8 bits when a step feeds a few tokens, as llama.cpp does (`QuantizedMatrix.withQuantizedActivations`);
    /// false keeps every product x · deq(W)ᵀ in float32, as training computes it.
    public var quantizedActivations: Bool

    public init(maxTokens: Int = 64, temperature: Float = 0, topK: Int? = nil, topP: Float? = nil, seed: UInt64 = 0,
                stopTokens: Set<Int> = [], useCache: Bool = true, quantizedActivations: Bool = true) {
        self.maxTokens = maxTokens
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.seed = seed
        self.stopTokens = stopTokens
        self.useCache = useCache
        self.quantizedActivations = quantizedActivations
    }
}

public enum Generation {
    /// Continues `prompt`, calling `onToken` with each new token as soon as it is chosen, until a stop token,
    /// `maxTokens`, or `continuing` (given the tokens so far) says no more are wanted.
    /// Returns the new tokens (the stop token included when one ended generation).
    public static func generate(
        model: any CausalLanguageModel, prompt: [Int], options: GenerationOptions,
        prefix: AttentionPrefix? = nil, onToken: (Int) -> Void = { _ in },
        continuing: ([Int]) -> Bool = { _ in true }
    ) throws -> [Int] {
        guard !prompt.isEmpty else {
            throw TensorError.invalidArgument(op: "generate", message: "the prompt is empty; give at least one token")
        }
        // Every token but the last one generated is fed back at the next position.
        let positions = model.config.maxPositions - (prefix?.length ?? 0)
        guard prompt.count + options.maxTokens - 1 <= positions else {
            let room = positions - prompt.count + 1
            throw TensorError.invalidArgument(op: "generate", message: "the prompt's \(prompt.count) tokens and \(options.maxTokens) new ones "
                + "do not fit in the model's \(positions) positions\(prefix == nil ? "" : " (after the prefix's virtual tokens)"); "
                + (room > 0 ? "at most \(room) new tokens fit" : "the prompt alone is too long"))
        }
        var generator = RandomGenerator(seed: options.seed)
        var produced: [Int] = []
        try GradientMode.withoutGradients { try QuantizedMatrix.withQuantizedActivations(options.quantizedActivations) {
            let cache = options.useCache ? model.makeCache() : nil
            var sequence = prompt
            var input = prompt
            while produced.count < options.maxTokens {
                let feed = options.useCache ? input : sequence
                let row = try model.lastLogits(feed.map(Int32.init), cache: cache, prefix: prefix)
                let next = try choose(row, options: options, generator: &generator)
                produced.append(next)
                onToken(next)
                if options.stopTokens.contains(next) || !continuing(produced) { break }
                sequence.append(next)
                input = [next]
            }
        } }
        return produced
    }

    /// Greedy continuation of several prompts at once, sharing every forward pass (decoding one row reads all the
    /// weights for one token; a batch reads them once for all its rows). Prompts of different lengths are padded on
    /// the left to the longest; each row attends only from its first real token and counts its positions from there,
    /// so it continues as it would alone. Row `r` stops after one of `stopTokens[r]`, after `maxTokens[r]`, or when
    /// `continuing(r, tokens so far)` says no more are wanted; a finished row leaves the batch. Returns each row's new
    /// tokens (the stop token included when one ended it). `quantizedActivations` as in `GenerationOptions`.
    public static func greedy(
        model: any CausalLanguageModel, prompts: [[Int]], maxTokens: [Int], stopTokens: [Set<Int>],
        prefix: AttentionPrefix? = nil, quantizedActivations: Bool = true,
        continuing: (Int, [Int]) -> Bool = { _, _ in true }
    ) throws -> [[Int]] {
        let rows = prompts.count
        guard rows > 0 else { return [] }
        guard prompts.allSatisfy({ !$0.isEmpty }), stopTokens.count == rows, maxTokens.count == rows else {
            throw TensorError.invalidArgument(op: "generate", message: "a batch needs non-empty prompts, and a stop set and a token limit per row")
        }
        let positions = model.config.maxPositions - (prefix?.length ?? 0)
        for (r, prompt) in prompts.enumerated() where prompt.count + maxTokens[r] - 1 > positions {
            throw TensorError.invalidArgument(op: "generate", message: "prompt \(r + 1)'s \(prompt.count) tokens and \(maxTokens[r]) new ones "
                + "do not fit in the model's \(positions) positions")
        }
        let length = prompts.map(\.count).max()!
        let padding = prompts.map { length - $0.count }
        // Equal lengths need no record starts; otherwise each row's real tokens start after its padding (a pad
        // position sees only pads before it, and nothing sees it but other pads).
        let padded = padding.allSatisfy { $0 == 0 }
            ? nil : padding.flatMap { pad in (0..<length).map { Int32($0 < pad ? 0 : pad) } }
        var produced = [[Int]](repeating: [], count: rows)
        // The rows still generating, in batch order: a finished row leaves the batch and its cache.
        var live = prompts.indices.filter { maxTokens[$0] > 0 }
        try GradientMode.withoutGradients { try QuantizedMatrix.withQuantizedActivations(quantizedActivations) {
            let cache = model.makeCache()
            // Padding repeats the row's first token: any id in the vocabulary would do, as nothing real sees it.
            var input = prompts.indices.flatMap { [Int](repeating: prompts[$0][0], count: padding[$0]) + prompts[$0] }
            var starts = padded
            var feedLength = length
            if live.count < rows {
                input = live.flatMap { input[($0 * length)..<(($0 + 1) * length)] }
                starts = starts.map { s in live.flatMap { s[($0 * length)..<(($0 + 1) * length)] } }
            }
            while !live.isEmpty {
                let hidden = try model.hiddenStates(input.map(Int32.init), batch: live.count, length: feedLength,
                                                    cache: cache, prefix: prefix, recordStarts: starts)
                // Only the last position of each row is continued: the head runs on those rows alone.
                let last = try hidden.slice(axis: 1, (feedLength - 1)..<feedLength).reshaped([live.count, model.hiddenSize])
                let head = try model.headInputs(last)
                let logits = try head.weight.logits(head.hidden)
                let v = logits.shape[1]
                var kept: [Int] = []
                withExtendedLifetime(logits) {
                    let values = logits.storage.buffer
                    for (i, r) in live.enumerated() {
                        let next = argmax(UnsafeBufferPointer(rebasing: values[(i * v)..<((i + 1) * v)]))
                        produced[r].append(next)
                        if !(stopTokens[r].contains(next) || produced[r].count >= maxTokens[r] || !continuing(r, produced[r])) {
                            kept.append(i)
                        }
                    }
                }
                if kept.count < live.count, !kept.isEmpty { try cache.keepRows(kept) }
                live = kept.map { live[$0] }
                input = live.map { produced[$0].last! }
                feedLength = 1
                starts = padded == nil ? nil : live.map { Int32(padding[$0]) }
            }
        } }
        return produced
    }

    /// `greedy` with one token limit for every row.
    public static func greedy(
        model: any CausalLanguageModel, prompts: [[Int]], maxTokens: Int, stopTokens: [Set<Int>],
        prefix: AttentionPrefix? = nil, quantizedActivations: Bool = true,
        continuing: (Int, [Int]) -> Bool = { _, _ in true }
    ) throws -> [[Int]] {
        try greedy(model: model, prompts: prompts, maxTokens: [Int](repeating: maxTokens, count: prompts.count),
                   stopTokens: stopTokens, prefix: prefix, quantizedActivations: quantizedActivations, continuing: continuing)
    }

    /// The index of the largest value (the first of equal ones): the greedy choice.
    static func argmax(_ values: UnsafeBufferPointer<Float>) -> Int {
        var best = 0
        for i in values.indices.dropFirst() where values[i] > values[best] { best = i }
        return best
    }

    /// Greedy argmax, or a sample after temperature, top-k and top-p.
    public static func choose(_ logits: [Float], options: GenerationOptions,
                              generator: inout RandomGenerator) throws -> Int {
        if options.temperature <= 0 { return logits.withUnsafeBufferPointer(argmax) }
        var order = logits.indices.sorted { logits[$0] > logits[$1] }
        if let k = options.topK {
            guard k > 0 else { throw TensorError.invalidArgument(op: "generate", message: "top-k must be positive, got \(k)") }
            order = Array(order.prefix(k))
        }
        let top = logits[order[0]]
        var weights = order.map { Foundation.exp(Double((logits[$0] - top) / options.temperature)) }
        let sum = weights.reduce(0, +)
        weights = weights.map { $0 / sum }
        if let p = options.topP {
            guard p > 0, p <= 1 else { throw TensorError.invalidArgument(op: "generate", message: "top-p must be in (0, 1], got \(p)") }
            var cumulative = 0.0, keep = 0
            while keep < weights.count {
                cumulative += weights[keep]
                keep += 1
                if cumulative >= Double(p) { break }
            }
            order = Array(order.prefix(keep))
            weights = Array(weights.prefix(keep))
            let s = weights.reduce(0, +)
            weights = weights.map { $0 / s }
        }
        var u = generator.nextUniformDouble()
        for (i, w) in weights.enumerated() {
            u -= w
            if u < 0 { return order[i] }
        }
        return order[order.count - 1]
    }
}

