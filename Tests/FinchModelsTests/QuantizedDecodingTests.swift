import Testing
import FinchFormats
import FinchNN
@testable import FinchTensor
@testable import FinchModels

/// Decoding over ggml's blocks with 8-bit activations: used when generation asks for it and a step feeds few
/// tokens, close to the float32 products, and without effect on a float32 model.
@Suite("decoding with quantised activations")
struct QuantizedDecodingTests {
    static func model(_ mode: BaseQuantization) throws -> LlamaForCausalLM {
        let config = LlamaConfig(vocabularySize: 96, hiddenSize: 64, intermediateSize: 128, layerCount: 2, headCount: 4,
                                 keyValueHeadCount: 2, maxPositionEmbeddings: 64)
        let model = try LlamaForCausalLM(config)
        HuggingFaceFolder.initializeRandomly(model, seed: 11, standardDeviation: 0.3)
        if mode != .none { _ = try QuantizedBase.quantize(model, as: mode) }
        model.freeze()
        return model
    }

    /// The logits of one cached step after a prompt, with or without 8-bit activations.
    static func stepLogits(_ model: LlamaForCausalLM, quantised: Bool) throws -> [Float] {
        try GradientMode.withoutGradients {
            try QuantizedMatrix.withQuantizedActivations(quantised) {
                let cache = model.makeCache()
                _ = try model.lastLogits([3, 1, 4, 1, 5, 9, 2, 6, 5, 3], cache: cache, prefix: nil)
                return try model.lastLogits([7], cache: cache, prefix: nil)
            }
        }
    }

    @Test(arguments: [BaseQuantization.q4_0, .q4_1, .q8_0])
    func aStepIsCloseToTheFloatProducts(_ mode: BaseQuantization) throws {
        let model = try Self.model(mode)
        let exact = try Self.stepLogits(model, quantised: false), integer = try Self.stepLogits(model, quantised: true)
        #expect(exact != integer, "the integer products were not used")
        let scale = exact.map(abs).max()!
        let worst = zip(exact, integer).map { abs($0 - $1) }.max()!
        #expect(worst <= 0.03 * scale, "\(mode): \(worst) of \(scale)")
        // The last position's logits are the full logits' last row (to rounding: a product of one row is
        // summed in another order than one of eleven).
        let full = try GradientMode.withoutGradients { try model.logits([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 7], batch: 1, length: 11, cache: nil, prefix: nil) }
        let cachedFloat = try GradientMode.withoutGradients { try model.lastLogits([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 7], cache: nil, prefix: nil) }
        let last = Array(full.scalars.suffix(96))
        #expect(zip(last, cachedFloat).allSatisfy { abs($0 - $1) <= 1e-5 * scale })
    }

    @Test func generationAsksForItAndAFloatModelIsUnchanged() throws {
        let quantised = try Self.model(.q4_1)
        var options = GenerationOptions(maxTokens: 12)
        let fast = try Generation.generate(model: quantised, prompt: [1, 2, 3], options: options)
        options.quantizedActivations = false
        let exact = try Generation.generate(model: quantised, prompt: [1, 2, 3], options: options)
        #expect(fast.count == 12 && exact.count == 12)
        let dense = try Self.model(.none)
        #expect(try Self.stepLogits(dense, quantised: true) == (try Self.stepLogits(dense, quantised: false)))
        let batched = try Generation.greedy(model: quantised, prompts: [[1, 2, 3]], maxTokens: 12, stopTokens: [[]])
        #expect(batched == [fast])
    }
}
