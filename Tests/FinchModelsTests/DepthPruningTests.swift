import Foundation
import Testing
import TestSupport
import FinchFormats
import FinchTensor
@testable import FinchModels

/// `finch prune`: a model with some of its layers, in the format it came in.
@Suite("depth pruning")
struct DepthPruningTests {
    /// A folder keeps its kept layers' weights, renumbered, and everything else as it was; the GGUF of the same
    /// model pruned the same way is the same model, with its tensors' bytes unchanged.
    @Test func aFolderAndItsGGUFPruneToTheSameModel() throws {
        let dir = try Fixtures.scratchDirectory()
        let full = try HuggingFaceFolder.load(Fixtures.path("llama-gqa", "base"))
        try DepthPruning.pruneFolder(Fixtures.path("llama-gqa", "base"), keep: [1], to: "\(dir)/folder")
        try DepthPruning.pruneGGUF(Fixtures.path("gguf", "llama-gqa.gguf"), keep: [1], to: "\(dir)/pruned.gguf")
        let folder = try HuggingFaceFolder.load("\(dir)/folder", requireTokenizer: true)
        #expect(folder.model.layerCount == 1)
        let original = Dictionary(uniqueKeysWithValues: full.model.namedParameters().map { ($0.name, $0.tensor.scalars) })
        for (name, tensor) in folder.model.namedParameters() {
            let source = name.replacingOccurrences(of: "layers.0.", with: "layers.1.")
            #expect(tensor.scalars == original[source], "\(name)")
        }
        let (gguf, file) = try GGUFModel.load("\(dir)/pruned.gguf")
        #expect(file["llama.block_count"]?.integer == 1 && file["tokenizer.ggml.model"] != nil)
        let source = try GGUFFile(path: Fixtures.path("gguf", "llama-gqa.gguf"))
        for info in file.tensors {
            let from = try #require(source.tensor(named: info.name.replacingOccurrences(of: "blk.0.", with: "blk.1.")))
            #expect(Array(file.rawBytes(info)) == Array(source.rawBytes(from)), "\(info.name)")
        }
        let tokens: [Int32] = [1, 15, 27, 3, 99, 42, 7, 64]
        let a = try GradientMode.withoutGradients { try folder.model.logits(tokens, batch: 1, length: 8, cache: nil, prefix: nil).scalars }
        let b = try GradientMode.withoutGradients { try gguf.logits(tokens, batch: 1, length: 8, cache: nil, prefix: nil).scalars }
        #expect(a == b)
    }

    /// GPT-Neo's per-layer attention kinds and Mistral's layer_types follow the layers kept.
    @Test func perLayerListsAreCutToo() throws {
        let dir = try Fixtures.scratchDirectory()
        try DepthPruning.pruneFolder(Fixtures.path("gpt-neo", "base"), keep: [1], to: "\(dir)/neo")
        guard case .gptNeo(let neo) = try ModelConfig.load(path: "\(dir)/neo/config.json") else { Issue.record("not gpt_neo"); return }
        #expect(neo.layerCount == 1 && neo.localLayers == [true])
        let pruned = try HuggingFaceFolder.load("\(dir)/neo")
        #expect(pruned.model.layerCount == 1)
    }

    @Test func layersThatAreNotThereOrOutOfOrderAreRefused() throws {
        let dir = try Fixtures.scratchDirectory()
        let base = Fixtures.path("llama-gqa", "base")
        for (keep, message) in [([Int](), "keeps no layer"), ([2], "layer 2 is not one of the model's 2 layers (0…1)"),
                                ([1, 0], "layers must be listed once each, in ascending order: 0 follows 1"),
                                ([0, 0], "0 follows 0")] {
            #expect { try DepthPruning.pruneFolder(base, keep: keep, to: "\(dir)/out") } throws: { "\($0)".contains(message) }
        }
        #expect(!FileManager.default.fileExists(atPath: "\(dir)/out/model.safetensors"))
    }
}
