import Foundation
import Testing
import TestSupport
import FinchFormats
@testable import FinchNN
import FinchTensor
@testable import FinchModels

@Suite("loading and saving Hugging Face folders")
struct LoadingTests {
    /// A copy of a fixture's base folder whose weights are rewritten by `edit`.
    static func editedCopy(_ family: String, _ edit: (inout [SafetensorsWriter.Item]) -> Void) throws -> String {
        let dir = try Fixtures.scratchDirectory("\(family)-edited")
        let base = Fixtures.path(family, "base")
        for file in ["config.json", "tokenizer.json"] {
            try FileManager.default.copyItem(atPath: "\(base)/\(file)", toPath: "\(dir)/\(file)")
        }
        let source = try SafetensorsFile(path: "\(base)/model.safetensors")
        var items = try source.entries.map { SafetensorsWriter.Item(name: $0.name, shape: $0.shape, values: try source.floats($0.name)) }
        edit(&items)
        try SafetensorsWriter.write(items, metadata: ["format": "pt"], to: "\(dir)/model.safetensors")
        return dir
    }

    static func expectLoadError(_ folder: String, _ fragment: String, sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            _ = try HuggingFaceFolder.load(folder)
            Issue.record("loaded a bad folder (expected '\(fragment)')", sourceLocation: sourceLocation)
        } catch {
            #expect("\(error)".contains(fragment), "\(error)", sourceLocation: sourceLocation)
            #expect(!"\(error)".contains("\n"), "the error is one line", sourceLocation: sourceLocation)
        }
    }

    @Test func aMissingTensorIsNamed() throws {
        let dir = try Self.editedCopy("llama-gqa") { $0.removeAll { $0.name == "model.layers.1.mlp.up_proj.weight" } }
        Self.expectLoadError(dir, "missing tensor 'model.layers.1.mlp.up_proj.weight' (expected shape [176, 64])")
    }

    @Test func aWrongShapeIsNamedWithBothShapes() throws {
        let dir = try Self.editedCopy("gpt2") { items in
            let i = items.firstIndex { $0.name == "transformer.h.0.attn.c_attn.weight" }!
            items[i] = .init(name: items[i].name, shape: [192, 64], values: items[i].values)
        }
        Self.expectLoadError(dir, "tensor 'transformer.h.0.attn.c_attn.weight' has shape [192, 64], expected [64, 192]")
    }

    @Test func anUnexpectedTensorIsNamed() throws {
        let dir = try Self.editedCopy("llama-gqa") { $0.append(.init(name: "model.layers.2.mlp.up_proj.weight", shape: [1], values: [0])) }
        Self.expectLoadError(dir, "unexpected tensor 'model.layers.2.mlp.up_proj.weight'")
    }

    @Test func unknownModelTypeAndMissingFilesAreNamed() throws {
        let dir = try Self.editedCopy("llama-gqa") { _ in }
        let config = try String(contentsOfFile: "\(dir)/config.json", encoding: .utf8)
        try config.replacingOccurrences(of: "\"llama\"", with: "\"falcon\"").write(toFile: "\(dir)/config.json", atomically: true, encoding: .utf8)
        Self.expectLoadError(dir, "config.json: model_type \"falcon\" is not supported")
        try FileManager.default.removeItem(atPath: "\(dir)/config.json")
        Self.expectLoadError(dir, "config.json: cannot read the file")
    }

    @Test func bfloat16AndFloat16WeightsLoadAsFloat32() throws {
        for dtype in [SafetensorsDType.f16, .bf16] {
            let dir = try Self.editedCopy("llama-gqa") { items in
                items = items.map { .init(name: $0.name, shape: $0.shape, values: $0.values, dtype: dtype) }
            }
            let model = try HuggingFaceFolder.load(dir).model
            let reference = try HuggingFaceFolder.load(Fixtures.path("llama-gqa", "base")).model
            let a = model.namedParameters().first { $0.name == "model.layers.0.self_attn.q_proj.weight" }!.tensor.scalars
            let b = reference.namedParameters().first { $0.name == "model.layers.0.self_attn.q_proj.weight" }!.tensor.scalars
            let worst = zip(a, b).map { abs($0 - $1) }.max()!
            #expect(worst > 0 && worst < (dtype == .f16 ? 1e-3 : 4e-3), "\(dtype): \(worst)")
        }
    }

    @Test(arguments: Fixtures.families)
    func savedWeightsReloadBitForBit(_ family: String) throws {
        let folder = try HuggingFaceFolder.load(Fixtures.path(family, "base"))
        let dir = try Fixtures.scratchDirectory("\(family)-saved")
        try SafetensorsWriter.write(try HuggingFaceFolder.checkpointItems(of: folder.model, dtype: .f32),
                                    metadata: ["format": "pt"], to: "\(dir)/model.safetensors")
        let original = try SafetensorsFile(path: Fixtures.path(family, "base/model.safetensors"))
        let saved = try SafetensorsFile(path: "\(dir)/model.safetensors")
        #expect(Set(saved.names) == Set(original.names))
        for name in original.names {
            #expect(saved.entry(named: name)?.shape == original.entry(named: name)?.shape, "\(name)")
            #expect(try saved.floats(name) == original.floats(name), "\(name)")
        }
    }

    @Test func parameterNamesFollowHuggingFaceKeys() throws {
        let model = try HuggingFaceFolder.load(Fixtures.path("gpt2", "base")).model
        let names = model.namedParameters().map(\.name)
        #expect(names.contains("transformer.h.1.ln_2.bias"))
        #expect(names.contains("transformer.ln_f.weight"))
        #expect(names.contains("transformer.h.0.mlp.c_fc.weight"))
        #expect(Module.key("postAttentionLayernorm") == "post_attention_layernorm")
        #expect(Module.key("ln1") == "ln_1")
        #expect(model.namedParameters().allSatisfy { !$0.tensor.requiresGrad }, "a loaded base is frozen")
    }
}
