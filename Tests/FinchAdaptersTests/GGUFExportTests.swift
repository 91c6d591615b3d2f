import Foundation
import Testing
import TestSupport
@testable import FinchAdapters
import FinchFormats
import FinchModels
import FinchTensor

/// Exporting to GGUF from a GGUF base: the fixture LLaMA as llama.cpp's converter writes it (Tests/Fixtures/gguf/
/// llama-gqa.gguf) with PEFT's LoRA adapter for it (Tests/Fixtures/llama-gqa/lora, made by PEFT).
@Suite("GGUF export")
struct GGUFExportTests {
    static let base = Fixtures.path("gguf", "llama-gqa.gguf")

    static func merged(_ family: String = "llama-gqa") throws -> (PretrainedModel, Adapter) {
        let base = try PretrainedModel.load(Fixtures.path("gguf", family + ".gguf"))
        let adapter = try PEFTFormat.load(Fixtures.path(family, "lora"), into: base.model)
        return (base, adapter)
    }

    /// The merged float32 GGUF holds PEFT's merged weights (within float32 rounding of the merge), in llama.cpp's
    /// layout, and reads back as the model it was written from.
    @Test(arguments: Fixtures.ggufFamilies)
    func mergedFloat32HoldsPEFTsMergedWeights(_ family: String) throws {
        let (base, adapter) = try Self.merged(family)
        #expect(try adapter.mergeAndUnload(from: base.model))
        let out = try Fixtures.scratchDirectory() + "/merged.gguf"
        let notes = try GGUFExport.write(model: base.model, base: try #require(base.ggufFile), to: out, type: .f32)
        #expect(notes == ["the written weights keep 100.0 % of the change made to the base's weights"])
        let file = try GGUFFile(path: out)
        // The converter's copy of GPT-2's tied head is not written again: llama.cpp reads the table in its place.
        let original = try GGUFFile(path: base.path)
        let expectedNames = original.tensors.map(\.name).filter { family != "gpt2" || $0 != "output.weight" }
        // In the model's parameter order, which llama.cpp does not depend on.
        #expect(file.tensors.map(\.name).sorted() == expectedNames.sorted())
        #expect(file["general.file_type"] == .uint32(0) && file["tokenizer.ggml.model"] == original["tokenizer.ggml.model"])
        let reloaded = try GGUFModel.load(out).model
        let peft = try SafetensorsFile(path: Fixtures.path(family, "lora-merged/model.safetensors"))
        for (name, tensor) in reloaded.namedParameters() {
            let key = peft.names.contains(name) ? name : String(name.dropFirst("transformer.".count))
            var theirs = try peft.floats(key)
            if reloaded.storesTransposed(name) {  // Conv1D's [in, out] in the file
                let (rows, columns) = (tensor.shape[1], tensor.shape[0])
                theirs = (0..<(rows * columns)).map { theirs[($0 % rows) * columns + $0 / rows] }
            }
            let worst = zip(tensor.scalars, theirs).map { abs($0 - $1) }.max() ?? 0
            #expect(worst <= 1e-5, "\(name): \(worst)")
        }
        for ((name, a), (_, b)) in zip(reloaded.namedParameters(), base.model.namedParameters()) {
            #expect(a.scalars.map(\.bitPattern) == b.scalars.map(\.bitPattern), "\(name)")
        }
    }

    /// Each matrix in the type asked for and read back as GGUFQuantization wrote it; vectors stay float32; `same`
    /// keeps a quantised base's types and says how little of a small change survives 4-bit storage.
    @Test func typesAreChosenPerTensorAndTheKeptChangeIsReported() throws {
        let dir = try Fixtures.scratchDirectory()
        let plain = try PretrainedModel.load(Self.base)
        _ = try GGUFExport.write(model: plain.model, base: try #require(plain.ggufFile), to: "\(dir)/q4_1.gguf", type: .q4_1)
        let quantised = try GGUFFile(path: "\(dir)/q4_1.gguf")
        for t in quantised.tensors {  // rows that are not whole blocks of 32 cannot be Q4_1 (the fixture's MLP has some)
            #expect(t.type == (t.dimensions.count == 1 ? .f32 : t.dimensions[0] % 32 == 0 ? .q4_1 : .f16), "\(t.name)")
        }
        #expect(quantised.tensors.filter { $0.type == .q4_1 }.count > 10)
        #expect(quantised["general.file_type"] == .uint32(3))
        let base = try PretrainedModel.load("\(dir)/q4_1.gguf")
        let adapter = try PEFTFormat.load(Fixtures.path("llama-gqa", "lora"), into: base.model)
        #expect(try adapter.mergeAndUnload(from: base.model))
        let notes = try GGUFExport.write(model: base.model, base: quantised, to: "\(dir)/same.gguf", type: .same)
        let same = try GGUFFile(path: "\(dir)/same.gguf")
        #expect(same.tensors.map(\.type) == quantised.tensors.map(\.type))
        let kept = try #require(notes.last)
        #expect(kept.hasPrefix("the written weights keep ") && kept.hasSuffix(" % of the change made to the base's weights"))
        let eight = try GGUFExport.write(model: base.model, base: quantised, to: "\(dir)/q8_0.gguf", type: .q8_0)
        let percent = { (line: String) in Double(line.split(separator: " ")[4])! }
        let keptAt8Bits = percent(try #require(eight.last)), keptAt4Bits = percent(kept)
        #expect(keptAt8Bits > 95 && keptAt8Bits > keptAt4Bits)
    }

    /// The llama.cpp LoRA adapter, applied as llama.cpp applies one (W + alpha / rank · B·A, on the stored rows),
    /// gives the merged model's stored rows: the row order of B (LLaMA's q and k, GPT-NeoX's fused qkv) and the
    /// scale are right.
    @Test(arguments: Fixtures.ggufFamilies)
    func ggufLoRAAppliedAsLlamaCppDoesGivesTheMergedWeights(_ family: String) throws {
        let dir = try Fixtures.scratchDirectory()
        let (base, adapter) = try Self.merged(family)
        guard case .lora(let lora) = adapter else { Issue.record("not LoRA"); return }
        let original = try #require(base.ggufFile)
        let architecture = try #require(original["general.architecture"]?.string)
        try GGUFLoRAFormat.write(lora, model: base.model, architecture: architecture, to: "\(dir)/adapter.gguf")
        #expect(try adapter.mergeAndUnload(from: base.model))
        _ = try GGUFExport.write(model: base.model, base: original, to: "\(dir)/merged.gguf", type: .f32)
        let file = try GGUFFile(path: "\(dir)/adapter.gguf")
        let merged = try GGUFFile(path: "\(dir)/merged.gguf")
        #expect(file["general.type"] == .string("adapter") && file["adapter.type"] == .string("lora"))
        let alpha = Float(try #require(file["adapter.lora.alpha"]?.number))
        #expect(alpha == (family == "gpt2" ? 16 : 8))  // the fixture's lora_alpha (rank 4, no rsLoRA)
        let pairs = file.tensors.filter { $0.name.hasSuffix(".lora_a") }
        #expect(pairs.count == lora.layers.count && file.tensors.count == 2 * pairs.count)
        for a in pairs {
            let name = String(a.name.dropLast(".lora_a".count))
            let b = try #require(file.tensor(named: name + ".lora_b"))
            let rank = a.shape[0], (rows, columns) = (b.shape[0], a.shape[1])
            let av = try file.floats(a), bv = try file.floats(b)
            var w = try original.floats(try #require(original.tensor(named: name)))
            for r in 0..<rows {
                for c in 0..<columns {
                    var sum: Float = 0
                    for k in 0..<rank { sum += bv[r * rank + k] * av[k * columns + c] }
                    w[r * columns + c] += alpha / Float(rank) * sum
                }
            }
            let expected = try merged.floats(try #require(merged.tensor(named: name)))
            let worst = zip(w, expected).map { abs($0 - $1) }.max() ?? 0
            #expect(worst <= 1e-5, "\(name): \(worst)")
        }
    }

    /// rsLoRA's scale travels in alpha (alpha·√r), and a rank pattern's other scales are folded into B.
    @Test func rsLoRAAndRankPatternsKeepEachLayersScale() throws {
        for configuration in [LoRAConfiguration(rank: 4, alpha: 8, targets: .names(["q_proj", "v_proj"]), useRSLoRA: true),
                              LoRAConfiguration(rank: 4, alpha: 8, targets: .names(["q_proj", "v_proj"]),
                                                rankPattern: ["v_proj": 2], alphaPattern: ["v_proj": 3])] {
            let base = try PretrainedModel.load(Self.base)
            let lora = try LoRAAdapter.inject(into: base.model, configuration: configuration, seed: 7)
            var generator = RandomGenerator(seed: 3)
            for (_, layer) in lora.layers {  // a non-zero B, as after training
                try layer.lora_B.weight.assign(Tensor.randomNormal(layer.lora_B.weight.shape, standardDeviation: 0.1,
                                                                   generator: &generator))
            }
            let path = try Fixtures.scratchDirectory() + "/adapter.gguf"
            try GGUFLoRAFormat.write(lora, model: base.model, architecture: "llama", to: path)
            let file = try GGUFFile(path: path)
            let alpha = Float(try #require(file["adapter.lora.alpha"]?.number))
            let first = try #require(lora.layers.first).layer
            #expect(alpha == first.scaling * Float(first.rank))
            for (path, layer) in lora.layers {
                let name = try #require(GGUFModel.ggufName(path + ".weight", in: base.config))
                let b = try file.floats(try #require(file.tensor(named: name + ".lora_b")))
                let stored = b.map { abs($0) }.reduce(0, +), trained = layer.lora_B.weight.scalars.map { abs($0) }.reduce(0, +)
                // |B| scaled by (this layer's scale) / (alpha / its rank); the permutation keeps the sum.
                let expected = trained * layer.scaling / (alpha / Float(layer.rank))
                #expect(abs(stored - expected) <= 1e-3 * expected, "\(path)")
            }
        }
    }
}
