import Foundation
import Testing
import TestSupport
import FinchFormats
import FinchModels
@testable import FinchAdapters

/// Adapters that do not fit are refused in one line, naming the file and the problem.
@Suite("bad adapters")
struct AdapterErrorTests {
    static func expectRefused(_ adapterFolder: String, family: String = "llama-gqa", _ fragments: [String],
                              sourceLocation: SourceLocation = #_sourceLocation) throws {
        let model = try HuggingFaceFolder.load(Fixtures.path(family, "base")).model
        do {
            _ = try PEFTFormat.load(adapterFolder, into: model)
            Issue.record("accepted \(adapterFolder)", sourceLocation: sourceLocation)
        } catch {
            let text = "\(error)"
            #expect(!text.contains("\n"), "more than one line: \(text)", sourceLocation: sourceLocation)
            for f in fragments { #expect(text.contains(f), "\(text)", sourceLocation: sourceLocation) }
        }
    }

    /// A copy of a fixture adapter with its config edited.
    static func copy(_ family: String, _ kind: String, edit: (inout [String: Any]) -> Void) throws -> String {
        let dir = try Fixtures.scratchDirectory("\(family)-\(kind)")
        try FileManager.default.copyItem(atPath: Fixtures.path(family, "\(kind)/adapter_model.safetensors"),
                                         toPath: "\(dir)/adapter_model.safetensors")
        let data = try Data(contentsOf: URL(fileURLWithPath: Fixtures.path(family, "\(kind)/adapter_config.json")))
        var config = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        edit(&config)
        try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: "\(dir)/adapter_config.json"))
        return dir
    }

    @Test func anAdapterForAnotherArchitecture() throws {
        // GPT-2's adapter targets c_attn/c_proj/c_fc: none exist in LLaMA.
        try Self.expectRefused(Fixtures.path("gpt2", "lora"),
                               ["adapter_config.json", "target module 'c_proj' matches nothing", "q_proj"])
        try Self.expectRefused(Fixtures.path("gpt2", "prefix"),
                               ["gpt2/prefix/adapter_model.safetensors",
                                "'prompt_embeddings' has shape [8, 256], but the model needs [8, 128]"])
    }

    @Test func mismatchedShapes() throws {
        let dir = try Self.copy("llama-gqa", "lora") { $0["r"] = 8 }
        try Self.expectRefused(dir, ["adapter_model.safetensors", "has shape [4, 176], but the model needs [8, 176]"])
        let prefix = try Self.copy("llama-gqa", "prefix") { $0["num_virtual_tokens"] = 6 }
        try Self.expectRefused(prefix, ["prompt_embeddings", "has shape [8, 128], but the model needs [6, 128]"])
    }

    @Test func ranksThatAskForMoreThanTheFileHoldsAreRefusedBeforeAllocating() throws {
        // A mistyped r would allocate petabytes; the file holds the factors, so the ranks cannot exceed it.
        let dir = try Self.copy("llama-gqa", "lora") { $0["r"] = 1_000_000_000_000 }
        try Self.expectRefused(dir,
                               ["adapter_config.json", "r 1000000000000 gives the targeted modules",
                                "LoRA values, but", "the ranks do not match these weights"])
        let pattern = try Self.copy("llama-gqa", "lora") { $0["rank_pattern"] = ["q_proj": 100_000_000_000] }
        try Self.expectRefused(pattern, ["adapter_config.json", "r 4 and rank_pattern give"])
        let zero = try Self.copy("llama-gqa", "lora") { $0["rank_pattern"] = ["q_proj": 0] }
        try Self.expectRefused(zero,
                               ["adapter_config.json",
                                "the rank for 'model.layers.0.self_attn.q_proj' is 0; ranks must be positive"])
        // A prefix's table is checked against the file before the prefix is made.
        let prefix = try Self.copy("llama-gqa", "prefix") { $0["num_virtual_tokens"] = 1_000_000_000_000 }
        try Self.expectRefused(prefix,
                               ["adapter_model.safetensors",
                                "has shape [8, 128], but the model needs [1000000000000, 128]"])
    }

    /// The count the check uses is what injecting allocates, with rank_pattern and an adapted embedding.
    @Test func theCountedLoRAValuesAreTheInjectedOnes() throws {
        var configuration = LoRAConfiguration(rank: 3, alpha: 6,
                                              targets: .names(["q_proj", "down_proj", "embed_tokens"]))
        configuration.rankPattern = ["down_proj": 5]
        let model = try HuggingFaceFolder.load(Fixtures.path("llama-gqa", "base")).model
        let counted = try LoRAAdapter.valueCount(in: model, configuration: configuration)
        let adapter = try LoRAAdapter.inject(into: model, configuration: configuration)
        #expect(counted == adapter.peftTensors().reduce(0) { $0 + $1.tensor.count })
    }

    @Test func anUnknownPEFTType() throws {
        let dir = try Self.copy("llama-gqa", "lora") { $0["peft_type"] = "IA3" }
        try Self.expectRefused(dir, ["adapter_config.json", "peft_type \"IA3\" is not supported"])
    }

    @Test func aTargetThatMatchesNothing() throws {
        let dir = try Self.copy("llama-gqa", "lora") { $0["target_modules"] = ["q_proj", "qkv_proj"] }
        try Self.expectRefused(dir, ["target module 'qkv_proj' matches nothing",
                                     "its Linear and Embedding modules are: down_proj, embed_tokens, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj"])
    }

    @Test func tensorsForModulesTheConfigDoesNotTarget() throws {
        let dir = try Self.copy("llama-gqa", "lora") { $0["target_modules"] = ["q_proj"] }
        try Self.expectRefused(dir, ["adapter_model.safetensors", "matches no LoRA layer"])
    }

    @Test func aMissingAdapterFolder() throws {
        try Self.expectRefused("/nonexistent/adapter", ["/nonexistent/adapter/adapter_config.json", "missing"])
        // A run directory given where its adapter/ folder was meant: the error names that folder.
        let run = try Fixtures.scratchDirectory("run")
        try FileManager.default.copyItem(atPath: Fixtures.path("llama-gqa", "lora"), toPath: "\(run)/adapter")
        try Self.expectRefused(run, ["\(run)/adapter_config.json: missing", "(\(run)/adapter holds one: pass that)"])
    }
}
