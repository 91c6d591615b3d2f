import Foundation
import Testing
import TestSupport
import FinchFormats
import FinchModels
import FinchNN
import FinchTensor
@testable import FinchAdapters

/// DoRA adapters made by PEFT (`use_dora: true`, Tests/Fixtures/dora) on the LLaMA and GPT-2 fixtures, against
/// PEFT's own loss, gradients and merged weights.
@Suite("DoRA against PEFT")
struct DoRATests {
    /// Fixture folders under dora/ (llama-gqa-embedding: DoRA on the token table too, over llama-gqa).
    static let families = ["llama-gqa", "gpt2", "llama-gqa-embedding"]

    static func base(_ fixture: String) -> String { fixture == "llama-gqa-embedding" ? "llama-gqa" : fixture }

    struct Reference: Decodable {
        let loss: Double
        let merged_loss: Double
        let window: Int
        let windows: Int
        let float32_gradient_error: [String: Double]
    }

    static func reference(_ family: String) throws -> Reference {
        try JSONDecoder().decode(Reference.self, from: Data(contentsOf: URL(fileURLWithPath: Fixtures.path("dora", "\(family)/reference.json"))))
    }

    static func load(_ family: String) throws -> (any CausalLanguageModel, LoRAAdapter) {
        let model = try HuggingFaceFolder.load(Fixtures.path(base(family), "base")).model
        guard case .lora(let lora) = try PEFTFormat.load(Fixtures.path("dora", "\(family)/adapter"), into: model) else {
            throw AdapterError("not a LoRA adapter")
        }
        return (model, lora)
    }

    static func tokens(_ family: String, _ r: Reference) throws -> [Int32] {
        Array(try Fixtures.reference(base(family)).eval_token_ids.prefix(r.window * r.windows)).map(Int32.init)
    }

    /// The loss and every gradient (A, B and the magnitudes) as PEFT's, the gradients held to 1e-4 of each tensor's
    /// largest entry (float64 references).
    @Test(arguments: families)
    func lossAndGradientsMatchPEFT(_ family: String) throws {
        let reference = try Self.reference(family)
        let (model, lora) = try Self.load(family)
        #expect(lora.configuration.useDoRA && lora.layers.allSatisfy { $0.layer.lora_magnitude_vector != nil }
                    && lora.embeddings.allSatisfy { $0.layer.lora_magnitude_vector != nil })
        let tokens = try Self.tokens(family, reference)
        let logits = try model.logits(tokens, batch: reference.windows, length: reference.window, cache: nil, prefix: nil)
        let loss = try Losses.causalLanguageModel(logits: logits, tokens: tokens)
        let value = Double(try loss.item())
        #expect(abs(value - reference.loss) <= 1e-4, "\(family): \(value) vs \(reference.loss)")
        try loss.backward()
        let expected = try SafetensorsFile(path: Fixtures.path("dora", "\(family)/reference.safetensors"))
        var magnitudes = 0
        for (key, tensor) in Adapter.lora(lora).trainableParameters {
            // PEFT's parameter is lora_magnitude_vector.weight; its file key (and Finch's) lora_magnitude_vector.
            let peftKey = key.hasSuffix(".lora_magnitude_vector") ? key + ".weight" : key
            let want = try expected.floats("grad." + peftKey)
            let got = try #require(tensor.grad, "no gradient for \(key)").scalars
            let scale = want.map(abs).max() ?? 1
            let worst = zip(got, want).map { abs($0 - $1) }.max() ?? .infinity
            let allowed = max(1e-4, 2 * (reference.float32_gradient_error[peftKey] ?? 0))
            #expect(worst <= Float(allowed) * scale, "\(family) \(key): worst \(worst), largest entry \(scale)")
            if key.hasSuffix(".lora_magnitude_vector") { magnitudes += 1 }
        }
        let trained = Adapter.lora(lora).trainableParameters.count
        let adapted = lora.layers.count + lora.embeddings.count
        #expect(magnitudes == adapted && trained == 3 * adapted && trained == expected.names.count)
    }

    /// Merged weights as PEFT's merge_and_unload writes them, and its loss; unmerging gives the base back.
    @Test(arguments: families)
    func mergeMatchesPEFTAndUnmergeRestoresTheBase(_ family: String) throws {
        let reference = try Self.reference(family)
        let (model, lora) = try Self.load(family)
        let before = Dictionary(uniqueKeysWithValues: model.namedParameters().map { ($0.name, $0.tensor.scalars) })
        for (_, layer) in lora.layers { try layer.merge() }
        for (_, layer) in lora.layers { try layer.unmerge() }
        for (name, tensor) in model.namedParameters() where before[name] != nil && !name.contains("lora_") {
            let worst = zip(tensor.scalars, before[name]!).map { abs($0 - $1) }.max() ?? 0
            #expect(worst <= 1e-5, "\(family) \(name) after merge and unmerge: \(worst)")
        }
        try lora.mergeAndUnload(from: model)
        let peft = try SafetensorsFile(path: Fixtures.path("dora", "\(family)/merged.safetensors"))
        var compared = 0
        for (name, tensor) in model.namedParameters() {
            let key = peft.names.contains(name) ? name : name
            guard peft.names.contains(key) else { continue }
            var theirs = try peft.floats(key)
            if model.storesTransposed(name) {  // Conv1D's [in, out] in the file
                let (rows, columns) = (tensor.shape[1], tensor.shape[0])
                theirs = (0..<(rows * columns)).map { theirs[($0 % rows) * columns + $0 / rows] }
            }
            let worst = zip(tensor.scalars, theirs).map { abs($0 - $1) }.max() ?? .infinity
            #expect(worst <= 1e-5, "\(family) \(name): \(worst)")
            compared += 1
        }
        #expect(compared == model.namedParameters().count, "\(family): \(compared) of \(model.namedParameters().count) weights compared")
        let merged = try Evaluation.windowedLoss(model: model, tokens: try Fixtures.reference(Self.base(family)).eval_token_ids,
                                                 sequenceLength: reference.window, maxWindows: reference.windows)
        #expect(abs(merged.loss - reference.merged_loss) <= 1e-4, "\(family): \(merged.loss) vs \(reference.merged_loss)")
    }

    /// Written back as PEFT writes it (use_dora, lora_magnitude_vector) and read again to the same numbers.
    @Test(arguments: families)
    func savedAdapterReadsBackTheSame(_ family: String) throws {
        let (model, lora) = try Self.load(family)
        let dir = try Fixtures.scratchDirectory()
        try PEFTFormat.save(.lora(lora), model: model, to: dir)
        let config = try #require(try JSONValue.load(path: dir + "/adapter_config.json").object)
        #expect(config["use_dora"]?.bool == true)
        let written = try SafetensorsFile(path: dir + "/adapter_model.safetensors")
        let original = try SafetensorsFile(path: Fixtures.path("dora", "\(family)/adapter/adapter_model.safetensors"))
        // PEFT also writes an adapted embedding's base table (its save_embedding_layers), which Finch leaves out.
        #expect(Set(original.names).subtracting(written.names).allSatisfy { $0.hasSuffix(".base_layer.weight") })
        #expect(Set(written.names).isSubset(of: Set(original.names)))
        for name in written.names {
            let mine = try written.floats(name), theirs = try original.floats(name)
            #expect(mine == theirs, "\(name)")
        }
        let again = try HuggingFaceFolder.load(Fixtures.path(Self.base(family), "base")).model
        _ = try PEFTFormat.load(dir, into: again)
        let tokens: [Int32] = [1, 15, 27, 3, 99, 42, 7, 64]
        let a = try GradientMode.withoutGradients { try model.logits(tokens, batch: 1, length: 8, cache: nil, prefix: nil).scalars }
        let b = try GradientMode.withoutGradients { try again.logits(tokens, batch: 1, length: 8, cache: nil, prefix: nil).scalars }
        #expect(a == b)
    }

    /// A fresh DoRA adapter leaves the model's output as it was (magnitudes start at the rows' norms), over a float
    /// base and over one held in Q8_0 blocks; over the quantised base its numbers are those of the same blocks read
    /// into float32.
    @Test func freshDoRAIsTheBaseAndWorksOverAQuantisedBase() throws {
        let dir = try Fixtures.scratchDirectory()
        let plain = try PretrainedModel.load(Fixtures.path("gguf", "llama-gqa.gguf"))
        _ = try GGUFExport.write(model: plain.model, base: try #require(plain.ggufFile), to: "\(dir)/q8_0.gguf", type: .q8_0)
        let tokens: [Int32] = [1, 15, 27, 3, 99, 42, 7, 64, 5, 12]
        var outputs: [[Float]] = []
        for mode in [BaseQuantization.none, .keep] {
            let base = try PretrainedModel.load("\(dir)/q8_0.gguf", quantization: mode)
            let before = try GradientMode.withoutGradients { try base.model.logits(tokens, batch: 1, length: 10, cache: nil, prefix: nil).scalars }
            var configuration = LoRAConfiguration(rank: 4, alpha: 8, targets: .allLinear)
            configuration.useDoRA = true
            let lora = try LoRAAdapter.inject(into: base.model, configuration: configuration, seed: 5)
            let fresh = try GradientMode.withoutGradients { try base.model.logits(tokens, batch: 1, length: 10, cache: nil, prefix: nil).scalars }
            let largest = before.map(abs).max()!
            #expect(zip(fresh, before).map { abs($0 - $1) }.max()! <= 1e-5 * largest, "\(mode): a fresh DoRA adapter changed the output")
            // B away from zero and magnitudes off their norms, the same for both bases.
            var generator = RandomGenerator(seed: 9)
            for (_, layer) in lora.layers {
                try layer.lora_B.weight.assign(Tensor.randomNormal(layer.lora_B.weight.shape, standardDeviation: 0.05, generator: &generator))
                let m = try #require(layer.lora_magnitude_vector)
                try m.assign(try m.detached() * Tensor.randomUniform(m.shape, low: 0.8, high: 1.2, generator: &generator))
            }
            outputs.append(try GradientMode.withoutGradients { try base.model.logits(tokens, batch: 1, length: 10, cache: nil, prefix: nil).scalars })
            #expect(mode == .none || base.model.namedModules().contains { ($0.module as? LoRALinear)?.baseLayer is QuantizedLinear })
        }
        let largest = outputs[0].map(abs).max()!
        #expect(zip(outputs[1], outputs[0]).map { abs($0 - $1) }.max()! <= 1e-5 * largest)
    }

    @Test func doraWhereItCannotGoIsRefusedByName() throws {
        let model = try HuggingFaceFolder.load(Fixtures.path("qwen2", "base")).model  // a head tied to its table
        var configuration = LoRAConfiguration(rank: 4, alpha: 8, targets: .names(["embed_tokens", "q_proj"]))
        configuration.useDoRA = true
        configuration.ensureWeightTying = true
        #expect { try LoRAAdapter.inject(into: model, configuration: configuration) } throws: {
            "\($0)".contains("DoRA on an embedding whose tied head shares the adapter (ensure_weight_tying) is not supported")
        }
        let (base, lora) = try Self.load("llama-gqa")
        #expect { try GGUFLoRAFormat.write(lora, model: base, architecture: "llama", to: try Fixtures.scratchDirectory() + "/a.gguf") } throws: {
            "\($0)".contains("llama.cpp's LoRA adapters have no DoRA magnitudes")
        }
    }
}
