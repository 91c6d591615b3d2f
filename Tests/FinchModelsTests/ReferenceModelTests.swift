import Foundation
import Testing
import TestSupport
import FinchFormats
import FinchNN
import FinchTensor
@testable import FinchModels

/// Both fixture families against transformers' own numbers.
@Suite("models against transformers")
struct ReferenceModelTests {
    static func windowTokens(_ reference: Reference, window: Int) -> [Int32] {
        reference.eval_token_ids[(window * reference.window)..<((window + 1) * reference.window)].map(Int32.init)
    }

    @Test(arguments: Fixtures.families)
    func windowZeroLogitsMatch(_ family: String) throws {
        let folder = try HuggingFaceFolder.load(Fixtures.path(family, "base"))
        let reference = try Fixtures.reference(family)
        let tokens = Self.windowTokens(reference, window: 0)
        let logits = try GradientMode.withoutGradients {
            try folder.model.logits(tokens, batch: 1, length: tokens.count, cache: nil, prefix: nil)
        }
        let expected = try SafetensorsFile(path: Fixtures.path(family, "reference.safetensors")).floats("base.logits.window0")
        #expect(logits.count == expected.count)
        let worst = zip(logits.scalars, expected).map { abs($0 - $1) }.max() ?? .infinity
        #expect(worst <= 1e-4, "\(family): worst logit difference \(worst)")
    }

    @Test(arguments: Fixtures.families)
    func windowedLossMatches(_ family: String) throws {
        let folder = try HuggingFaceFolder.load(Fixtures.path(family, "base"))
        let reference = try Fixtures.reference(family)
        let result = try Evaluation.windowedLoss(model: folder.model, tokens: reference.eval_token_ids,
                                                 sequenceLength: reference.window, maxWindows: reference.windows)
        #expect(result.windows == reference.windows)
        #expect(result.predictedTokens == reference.windows * (reference.window - 1))
        #expect(abs(result.loss - reference.base_loss) <= 1e-4, "\(family): \(result.loss) vs \(reference.base_loss)")
    }

    @Test(arguments: Fixtures.families)
    func greedyGenerationWithTheCacheMatchesAndAgreesWithoutIt(_ family: String) throws {
        let folder = try HuggingFaceFolder.load(Fixtures.path(family, "base"))
        let greedy = try Fixtures.reference(family).greedy
        var options = GenerationOptions(maxTokens: greedy.max_new_tokens)
        let cached = try Generation.generate(model: folder.model, prompt: greedy.prompt_ids, options: options)
        #expect(cached == greedy.base, "\(family) with cache")
        options.useCache = false
        let uncached = try Generation.generate(model: folder.model, prompt: greedy.prompt_ids, options: options)
        #expect(uncached == greedy.base, "\(family) without cache")
    }

    /// Batched greedy decoding gives every row what decoding it alone gives (transformers' ids for the reference
    /// prompt), and each row stops on its own stop token or its own `continuing`, while the others go on.
    @Test(arguments: Fixtures.families)
    func batchedGreedyGenerationMatchesOneRowAtATime(_ family: String) throws {
        let folder = try HuggingFaceFolder.load(Fixtures.path(family, "base"))
        let greedy = try Fixtures.reference(family).greedy
        let n = greedy.prompt_ids.count
        let other = greedy.prompt_ids.reversed().map { $0 }, third = Array(greedy.prompt_ids.dropFirst()) + [1]
        let alone = try [other, third].map {
            try Generation.generate(model: folder.model, prompt: $0, options: GenerationOptions(maxTokens: greedy.max_new_tokens))
        }
        let rows = try Generation.greedy(model: folder.model, prompts: [greedy.prompt_ids, other, third],
                                         maxTokens: greedy.max_new_tokens, stopTokens: [[], [], []])
        #expect(rows == [greedy.base] + alone, "\(family)")
        // Row 0 stops at the first appearance of its third token; row 1 after two tokens; row 2 runs on.
        let stop = greedy.base[2]
        let stopped = try Generation.greedy(model: folder.model, prompts: [greedy.prompt_ids, other, third],
                                            maxTokens: greedy.max_new_tokens, stopTokens: [[stop], [], []],
                                            continuing: { row, produced in row != 1 || produced.count < 2 })
        #expect(stopped[0] == Array(greedy.base[...greedy.base.firstIndex(of: stop)!]))
        #expect(stopped[1] == Array(alone[0].prefix(2)))
        #expect(stopped[2] == alone[1])
        #expect(throws: TensorError.self) {
            _ = try Generation.greedy(model: folder.model, prompts: [greedy.prompt_ids, []], maxTokens: 2, stopTokens: [[], []])
        }
        #expect(n > 1)
    }

    /// Prompts of different lengths, padded on the left in one batch, continue exactly as each does alone (row by
    /// row limits included); a row whose prompt and limit overrun the positions is refused before any work.
    @Test(arguments: Fixtures.families)
    func batchedGreedyGenerationPadsPromptsOfDifferentLengths(_ family: String) throws {
        let folder = try HuggingFaceFolder.load(Fixtures.path(family, "base"))
        let greedy = try Fixtures.reference(family).greedy
        let prompts = [greedy.prompt_ids, [greedy.prompt_ids[0]], Array(greedy.prompt_ids.reversed().dropFirst(2)),
                       greedy.prompt_ids + greedy.prompt_ids]
        let limits = [greedy.max_new_tokens, greedy.max_new_tokens, 3, greedy.max_new_tokens]
        let alone = try prompts.indices.map {
            try Generation.generate(model: folder.model, prompt: prompts[$0], options: GenerationOptions(maxTokens: limits[$0]))
        }
        let rows = try Generation.greedy(model: folder.model, prompts: prompts, maxTokens: limits,
                                         stopTokens: [Set<Int>](repeating: [], count: prompts.count))
        #expect(rows == alone, "\(family)")
        #expect(rows[0] == greedy.base)
        let positions = folder.config.maxPositions
        #expect(throws: TensorError.self) {
            _ = try Generation.greedy(model: folder.model, prompts: [[1], [1, 2]], maxTokens: [2, positions],
                                      stopTokens: [[], []])
        }
    }

    /// Generation runs to the last position the model has, and a request for more fails before any work.
    @Test(arguments: Fixtures.families)
    func generationFillsThePositionsAndRefusesMore(_ family: String) throws {
        let folder = try HuggingFaceFolder.load(Fixtures.path(family, "base"))
        let positions = folder.config.maxPositions, prompt = [1, 2, 3]
        let fits = positions - prompt.count + 1
        let produced = try Generation.generate(model: folder.model, prompt: prompt,
                                               options: GenerationOptions(maxTokens: fits))
        #expect(produced.count == fits)
        var calls = 0
        #expect(throws: TensorError.self) {
            _ = try Generation.generate(model: folder.model, prompt: prompt,
                                        options: GenerationOptions(maxTokens: fits + 1)) { _ in calls += 1 }
        }
        #expect(calls == 0)
    }

    /// A token id the model's table does not have (a tokenizer with added tokens) is named with the vocabulary size.
    @Test(arguments: Fixtures.families)
    func aTokenOutsideTheVocabularyIsNamed(_ family: String) throws {
        let folder = try HuggingFaceFolder.load(Fixtures.path(family, "base"))
        let v = folder.config.vocabularySize
        #expect { try folder.model.logits([1, Int32(v), 2], batch: 1, length: 3, cache: nil, prefix: nil) } throws: {
            "\($0)".contains("token id \(v) is outside the model's vocabulary of \(v) (vocab_size in config.json)")
        }
    }

    /// A text shorter than one window is one window of its own length, and says so.
    @Test func aShortTextIsOneWindowOfItsLength() throws {
        let model = try HuggingFaceFolder.load(Fixtures.path("llama-gqa", "base")).model
        let r = try Evaluation.windowedLoss(model: model, tokens: [1, 5, 9, 4, 7], sequenceLength: 64)
        #expect(r.windows == 1 && r.sequenceLength == 5 && r.predictedTokens == 4)
    }

    /// More positions than the config allows are named with the config's key, not met deep in the positions' table.
    @Test(arguments: Fixtures.families)
    func moreTokensThanPositionsAreNamed(_ family: String) throws {
        let folder = try HuggingFaceFolder.load(Fixtures.path(family, "base"))
        let n = folder.config.maxPositions + 1, key = family == "gpt2" ? "n_positions" : "max_position_embeddings"
        #expect { try folder.model.logits([Int32](repeating: 1, count: n), batch: 1, length: n, cache: nil, prefix: nil) } throws: {
            "\($0)".contains("positions up to \(n) exceed \(key) \(n - 1)")
        }
    }

    @Test(arguments: Fixtures.families)
    func cachedLogitsEqualFullSequenceLogits(_ family: String) throws {
        let model = try HuggingFaceFolder.load(Fixtures.path(family, "base")).model
        let tokens = Self.windowTokens(try Fixtures.reference(family), window: 1)
        try GradientMode.withoutGradients {
            let full = try model.logits(tokens, batch: 1, length: tokens.count, cache: nil, prefix: nil)
            let cache = model.makeCache()
            _ = try model.logits(Array(tokens[0..<30]), batch: 1, length: 30, cache: cache, prefix: nil)
            let step = try model.logits([tokens[30]], batch: 1, length: 1, cache: cache, prefix: nil)
            let v = full.shape[2]
            let expected = Array(full.scalars[(30 * v)..<(31 * v)])
            let worst = zip(step.scalars, expected).map { abs($0 - $1) }.max()!
            #expect(worst < 1e-4, "\(family): \(worst)")
        }
    }
}

/// Variants the shared fixtures do not reach, against transformers' logits: GPT-NeoX's sequential residual, tanh
/// GELU and half-rotary heads; GPT-Neo's local layers and Mistral's sliding window where they hide keys.
@Suite("family variants against transformers")
struct FamilyVariantTests {
    @Test func sequentialResidualTanhGELUAndHalfRotaryMatch() throws {
        let folder = try HuggingFaceFolder.load(Fixtures.path("gpt-neox", "sequential"))
        guard case .gptNeoX(let c) = folder.config else { Issue.record("not read as gpt_neox"); return }
        #expect(!c.useParallelResidual && c.activation == .geluTanh && c.rotaryDimensions == 8)
        let tokens = try Fixtures.reference("gpt-neox").eval_token_ids.prefix(48).map(Int32.init)
        let logits = try GradientMode.withoutGradients {
            try folder.model.logits(tokens, batch: 1, length: tokens.count, cache: nil, prefix: nil)
        }
        let expected = try SafetensorsFile(path: Fixtures.path("gpt-neox", "sequential/logits.safetensors")).floats("logits")
        let worst = zip(logits.scalars, expected).map { abs($0 - $1) }.max() ?? .infinity
        #expect(logits.count == expected.count && worst <= 1e-4, "worst logit difference \(worst)")
    }
}

extension FamilyVariantTests {
    /// GPT-Neo's local layers and Mistral's sliding window over the last 8 positions: the logits of 48 tokens, and
    /// the same logits decoding them one step at a time through the cache (the window then counts cached keys).
    @Test(arguments: ["gpt-neo", "mistral"])
    func slidingWindowsMatchWithAndWithoutTheCache(_ family: String) throws {
        let folder = try HuggingFaceFolder.load(Fixtures.path(family, "windowed"))
        switch folder.config {
        case .gptNeo(let c): #expect(c.windowSize == 8 && c.localLayers == [false, true, false, true])
        case .llama(let c): #expect(c.family == .mistral && c.slidingWindow == 8)
        default: Issue.record("\(family) read as \(folder.config.modelType)")
        }
        let tokens = try Fixtures.reference(family).eval_token_ids.prefix(48).map(Int32.init)
        let expected = try SafetensorsFile(path: Fixtures.path(family, "windowed/logits.safetensors")).floats("logits")
        try GradientMode.withoutGradients {
            let full = try folder.model.logits(tokens, batch: 1, length: tokens.count, cache: nil, prefix: nil).scalars
            let worst = zip(full, expected).map { abs($0 - $1) }.max() ?? .infinity
            #expect(full.count == expected.count && worst <= 1e-4, "worst logit difference \(worst)")
            let cache = folder.model.makeCache()
            var stepped = try folder.model.logits(Array(tokens.prefix(20)), batch: 1, length: 20, cache: cache, prefix: nil).scalars
            for token in tokens.dropFirst(20) {
                stepped += try folder.model.logits([token], batch: 1, length: 1, cache: cache, prefix: nil).scalars
            }
            let worstStepped = zip(stepped, expected).map { abs($0 - $1) }.max() ?? .infinity
            #expect(stepped.count == expected.count && worstStepped <= 1e-4, "cached: worst logit difference \(worstStepped)")
        }
    }
}

extension FamilyVariantTests {
    /// Two virtual positions of zeros for every layer.
    final class ZeroPrefix: AttentionPrefix {
        let layers: Int, heads: Int, dimension: Int
        init(layers: Int, heads: Int, dimension: Int) { (self.layers, self.heads, self.dimension) = (layers, heads, dimension) }
        var length: Int { 2 }
        func keysAndValues(batch: Int) throws -> [(key: Tensor, value: Tensor)] {
            (0..<layers).map { _ in (Tensor.zeros([batch, 2, heads, dimension]), Tensor.zeros([batch, 2, heads, dimension])) }
        }
    }

    /// transformers counts a prefix's virtual keys inside the window, which Finch's attention does not: past the
    /// window a prefix is refused by name, within it the model runs.
    @Test(arguments: ["gpt-neo", "mistral"])
    func aPrefixPastTheWindowIsRefused(_ family: String) throws {
        let model = try HuggingFaceFolder.load(Fixtures.path(family, "windowed")).model
        let prefix = ZeroPrefix(layers: model.layerCount, heads: model.keyValueHeadCount, dimension: model.headDimension)
        let key = family == "mistral" ? "sliding_window 8" : "window_size 8"
        #expect { try model.logits([Int32](repeating: 5, count: 7), batch: 1, length: 7, cache: nil, prefix: prefix) } throws: {
            "\($0)".contains(key)
        }
        _ = try model.logits([Int32](repeating: 5, count: 6), batch: 1, length: 6, cache: nil, prefix: prefix)
    }
}
