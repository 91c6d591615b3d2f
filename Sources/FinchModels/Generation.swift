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

    public init(maxTokens: Int = 64, temperature: Float = 0, topK: Int? = nil, topP: Float? = nil, seed: UInt64 = 0,
                stopTokens: Set<Int> = [], useCache: Bool = true) {
        self.maxTokens = maxTokens
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.seed = seed
        self.stopTokens = stopTokens
        self.useCache = useCache
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
        try GradientMode.withoutGradients {
            let cache = options.useCache ? model.makeCache() : nil
            var sequence = prompt
            var input = prompt
            while produced.count < options.maxTokens {
                let feed = options.useCache ? input : sequence
                let logits = try model.logits(feed.map(Int32.init), batch: 1, length: feed.count, cache: cache,
                                              prefix: prefix)
                let v = logits.shape[2]
                let row = Array(logits.storage.buffer[((feed.count - 1) * v)..<(feed.count * v)])
                let next = try choose(row, options: options, generator: &generator)
                produced.append(next)
                onToken(next)
                if options.stopTokens.contains(next) || !continuing(produced) { break }
                sequence.append(next)
                input = [next]
            }
        }
        return produced
    }

    /// Greedy continuation of several prompts of the same length at once, sharing every forward pass (decoding one
    /// row reads all the weights for one token; a batch reads them once for all its rows). Row `r` stops after one
    /// of `stopTokens[r]`, after `maxTokens`, or when `continuing(r, tokens so far)` says no more are wanted; a
    /// finished row is still fed (its last token) until every row has finished, and its result no longer changes.
    /// Returns each row's new tokens (the stop token included when one ended it).
    public static func greedy(
        model: any CausalLanguageModel, prompts: [[Int]], maxTokens: Int, stopTokens: [Set<Int>],
        prefix: AttentionPrefix? = nil, continuing: (Int, [Int]) -> Bool = { _, _ in true }
    ) throws -> [[Int]] {
        let rows = prompts.count
        guard rows > 0 else { return [] }
        let length = prompts[0].count
        guard length > 0, prompts.allSatisfy({ $0.count == length }), stopTokens.count == rows else {
            throw TensorError.invalidArgument(op: "generate", message: "a batch needs non-empty prompts of one length and a stop set per row")
        }
        let positions = model.config.maxPositions - (prefix?.length ?? 0)
        guard length + maxTokens - 1 <= positions else {
            throw TensorError.invalidArgument(op: "generate", message: "the prompts' \(length) tokens and \(maxTokens) new ones "
                + "do not fit in the model's \(positions) positions")
        }
        var produced = [[Int]](repeating: [], count: rows)
        var done = [Bool](repeating: maxTokens <= 0, count: rows)
        try GradientMode.withoutGradients {
            let cache = model.makeCache()
            var input = prompts.flatMap { $0 }
            var feedLength = length
            while done.contains(false) {
                let hidden = try model.hiddenStates(input.map(Int32.init), batch: rows, length: feedLength, cache: cache,
                                                    prefix: prefix)
                // Only the last position of each row is continued: the head runs on those rows alone.
                let last = try hidden.slice(axis: 1, (feedLength - 1)..<feedLength).reshaped([rows, model.hiddenSize])
                let head = try model.headInputs(last)
                let logits = try head.hidden.matmul(head.weight, transposeOther: true)
                let v = logits.shape[1]
                var next = [Int](repeating: 0, count: rows)
                withExtendedLifetime(logits) {
                    let values = logits.storage.buffer
                    for r in 0..<rows {
                        if done[r] { next[r] = produced[r].last ?? prompts[r][length - 1]; continue }
                        next[r] = argmax(UnsafeBufferPointer(rebasing: values[(r * v)..<((r + 1) * v)]))
                        produced[r].append(next[r])
                        if stopTokens[r].contains(next[r]) || produced[r].count >= maxTokens || !continuing(r, produced[r]) {
                            done[r] = true
                        }
                    }
                }
                input = next
                feedLength = 1
            }
        }
        return produced
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

