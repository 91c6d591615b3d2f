import Foundation
import Testing
import TestSupport
import FinchFormats
import FinchModels
import FinchNN
@testable import FinchTensor
@testable import FinchAdapters

/// Properties every adapter must keep, whatever the numbers.
@Suite("adapter properties")
struct AdapterPropertyTests {
    static func base(_ family: String = "llama-gqa") throws -> any CausalLanguageModel {
        try HuggingFaceFolder.load(Fixtures.path(family, "base")).model
    }

    static let tokens: [Int32] = (0..<24).map { Int32(($0 * 37 + 5) % 600) }

    static func logits(_ model: any CausalLanguageModel, _ prefix: AttentionPrefix? = nil) throws -> [Float] {
        try GradientMode.withoutGradients { try model.logits(tokens, batch: 2, length: 12, cache: nil, prefix: prefix).scalars }
    }

    @Test(arguments: Fixtures.families)
    func freshLoRAEqualsTheBaseExactly(_ family: String) throws {
        let model = try Self.base(family)
        let before = try Self.logits(model)
        let adapter = try LoRAAdapter.inject(into: model, configuration: LoRAConfiguration(rank: 4, alpha: 8, targets: .allLinear), seed: 3)
        let perLayer = ["gpt2": 4, "gpt-neox": 4, "gpt-neo": 6][family] ?? 7
        #expect(adapter.layers.count == 2 * perLayer)
        #expect(try Self.logits(model) == before)
    }

    @Test func onlyAdapterTensorsTrainAndTheBaseNeverChanges() throws {
        let model = try Self.base()
        let snapshot = model.namedParameters().map { ($0.name, $0.tensor.scalars) }
        let adapter = try LoRAAdapter.inject(into: model, configuration: LoRAConfiguration(rank: 2, alpha: 4), seed: 1)
        let trainable = model.trainableParameters()
        #expect(trainable.count == 2 * adapter.layers.count)
        #expect(trainable.allSatisfy { $0.name.contains("lora_") })
        // One gradient step on the adapter (plain SGD; AdamW is the trainer's).
        let before = try Self.logits(model)
        let loss = try Losses.causalLanguageModel(logits: model.logits(Self.tokens, batch: 2, length: 12, cache: nil, prefix: nil), tokens: Self.tokens)
        try loss.backward()
        let adapterBefore = trainable.map { $0.tensor.scalars }
        for (_, t) in trainable { try t.assign(t.detached() - t.grad! * 0.5) }
        // B starts at zero, so the first step moves every B and no A (A's gradient is scaled by B), and the output.
        for ((name, t), old) in zip(trainable, adapterBefore) {
            let moved = t.scalars != old
            #expect(moved == name.contains("lora_B"), "\(name): moved \(moved)")
        }
        #expect(try Self.logits(model) != before)
        let after = Dictionary(uniqueKeysWithValues: model.namedParameters().map { ($0.name.replacingOccurrences(of: ".base_layer", with: ""), $0.tensor.scalars) })
        for (name, values) in snapshot {
            let same = after[name].map { zip($0, values).allSatisfy { $0.bitPattern == $1.bitPattern } && $0.count == values.count } ?? false
            #expect(same, "base tensor \(name) changed")
        }
        #expect(model.namedParameters().filter { !$0.name.contains("lora_") }.allSatisfy { $0.tensor.grad == nil })
    }

    @Test func mergeThenUnmergeRestoresTheBase() throws {
        let model = try Self.base()
        guard case .lora(let lora) = try PEFTFormat.load(Fixtures.path("llama-gqa", "lora"), into: model) else {
            Issue.record("not LoRA"); return
        }
        let originals = try lora.layers.map { try #require($0.layer.baseLayer as? Linear).weight.scalars }
        let unmerged = try Self.logits(model)
        try lora.merge()
        let allMerged = lora.layers.allSatisfy { $0.layer.isMerged }
        #expect(allMerged)
        let merged = try Self.logits(model)
        #expect(zip(merged, unmerged).map { abs($0 - $1) }.max()! < 1e-4, "merged and unmerged forward passes differ")
        try lora.unmerge()
        for (layer, original) in zip(lora.layers, originals) {
            let base = try #require(layer.layer.baseLayer as? Linear, "\(layer.path) should be a plain Linear again")
            let worst = zip(base.weight.scalars, original).map { abs($0 - $1) }.max()!
            #expect(worst <= 1e-6, "\(layer.path): \(worst)")
        }
        let restored = try Self.logits(model)
        #expect(zip(restored, unmerged).map { abs($0 - $1) }.max()! < 1e-5)
    }

    @Test func mergeRefusesANonFiniteResultAndChangesNothing() throws {
        var generator = RandomGenerator(seed: 2)
        let base = Linear(weight: Tensor.ones([3, 2]))
        let lora = try LoRALinear(base: base, rank: 1, alpha: 1, generator: &generator)
        try lora.lora_B.weight.assign(Tensor.filled(.infinity, shape: [3, 1]))
        #expect(throws: AdapterError.self) { try lora.merge() }
        #expect(base.weight.scalars == [1, 1, 1, 1, 1, 1])
        #expect(!lora.isMerged)
    }

    @Test(arguments: ["lora", "prefix"])
    func savedAdaptersReloadBitForBit(_ kind: String) throws {
        for family in Fixtures.families {
            let model = try Self.base(family)
            let adapter = try PEFTFormat.load(Fixtures.path(family, kind), into: model)
            let out = try Fixtures.scratchDirectory("\(family)-\(kind)-saved")
            try PEFTFormat.save(adapter, model: model, to: out)
            let original = try SafetensorsFile(path: Fixtures.path(family, "\(kind)/adapter_model.safetensors"))
            let saved = try SafetensorsFile(path: "\(out)/adapter_model.safetensors")
            #expect(Set(saved.names) == Set(original.names))
            for name in original.names { #expect(try saved.floats(name) == original.floats(name), "\(name)") }
            let reloadedModel = try Self.base(family)
            let reloaded = try PEFTFormat.load(out, into: reloadedModel)
            #expect(try Self.logits(reloadedModel, reloaded.attentionPrefix) == Self.logits(model, adapter.attentionPrefix))
        }
    }

    @Test func reparameterisedPrefixSavesItsTableForPEFT() throws {
        let model = try Self.base()
        var generator = RandomGenerator(seed: 9)
        let prefix = try PrefixTuning(virtualTokenCount: 5, layerCount: model.layerCount,
                                      keyValueHeadCount: model.keyValueHeadCount,
                                      headDimension: model.headDimension, projectionHidden: 16, generator: &generator)
        #expect(Set(prefix.namedParameters().map(\.name)) == ["embedding.weight", "transform_in.weight", "transform_in.bias", "transform_out.weight", "transform_out.bias"])
        let out = try Fixtures.scratchDirectory()
        try PEFTFormat.save(.prefix(prefix), model: model, to: out)
        let reloadedModel = try Self.base()
        let reloaded = try PEFTFormat.load(out, into: reloadedModel)
        let a = try Self.logits(model, prefix), b = try Self.logits(reloadedModel, reloaded.attentionPrefix)
        #expect(zip(a, b).map { abs($0 - $1) }.max()! < 1e-5)
        // Its gradient reaches the MLP.
        let loss = try Losses.causalLanguageModel(logits: model.logits(Self.tokens, batch: 2, length: 12, cache: nil, prefix: prefix), tokens: Self.tokens)
        try loss.backward()
        #expect(prefix.namedParameters().allSatisfy { $0.tensor.grad != nil })
    }

    @Test func targetsByNameRegexLayerAndPattern() throws {
        let paths = try Self.base().namedModules().filter { $0.module is Linear }.map(\.name)
        let q = try LoRAAdapter.select(paths, configuration: LoRAConfiguration(targets: .names(["q_proj"])))
        #expect(q == ["model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj"])
        let regex = try LoRAAdapter.select(paths, configuration: LoRAConfiguration(targets: .pattern(#".*\.mlp\.(up|down)_proj"#)))
        #expect(regex.count == 4)
        let layer1 = try LoRAAdapter.select(paths, configuration: LoRAConfiguration(targets: .allLinear, layersToTransform: [1]))
        #expect(layer1.count == 7 && layer1.allSatisfy { $0.hasPrefix("model.layers.1.") })
        #expect(!(try LoRAAdapter.select(paths,
                                         configuration: LoRAConfiguration(targets: .allLinear))).contains("lm_head"))
        let patterned = LoRAConfiguration(rank: 4, alpha: 8, rankPattern: ["q_proj": 2],
                                          alphaPattern: ["layers.1.self_attn.v_proj": 3])
        #expect(patterned.rankAndAlpha(for: "model.layers.0.self_attn.q_proj") == (2, 8))
        #expect(patterned.rankAndAlpha(for: "model.layers.1.self_attn.v_proj") == (4, 3))
        #expect(patterned.rankAndAlpha(for: "model.layers.0.self_attn.v_proj") == (4, 8))
        var generator = RandomGenerator(seed: 1)
        let rs = try LoRALinear(base: Linear(inputDimensions: 4, outputDimensions: 4), rank: 4, alpha: 8,
                                useRSLoRA: true,
                                generator: &generator)
        #expect(rs.scaling == 4)
    }
    /// Activation checkpointing changes when values are computed, not what: every trainable tensor's gradient
    /// (LoRA with dropout, a reparameterised prefix, full fine-tuning) is bitwise the same with it on.
    @Test(arguments: ["llama-gqa/lora", "llama-gqa/prefix", "llama-gqa/full", "gpt2/lora", "gpt2/full"])
    func checkpointedLayersGiveTheSameGradients(_ setup: String) throws {
        let family = String(setup.split(separator: "/")[0]), kind = String(setup.split(separator: "/")[1])
        func gradients(checkpointed: Bool) throws -> [String: [Float]] {
            let model = try Self.base(family)
            var generator = RandomGenerator(seed: 4)
            var prefix: PrefixTuning?
            var trainable: [(name: String, tensor: Tensor)]
            switch kind {
            case "lora":
                _ = try LoRAAdapter.inject(into: model, configuration: LoRAConfiguration(rank: 2, alpha: 4, dropout: 0.2, targets: .allLinear,
                                                                                         fanInFanOut: family == "gpt2"), seed: 6)
                // B starts at zero, which would leave A's gradient zero: give B values.
                for (name, t) in model.trainableParameters() where name.contains("lora_B") {
                    let values = Tensor.randomNormal(t.shape, standardDeviation: 0.1, generator: &generator).scalars
                    for i in values.indices { t.storage.pointer[i] = values[i] }
                }
                trainable = model.trainableParameters()
            case "prefix":
                model.freeze()
                let p = try PrefixTuning(virtualTokenCount: 3, layerCount: model.layerCount,
                                         keyValueHeadCount: model.keyValueHeadCount,
                                         headDimension: model.headDimension, projectionHidden: 8, generator: &generator)
                prefix = p
                trainable = p.namedParameters()
            default:
                model.unfreeze()
                trainable = model.trainableParameters()
            }
            model.checkpointsActivations = checkpointed
            let targets = Losses.nextTokenTargets(Self.tokens, batch: 2, length: 12)
            let loss = try model.loss(Self.tokens, batch: 2, length: 12, targets: targets, prefix: prefix)
            // Every layer but the last, whose backward follows the head's at once.
            #expect(loss.recordedOps.filter { $0 == "checkpoint" }.count == (checkpointed ? model.layerCount - 1 : 0))
            try loss.backward()
            return Dictionary(uniqueKeysWithValues: trainable.map { ($0.name, $0.tensor.grad?.scalars ?? []) })
        }
        let plain = try gradients(checkpointed: false), checkpointed = try gradients(checkpointed: true)
        #expect(!plain.isEmpty && plain.values.allSatisfy { !$0.isEmpty })
        #expect(plain.values.filter { $0.contains { $0 != 0 } }.count >= plain.count / 2)
        for (name, g) in plain { #expect(checkpointed[name] == g, "\(name)") }
    }
}
