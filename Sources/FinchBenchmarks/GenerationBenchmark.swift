import Foundation
import FinchModels
import FinchTensor

/// Single-stream greedy decoding on the W1–W3 shapes, the way `../shared/peers/torch_generate_bench.py`
/// measures transformers: a randomly initialised model, a random prompt of 16 tokens, 8 new tokens to warm
/// up, then 128 new tokens timed, prompt included, with the key/value cache.
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
}
