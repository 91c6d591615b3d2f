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

    static func expectLoadError(_ folder: String, _ fragment: String,
                                sourceLocation: SourceLocation = #_sourceLocation) {
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

    /// Rewrites keys of a folder's config.json.
    static func editConfig(_ folder: String, _ values: [String: Any]) throws {
        let path = "\(folder)/config.json"
        var object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as! [String: Any]
        for (key, value) in values { object[key] = value }
        try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: path))
    }

    @Test func aConfigTooLargeToBuildIsRefusedBeforeAnythingIsAllocated() throws {
        let dir = try Self.editedCopy("llama-gqa") { _ in }
        // A mistyped size: the model would need petabytes. Refused by name instead of stopping in the allocator.
        try Self.editConfig(dir, ["intermediate_size": 100_000_000_000_000])
        Self.expectLoadError(dir, "config.json: the sizes (vocab_size 768, hidden_size 64, intermediate_size 100000000000000")
        Self.expectLoadError(dir, "hold 190784 values: this config.json does not belong to them")
        // Sizes whose product does not fit in an Int.
        try Self.editConfig(dir, ["intermediate_size": 176, "vocab_size": Int.max / 2])
        Self.expectLoadError(dir, "describe more values than can be counted")
        // The rotary table alone too large for memory (its parameters are the checkpoint's).
        try Self.editConfig(dir, ["vocab_size": 768, "max_position_embeddings": 100_000_000_000_000])
        Self.expectLoadError(dir, "rotary-table values, 6400000.0 GB as float32, more than this machine's")
        // A size that fits in memory is left to the tensor-by-tensor checks, which name the tensor.
        try Self.editConfig(dir, ["max_position_embeddings": 256, "num_hidden_layers": 3])
        Self.expectLoadError(dir, "missing tensor 'model.layers.2.")
        // A head dimension of zero (explicit, or hidden_size / num_attention_heads).
        try Self.editConfig(dir, ["num_hidden_layers": 2, "head_dim": 0])
        Self.expectLoadError(dir, "config.json: head_dim 0 must be positive and even")
        try Self.editConfig(dir, ["head_dim": NSNull(), "hidden_size": 2])
        Self.expectLoadError(dir,
                             "config.json: head_dim (hidden_size / num_attention_heads) 0 must be positive and even")
    }

    @Test func theMemoryLimitIsTheMachines() throws {
        let config = try ModelConfig.load(path: Fixtures.path("llama-gqa", "base/config.json"))
        try ModelSize.check(config, path: "config.json", against: nil)
        #expect(throws: FormatError(file: "config.json", "the sizes (vocab_size 768, hidden_size 64, intermediate_size 176, num_hidden_layers 2, num_attention_heads 4, head_dim 16, max_position_embeddings 256) describe 190784 parameters and 4096 rotary-table values, 0.0 GB as float32, more than this machine's 0.0 GB of memory")) {
            try ModelSize.check(config, path: "config.json", against: nil, memoryBytes: 4 * 190_784)  // the parameters only
        }
        try ModelSize.check(config, path: "config.json", against: nil, memoryBytes: 4 * (190_784 + 4096))
        // Without a bound given, the bound is this machine's memory: a model of more float32 values than it holds
        // is refused, naming it.
        guard case .llama(var huge) = config else { Issue.record("not a llama config"); return }
        huge.vocabularySize = ModelSize.physicalMemoryBytes / 4 / huge.hiddenSize + 1
        #expect(throws: FormatError.self) { try ModelSize.check(.llama(huge), path: "config.json", against: nil) }
        do {
            try ModelSize.check(.llama(huge), path: "config.json", against: nil)
        } catch {
            #expect("\(error)".hasSuffix("more than this machine's \(ModelSize.gigabytes(ModelSize.physicalMemoryBytes)) of memory"))
        }
    }

    /// The count the size check uses is the count the architectures build, with and without biases and ties.
    @Test func parameterCountsFromConfigsMatchBuiltModels() throws {
        var configs = try (Fixtures.families + ["llama-tied-embedding-lora"]).map {
            try ModelConfig.load(path: Fixtures.path($0, "base/config.json"))
        }
        let repository = URL(fileURLWithPath: Fixtures.root).deletingLastPathComponent().deletingLastPathComponent()
        configs.append(try ModelConfig.load(path: repository.appendingPathComponent("models/finch-shakespeare/config.json").path))
        for (attentionBias, mlpBias, tied) in [(true, false, false), (false, true, true), (true, true, false)] {
            configs.append(.llama(LlamaConfig(vocabularySize: 50, hiddenSize: 24, intermediateSize: 40, layerCount: 3,
                                              headCount: 6,
                                              keyValueHeadCount: 2, headDimension: 8, tieWordEmbeddings: tied,
                                              attentionBias: attentionBias, mlpBias: mlpBias, maxPositionEmbeddings: 32)))
        }
        for config in configs {
            let model = try CausalLanguageModelFactory.make(config)
            #expect(ModelSize.parameterCount(config) == model.parameterCount, "\(config)")
        }
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
