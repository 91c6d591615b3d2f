import Foundation
import Testing
import TestSupport
import FinchFormats
import FinchModels
import FinchNN
import FinchTensor
@testable import FinchAdapters

/// PEFT-made adapters on both fixture families, against PEFT's own numbers.
@Suite("adapters against PEFT")
struct PEFTReferenceTests {
    static func load(_ family: String, adapter: String) throws -> (any CausalLanguageModel, Adapter) {
        let model = try HuggingFaceFolder.load(Fixtures.path(family, "base")).model
        return (model, try PEFTFormat.load(Fixtures.path(family, adapter), into: model))
    }

    static func batch(_ reference: Reference) -> [Int32] {
        Array(reference.eval_token_ids.prefix(reference.window * reference.windows)).map(Int32.init)
    }

    @Test(arguments: Fixtures.families)
    func loraAndPrefixLossesMatch(_ family: String) throws {
        let reference = try Fixtures.reference(family)
        for (name, expected) in [("lora", reference.lora_loss), ("prefix", reference.prefix_loss)] {
            let (model, adapter) = try Self.load(family, adapter: name)
            let result = try Evaluation.windowedLoss(model: model, tokens: reference.eval_token_ids,
                                                     sequenceLength: reference.window,
                                                     maxWindows: reference.windows, prefix: adapter.attentionPrefix)
            #expect(abs(result.loss - expected) <= 1e-4, "\(family) \(name): \(result.loss) vs \(expected)")
        }
    }

    @Test(arguments: Fixtures.families)
    func windowZeroLogitsMatch(_ family: String) throws {
        let reference = try Fixtures.reference(family)
        let tokens = Array(Self.batch(reference).prefix(reference.window))
        let expected = try SafetensorsFile(path: Fixtures.path(family, "reference.safetensors"))
        for name in ["lora", "prefix"] {
            let (model, adapter) = try Self.load(family, adapter: name)
            let logits = try GradientMode.withoutGradients {
                try model.logits(tokens, batch: 1, length: tokens.count, cache: nil, prefix: adapter.attentionPrefix)
            }
            let worst = zip(logits.scalars, try expected.floats("\(name).logits.window0")).map { abs($0 - $1) }.max()!
            #expect(worst <= 1e-4, "\(family) \(name): worst logit difference \(worst)")
        }
    }

    @Test(arguments: Fixtures.families)
    func greedyGenerationMatchesTokenForToken(_ family: String) throws {
        let greedy = try Fixtures.reference(family).greedy
        for (name, expected) in [("lora", greedy.lora), ("prefix", greedy.prefix)] {
            let (model, adapter) = try Self.load(family, adapter: name)
            for useCache in [true, false] {
                let out = try Generation.generate(model: model, prompt: greedy.prompt_ids,
                                                  options: GenerationOptions(maxTokens: greedy.max_new_tokens, useCache: useCache),
                                                  prefix: adapter.attentionPrefix)
                #expect(out == expected, "\(family) \(name) cache \(useCache)")
            }
        }
    }

    @Test(arguments: Fixtures.families)
    func loraGradientsMatchPEFT(_ family: String) throws {
        let reference = try Fixtures.reference(family)
        let (model, adapter) = try Self.load(family, adapter: "lora")
        let tokens = Self.batch(reference)
        let logits = try model.logits(tokens, batch: reference.windows, length: reference.window, cache: nil,
                                      prefix: nil)
        let loss = try Losses.causalLanguageModel(logits: logits, tokens: tokens)
        #expect(abs(Double(try loss.item()) - reference.lora_loss) <= 1e-4)
        try loss.backward()
        let expected = try SafetensorsFile(path: Fixtures.path(family, "reference.safetensors"))
        var checked = 0
        for (key, tensor) in adapter.trainableParameters {
            let want = try expected.floats("grad." + key)
            let got = try #require(tensor.grad, "no gradient for \(key)").scalars
            let scale = want.map(abs).max() ?? 1
            let worst = zip(got, want).map { abs($0 - $1) }.max() ?? .infinity
            // 1e-4 of the largest entry, or twice what float32 itself allows where that is more (GPT-Neo's q and k:
            // PyTorch's own float32 gradient is 1.2e-4 from float64's).
            let allowed = max(1e-4, 2 * (reference.float32_gradient_error?[key] ?? 0))
            #expect(worst <= Float(allowed) * scale, "\(family) \(key): worst \(worst), largest entry \(scale)")
            checked += 1
        }
        #expect(checked > 0 && checked == expected.names.filter { $0.hasPrefix("grad.") }.count)
        #expect(model.namedParameters().filter { !$0.name.contains("lora_") }.allSatisfy { $0.tensor.grad == nil },
                "the frozen base got gradients")
    }

    @Test(arguments: Fixtures.families)
    func exportEqualsPEFTMerge(_ family: String) throws {
        let (model, adapter) = try Self.load(family, adapter: "lora")
        guard case .lora(let lora) = adapter else { Issue.record("not LoRA"); return }
        try lora.mergeAndUnload(from: model)
        let out = try Fixtures.scratchDirectory("\(family)-export")
        try Exporter.writeMergedFolder(model: model, baseFolder: Fixtures.path(family, "base"), to: out, dtype: .f32,
                                       dtypeName: "float32")
        let mine = try SafetensorsFile(path: "\(out)/model.safetensors")
        let peft = try SafetensorsFile(path: Fixtures.path(family, "lora-merged/model.safetensors"))
        #expect(Set(mine.names) == Set(peft.names))
        for name in peft.names {
            let worst = zip(try mine.floats(name), try peft.floats(name)).map { abs($0 - $1) }.max() ?? 0
            #expect(worst <= 1e-5, "\(family) \(name): \(worst)")
        }
        let reloaded = try HuggingFaceFolder.load(out)
        let reference = try Fixtures.reference(family)
        let result = try Evaluation.windowedLoss(model: reloaded.model, tokens: reference.eval_token_ids,
                                                 sequenceLength: reference.window, maxWindows: reference.windows)
        #expect(abs(result.loss - reference.lora_merged_loss) <= 1e-4)
        #expect(FileManager.default.fileExists(atPath: "\(out)/tokenizer.json"))
    }
}
