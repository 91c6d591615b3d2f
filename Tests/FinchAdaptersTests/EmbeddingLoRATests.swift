import Foundation
import Testing
import TestSupport
import FinchFormats
import FinchModels
import FinchNN
import FinchTensor
@testable import FinchAdapters

/// LoRA on a tied token embedding (`embed_tokens` as a target), against PEFT's own numbers
/// (Tests/Fixtures/llama-tied-embedding-lora, made by its make_fixture.py).
@Suite("LoRA on the token embedding")
struct EmbeddingLoRATests {
    static let family = "llama-tied-embedding-lora"

    struct Expected: Decodable { let lora_loss: Double; let tied_loss: Double; let saved_loss: Double }

    static func expected() throws -> Expected {
        try JSONDecoder().decode(Expected.self,
                                 from: Data(contentsOf: URL(fileURLWithPath: Fixtures.path(family, "reference.json"))))
    }

    static func tokens() throws -> [Int32] {
        try SafetensorsFile(path: Fixtures.path(family, "reference.safetensors")).floats("tokens").map { Int32($0) }
    }

    static func load(_ adapter: String = "lora") throws -> (any CausalLanguageModel, LoRAAdapter) {
        let model = try HuggingFaceFolder.load(Fixtures.path(family, "base")).model
        guard case .lora(let lora) = try PEFTFormat.load(Fixtures.path(family, adapter), into: model) else {
            throw AdapterError("expected a LoRA adapter")
        }
        return (model, lora)
    }

    /// Every tensor's gradient against `prefix + key` in the reference, within 1e-4 of its largest entry.
    static func expectGradients(of tensors: [(key: String, tensor: Tensor)], match reference: SafetensorsFile,
                                prefix: String) throws {
        for (key, tensor) in tensors {
            let want = try reference.floats(prefix + key)
            let got = try #require(tensor.grad, "no gradient for \(key)").scalars
            let scale = want.map(abs).max() ?? 1
            #expect(worstDifference(got, want) <= 1e-4 * scale, "\(key)")
        }
    }

    static func worstDifference(_ a: [Float], _ b: [Float]) -> Float {
        precondition(a.count == b.count)
        return zip(a, b).map { abs($0 - $1) }.max() ?? 0
    }

    @Test func peftAdapterLoadsAndMatchesPEFTLogits() throws {
        let (model, lora) = try Self.load()
        #expect(lora.embeddings.map(\.path) == ["model.embed_tokens"])
        #expect(lora.layers.count == 4)
        let tokens = try Self.tokens()
        let reference = try SafetensorsFile(path: Fixtures.path(Self.family, "reference.safetensors"))
        let logits = try GradientMode.withoutGradients { try model.logits(tokens, batch: 2, length: 16, cache: nil, prefix: nil) }
        let first = Array(logits.scalars.prefix(16 * 128))
        #expect(Self.worstDifference(first, try reference.floats("lora.logits")) <= 1e-4)
        // The head still reads the base table: with the adapter off the base logits come back.
        for (_, layer) in lora.embeddings { layer.disabled = true }
        for (_, layer) in lora.layers { layer.disabled = true }
        let base = try GradientMode.withoutGradients { try model.logits(tokens, batch: 2, length: 16, cache: nil, prefix: nil) }
        #expect(Self.worstDifference(Array(base.scalars.prefix(16 * 128)), try reference.floats("base.logits")) <= 1e-4)
    }

    @Test func lossAndGradientsMatchPEFT() throws {
        let (model, lora) = try Self.load()
        let tokens = try Self.tokens()
        let expected = try Self.expected()
        let logits = try model.logits(tokens, batch: 2, length: 16, cache: nil, prefix: nil)
        let loss = try Losses.causalLanguageModel(logits: logits, tokens: tokens)
        #expect(abs(Double(try loss.item()) - expected.lora_loss) <= 1e-4)
        try loss.backward()
        let reference = try SafetensorsFile(path: Fixtures.path(Self.family, "reference.safetensors"))
        let tensors = lora.peftTensors()
        #expect(tensors.count == 10)
        try Self.expectGradients(of: tensors, match: reference, prefix: "grad.")
        // Only the adapter trains: the base table (and so the tied head) gets no gradient.
        #expect(model.outputWeight.tensor?.grad == nil)
    }

    @Test func savedAdapterHasPEFTKeysAndReloadsIdentically() throws {
        let (model, lora) = try Self.load()
        let dir = try Fixtures.scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try PEFTFormat.save(.lora(lora), model: model, to: dir)
        let written = try SafetensorsFile(path: dir + "/adapter_model.safetensors")
        let original = try SafetensorsFile(path: Fixtures.path(Self.family, "lora/adapter_model.safetensors"))
        // PEFT also stored the base table (save_embedding_layers "auto"); Finch writes only the adapter, which
        // PEFT loads onto an unchanged base model.
        let table = "base_model.model.model.embed_tokens.base_layer.weight"
        #expect(original.names.contains(table))
        #expect(Set(written.names) == Set(original.names).subtracting([table]))
        for name in written.names { #expect(try written.floats(name) == original.floats(name), "\(name)") }
        let config = try JSONValue.load(path: dir + "/adapter_config.json").object
        #expect(config?["target_modules"]?.array?.compactMap(\.string).contains("embed_tokens") == true)
    }

    @Test func mergedExportUntiesTheHeadAndKeepsTheLogits() throws {
        let (model, lora) = try Self.load()
        let tokens = try Self.tokens()
        let adapted = try GradientMode.withoutGradients { try model.logits(tokens, batch: 2, length: 16, cache: nil, prefix: nil) }
        try lora.mergeAndUnload(from: model)
        let dir = try Fixtures.scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Exporter.writeMergedFolder(model: model, baseFolder: Fixtures.path(Self.family, "base"), to: dir,
                                       dtype: .f32, dtypeName: "float32")
        let config = try JSONValue.load(path: dir + "/config.json").object
        #expect(config?["tie_word_embeddings"]?.bool == false)
        let names = try SafetensorsFile(path: dir + "/model.safetensors").names
        #expect(names.contains("lm_head.weight") && names.contains("model.embed_tokens.weight"))
        let merged = try HuggingFaceFolder.load(dir).model
        let logits = try GradientMode.withoutGradients { try merged.logits(tokens, batch: 2, length: 16, cache: nil, prefix: nil) }
        #expect(Self.worstDifference(logits.scalars, adapted.scalars) <= 1e-4)
    }

    @Test func gpt2EmbeddingCannotBeAdaptedApartFromItsHead() throws {
        let model = try HuggingFaceFolder.load(Fixtures.path("gpt2", "base")).model
        var configuration = LoRAConfiguration(rank: 2, alpha: 4, targets: .names(["wte"]))
        configuration.fanInFanOut = true
        #expect(throws: AdapterError.self) { try LoRAAdapter.inject(into: model, configuration: configuration) }
    }

    // MARK: ensure_weight_tying: the tied head reads the adapted table too

    @Test func tiedHeadAdapterMatchesPEFTLogitsLossAndGradients() throws {
        let (model, lora) = try Self.load("lora-tied")
        #expect(lora.configuration.ensureWeightTying)
        #expect(lora.embeddings.first?.layer.appliesToTiedHead == true)
        if case .llama(let c) = model.config { #expect(c.tieWordEmbeddings) }
        let tokens = try Self.tokens()
        let reference = try SafetensorsFile(path: Fixtures.path(Self.family, "reference.safetensors"))
        let logits = try GradientMode.withoutGradients { try model.logits(tokens, batch: 2, length: 16, cache: nil, prefix: nil) }
        #expect(Self.worstDifference(Array(logits.scalars.prefix(16 * 128)),
                                     try reference.floats("tied.logits")) <= 1e-4)
        let loss = try model.loss(tokens, batch: 2, length: 16,
                                  targets: Losses.nextTokenTargets(tokens, batch: 2, length: 16), prefix: nil)
        #expect(abs(Double(try loss.item()) - (try Self.expected().tied_loss)) <= 1e-4)
        try loss.backward()
        try Self.expectGradients(of: lora.peftTensors(), match: reference, prefix: "tied.grad.")
    }

    @Test func tiedHeadAdapterSavesPEFTsKeysAndMergesIntoOneTable() throws {
        let (model, lora) = try Self.load("lora-tied")
        let dir = try Fixtures.scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try PEFTFormat.save(.lora(lora), model: model, to: dir + "/adapter")
        let written = try SafetensorsFile(path: dir + "/adapter/adapter_model.safetensors")
        let original = try SafetensorsFile(path: Fixtures.path(Self.family, "lora-tied/adapter_model.safetensors"))
        let tables: Set = ["base_model.model.model.embed_tokens.base_layer.weight",
                           "base_model.model.lm_head.base_layer.weight"]
        #expect(Set(written.names) == Set(original.names).subtracting(tables))
        for name in written.names { #expect(try written.floats(name) == original.floats(name), "\(name)") }
        #expect(try JSONValue.load(path: dir + "/adapter/adapter_config.json").object?["ensure_weight_tying"]?.bool == true)

        let tokens = try Self.tokens()
        let adapted = try GradientMode.withoutGradients { try model.logits(tokens, batch: 2, length: 16, cache: nil, prefix: nil) }
        try lora.mergeAndUnload(from: model)
        try Exporter.writeMergedFolder(model: model, baseFolder: Fixtures.path(Self.family, "base"),
                                       to: dir + "/merged",
                                       dtype: .f32, dtypeName: "float32")
        #expect(try JSONValue.load(path: dir + "/merged/config.json").object?["tie_word_embeddings"]?.bool == true)
        #expect(!(try SafetensorsFile(path: dir + "/merged/model.safetensors").names.contains("lm_head.weight")))
        let merged = try HuggingFaceFolder.load(dir + "/merged").model
        let logits = try GradientMode.withoutGradients { try merged.logits(tokens, batch: 2, length: 16, cache: nil, prefix: nil) }
        #expect(Self.worstDifference(logits.scalars, adapted.scalars) <= 1e-4)
    }

    @Test func aTiedHeadFactorThatDiffersFromTheEmbeddingsIsRefused() throws {
        let dir = try Fixtures.scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let source = try SafetensorsFile(path: Fixtures.path(Self.family, "lora-tied/adapter_model.safetensors"))
        let items = try source.names.map { name -> SafetensorsWriter.Item in
            var values = try source.floats(name)
            if name == "base_model.model.lm_head.lora_A.weight" { values[0] += 1 }
            return .init(name: name, shape: source.entry(named: name)!.shape, values: values)
        }
        try SafetensorsWriter.write(items, metadata: ["format": "pt"], to: dir + "/adapter_model.safetensors")
        try FileManager.default.copyItem(atPath: Fixtures.path(Self.family, "lora-tied/adapter_config.json"),
                                         toPath: dir + "/adapter_config.json")
        let model = try HuggingFaceFolder.load(Fixtures.path(Self.family, "base")).model
        #expect { try PEFTFormat.load(dir, into: model) } throws: { error in
            "\(error)".contains("lm_head.lora_A.weight") && "\(error)".contains("ensure_weight_tying")
        }
    }

    // MARK: modules_to_save: a whole trainable copy of the table (the head reads it with ensure_weight_tying)

    @Test func savedTableMatchesPEFTAndRoundTrips() throws {
        let (model, lora) = try Self.load("lora-saved-table")
        #expect(lora.configuration.modulesToSave == ["embed_tokens"])
        #expect(lora.savedModules.map(\.path) == ["model.embed_tokens"])
        let tokens = try Self.tokens()
        let reference = try SafetensorsFile(path: Fixtures.path(Self.family, "reference.safetensors"))
        let logits = try GradientMode.withoutGradients { try model.logits(tokens, batch: 2, length: 16, cache: nil, prefix: nil) }
        #expect(Self.worstDifference(Array(logits.scalars.prefix(16 * 128)),
                                     try reference.floats("saved.logits")) <= 1e-4)
        let loss = try model.loss(tokens, batch: 2, length: 16,
                                  targets: Losses.nextTokenTargets(tokens, batch: 2, length: 16), prefix: nil)
        #expect(abs(Double(try loss.item()) - (try Self.expected().saved_loss)) <= 1e-4)
        try loss.backward()
        let tensors = lora.peftTensors()
        #expect(tensors.count == 9)
        try Self.expectGradients(of: tensors, match: reference, prefix: "saved.grad.")

        let dir = try Fixtures.scratchDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try PEFTFormat.save(.lora(lora), model: model, to: dir + "/adapter")
        let written = try SafetensorsFile(path: dir + "/adapter/adapter_model.safetensors")
        let original = try SafetensorsFile(path: Fixtures.path(Self.family, "lora-saved-table/adapter_model.safetensors"))
        #expect(Set(written.names) == Set(original.names))
        for name in written.names { #expect(try written.floats(name) == original.floats(name), "\(name)") }
        let config = try JSONValue.load(path: dir + "/adapter/adapter_config.json").object
        #expect(config?["modules_to_save"]?.array?.compactMap(\.string) == ["embed_tokens"])

        let adapted = try GradientMode.withoutGradients { try model.logits(tokens, batch: 2, length: 16, cache: nil, prefix: nil) }
        try lora.mergeAndUnload(from: model)
        try Exporter.writeMergedFolder(model: model, baseFolder: Fixtures.path(Self.family, "base"),
                                       to: dir + "/merged",
                                       dtype: .f32, dtypeName: "float32")
        #expect(try JSONValue.load(path: dir + "/merged/config.json").object?["tie_word_embeddings"]?.bool == true)
        let merged = try HuggingFaceFolder.load(dir + "/merged").model
        let again = try GradientMode.withoutGradients { try merged.logits(tokens, batch: 2, length: 16, cache: nil, prefix: nil) }
        #expect(Self.worstDifference(again.scalars, adapted.scalars) <= 1e-4)
    }

    @Test func aModuleBothTargetedAndSavedIsRefused() throws {
        let model = try HuggingFaceFolder.load(Fixtures.path(Self.family, "base")).model
        var configuration = LoRAConfiguration(rank: 2, alpha: 4, targets: .names(["q_proj"]))
        configuration.modulesToSave = ["q_proj"]
        #expect { try LoRAAdapter.inject(into: model, configuration: configuration) } throws: { error in
            "\(error)".contains("both a LoRA target and in modules_to_save")
        }
        configuration.modulesToSave = ["wte"]
        #expect { try LoRAAdapter.inject(into: try HuggingFaceFolder.load(Fixtures.path(Self.family, "base")).model, configuration: configuration) } throws: { error in
            "\(error)".contains("modules_to_save 'wte' matches nothing")
        }
    }
}
