import Foundation
import FinchModels
import FinchNN
import FinchTensor

/// Single-stream greedy decoding, timed the way the peers time it.
///
/// On the W1–W3 shapes (`run(_:)`), as `../shared/peers/torch_generate_bench.py` measures transformers: a randomly
/// initialised model, a random prompt of 16 tokens, 8 new tokens to warm up, then 128 new tokens timed, prompt
/// included, with the key/value cache.
///
/// On a model file (`run(model:prompt:…)`), as `../shared/peers/llamacpp_generate_bench.py` measures llama.cpp:
/// prefill (the prompt through the model, the last position's logits out) and decoding (each new token chosen
/// and fed back) timed apart, a warm-up round first, medians of the repeats.
public enum GenerationBenchmark {
    public struct Result: Codable, Sendable {
        public let workload: String
        public let newTokens: Int
        public let millisecondsPerToken: Double
        public var tokensPerSecond: Double { 1000 / millisecondsPerToken }
    }

    public static let promptLength = 16, warmupTokens = 8, newTokens = 128

    public static func run(_ workload: WorkloadBenchmark.Workload) throws -> Result {
        let model = try LlamaForCausalLM(workload.config)
        HuggingFaceFolder.initializeRandomly(model, seed: 0)
        model.freeze()
        var generator = RandomGenerator(seed: 3)
        let prompt = (0..<promptLength).map { _ in Int(generator.next() % UInt64(workload.config.vocabularySize)) }
        _ = try Generation.generate(model: model, prompt: prompt, options: GenerationOptions(maxTokens: warmupTokens))
        let start = Date()
        let produced = try Generation.generate(model: model, prompt: prompt,
                                               options: GenerationOptions(maxTokens: newTokens))
        let seconds = Date().timeIntervalSince(start)
        return Result(workload: workload.name, newTokens: produced.count,
                      millisecondsPerToken: 1000 * seconds / Double(produced.count))
    }

    /// The text both Finch and the llama.cpp peer tokenise for their prompts (the peer script's own text).
    public static let promptText = String(repeating: "Once upon a time, in a small village by the sea, there lived an old clockmaker who ", count: 40)

    /// Prefill and decoding speed on one model.
    public struct ModelResult: Codable, Sendable {
        public let prefillTokens: Int
        public let prefillTokensPerSecond: Double
        public let decodePromptTokens: Int
        public let newTokens: Int
        public let decodeMillisecondsPerToken: Double
        public var decodeTokensPerSecond: Double { 1000 / decodeMillisecondsPerToken }
    }

    /// `prompt`'s first `prefillTokens` through the model (timed alone), then `newTokens` greedy tokens after its
    /// first `decodePromptTokens` (the steps after the first token timed: each feeds one token and chooses the
    /// next). One warm-up round, then medians of `repeats`.
    public static func run(model: any CausalLanguageModel, prompt: [Int], prefillTokens: Int = 256,
                           decodePromptTokens: Int = promptLength, newTokens: Int = newTokens, repeats: Int = 3,
                           quantizedActivations: Bool = true) throws -> ModelResult {
        guard prompt.count >= max(prefillTokens, decodePromptTokens), newTokens >= 2, repeats >= 1 else {
            throw TensorError.invalidArgument(op: "generation benchmark", message: "the prompt has \(prompt.count) tokens; "
                + "\(max(prefillTokens, decodePromptTokens)) are needed, and at least 2 new tokens and 1 repeat")
        }
        var prefill: [Double] = [], decode: [Double] = []
        for round in 0...repeats {
            let options = GenerationOptions(maxTokens: 1, quantizedActivations: quantizedActivations)
            let start = Date()
            _ = try Generation.generate(model: model, prompt: Array(prompt.prefix(prefillTokens)), options: options)
            let prefillSeconds = Date().timeIntervalSince(start)
            var first: Date?
            let produced = try Generation.generate(
                model: model, prompt: Array(prompt.prefix(decodePromptTokens)),
                options: GenerationOptions(maxTokens: newTokens, quantizedActivations: quantizedActivations),
                onToken: { _ in if first == nil { first = Date() } })
            let decodeSeconds = Date().timeIntervalSince(first!) / Double(produced.count - 1)
            if round > 0 {
                prefill.append(prefillSeconds)
                decode.append(decodeSeconds)
            }
        }
        let median = { (values: [Double]) in values.sorted()[values.count / 2] }
        return ModelResult(prefillTokens: prefillTokens, prefillTokensPerSecond: Double(prefillTokens) / median(prefill),
                           decodePromptTokens: decodePromptTokens, newTokens: newTokens,
                           decodeMillisecondsPerToken: 1000 * median(decode))
    }

    /// How decoding with 8-bit activations compares with the float32 path on the same tokens.
    public struct Agreement: Codable, Sendable {
        /// Greedy tokens compared, and how many of them (from the first) both paths choose alike.
        public let compared: Int
        public let identicalLeadingTokens: Int
        /// Along the float32 path's tokens, the largest |Δlogit| of any step over that step's largest |logit|.
        public let largestRelativeLogitDifference: Float
        /// Where the two first part: the float32 path's top-two logit margin there (nil when they never part).
        public let floatMarginWherePartingBegins: Float?
    }

    /// Greedy decoding of `count` tokens after `prompt`, with and without quantised activations: whether the
    /// tokens agree, and — feeding both the float32 path's tokens, each with its own cache — how far their logits
    /// are apart at every step.
    public static func agreement(model: any CausalLanguageModel, prompt: [Int], count: Int = 32) throws -> Agreement {
        let float = try Generation.generate(model: model, prompt: prompt,
                                            options: GenerationOptions(maxTokens: count, quantizedActivations: false))
        let integer = try Generation.generate(model: model, prompt: prompt,
                                              options: GenerationOptions(maxTokens: count, quantizedActivations: true))
        let identical = zip(float, integer).prefix { $0 == $1 }.count
        var largest: Float = 0, margin: Float?
        try GradientMode.withoutGradients {
            let caches = [model.makeCache(), model.makeCache()]
            var feed = prompt
            for step in 0..<float.count {
                let rows = try [false, true].enumerated().map { i, quantised in
                    try QuantizedMatrix.withQuantizedActivations(quantised) {
                        try model.lastLogits(feed.map(Int32.init), cache: caches[i], prefix: nil)
                    }
                }
                let scale = rows[0].map(abs).max() ?? 1
                largest = max(largest, zip(rows[0], rows[1]).map { abs($0 - $1) }.max()! / max(scale, 1e-30))
                if step == identical {
                    let sorted = rows[0].sorted(by: >)
                    margin = sorted[0] - sorted[1]
                }
                feed = [float[step]]
            }
        }
        return Agreement(compared: float.count, identicalLeadingTokens: identical,
                         largestRelativeLogitDifference: largest, floatMarginWherePartingBegins: margin)
    }
}
