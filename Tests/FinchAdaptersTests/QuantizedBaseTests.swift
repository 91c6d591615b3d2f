import Foundation
import Testing
import TestSupport
@testable import FinchAdapters
import FinchFormats
import FinchModels
import FinchNN
import FinchTensor

/// LoRA over a base held quantised: a GGUF's own Q4_1 blocks (`quantize: keep`) against the same file read into
/// float32, and NF4 made at load against NF4 of the float weights.
@Suite("LoRA over a quantised base")
struct QuantizedBaseTests {
    /// The fixture LLaMA written as Q4_1 (rows that are not whole blocks stay F16), in a scratch folder.
    static func q4_1File() throws -> String {
        let dir = try Fixtures.scratchDirectory()
        let plain = try PretrainedModel.load(Fixtures.path("gguf", "llama-gqa.gguf"))
        _ = try GGUFExport.write(model: plain.model, base: try #require(plain.ggufFile), to: "\(dir)/q4_1.gguf", type: .q4_1)
        return "\(dir)/q4_1.gguf"
    }

    static func maxRelative(_ a: [Float], _ b: [Float]) -> Float {
        let largest = b.map(abs).max() ?? 1
        return zip(a, b).map { abs($0 - $1) }.max()! / max(largest, 1e-30)
    }

    static let tokens: [Int32] = [1, 15, 27, 3, 99, 42, 7, 64, 5, 12, 77, 31]
    static let targets: [Int32] = Array(tokens.dropFirst()) + [-100]

    /// Logits, LoRA gradients and the merged weights over the kept Q4_1 blocks equal those over the same blocks read
    /// into float32.
    @Test func keptBlocksGiveTheDequantisedModelsNumbers() throws {
        let path = try Self.q4_1File()
        let float = try PretrainedModel.load(path), kept = try PretrainedModel.load(path, quantization: .keep)
        let quantised = kept.model.namedModules().compactMap { $0.module as? QuantizedLinear }
        #expect(quantised.count > 10 && quantised.allSatisfy { $0.quantized.format == "q4_1" })
        // The token table (and the head tied to it) stays in the file's blocks too.
        let table = try #require(kept.model.namedModules().first { $0.name == "model.embed_tokens" }?.module as? QuantizedEmbedding)
        let floatTable = try #require(float.model.namedModules().first { $0.name == "model.embed_tokens" }?.module as? Embedding)
        #expect(table.quantized.dequantized().scalars == floatTable.weight.scalars)
        let storage = QuantizedBase.storage(of: kept.model)
        #expect(storage.contains { $0.format == "q4_1" && $0.bytes > 0 })
        #expect(throws: FormatError.self) { try HuggingFaceFolder.checkpointItems(of: kept.model, dtype: .f32) }
        let n = Self.tokens.count
        let a = try float.model.logits(Self.tokens, batch: 1, length: n, cache: nil, prefix: nil).scalars
        let b = try kept.model.logits(Self.tokens, batch: 1, length: n, cache: nil, prefix: nil).scalars
        #expect(Self.maxRelative(b, a) <= 1e-5)

        var gradients: [[String: [Float]]] = []
        var merged: [[Float]] = []
        for model in [float.model, kept.model] {
            let adapter = try LoRAAdapter.inject(into: model, configuration: LoRAConfiguration(rank: 4, alpha: 8, targets: .allLinear), seed: 3)
            // B away from zero, the same in both, so that the gradient of A is not zero.
            var generator = RandomGenerator(seed: 9)
            for (_, layer) in adapter.layers {
                try layer.lora_B.weight.assign(Tensor.randomNormal(layer.lora_B.weight.shape, standardDeviation: 0.02, generator: &generator))
            }
            let loss = try model.loss(Self.tokens, batch: 1, length: n, targets: Self.targets, prefix: nil)
            try loss.backward()
            gradients.append(Dictionary(uniqueKeysWithValues: model.trainableParameters().map { ($0.name, try! #require($0.tensor.grad).scalars) }))
            let layer = try #require(adapter.layers.first { $0.path.hasSuffix("layers.0.self_attn.q_proj") }?.layer)
            try layer.merge()
            merged.append(try #require(layer.baseLayer as? Linear).weight.scalars)
            try layer.unmerge()
        }
        #expect(gradients[0].keys.sorted() == gradients[1].keys.sorted() && gradients[0].count > 10)
        for (name, g) in gradients[0] { #expect(Self.maxRelative(gradients[1][name]!, g) <= 1e-4, "\(name)") }
        #expect(Self.maxRelative(merged[1], merged[0]) <= 1e-6)
        #expect(kept.model.namedModules().contains { ($0.module as? LoRALinear)?.baseLayer is QuantizedLinear },
                "unmerging puts the quantised base back")
    }

    /// Every family llama.cpp converts keeps a quantised GGUF's blocks (rows in Hugging Face's order again: LLaMA's
    /// q and k, GPT-NeoX's fused qkv) and gives the numbers of the same file read into float32.
    @Test(arguments: Fixtures.ggufFamilies)
    func everyGGUFFamilyKeepsItsBlocks(_ family: String) throws {
        let dir = try Fixtures.scratchDirectory()
        let plain = try PretrainedModel.load(Fixtures.path("gguf", family + ".gguf"))
        _ = try GGUFExport.write(model: plain.model, base: try #require(plain.ggufFile), to: "\(dir)/q8_0.gguf", type: .q8_0)
        let float = try PretrainedModel.load("\(dir)/q8_0.gguf"), kept = try PretrainedModel.load("\(dir)/q8_0.gguf", quantization: .keep)
        let quantised = kept.model.namedModules().filter { $0.module is QuantizedLinear }
        // Every decoder projection whose rows are whole blocks of 32 (the others were written as F16).
        let linears = float.model.namedModules().compactMap { entry -> Linear? in
            guard let linear = entry.module as? Linear, GGUFModel.ggufName(entry.name + ".weight", in: float.model.config)?.hasPrefix("blk.") == true else { return nil }
            return linear
        }
        #expect(quantised.count > 0 && quantised.count == linears.filter { $0.inputDimensions % 32 == 0 }.count,
                "\(family): \(quantised.count) of \(linears.count) projections kept")
        #expect(kept.model.namedModules().contains { $0.module is QuantizedEmbedding }, "\(family): the token table is not kept")
        let n = Self.tokens.count
        let a = try float.model.logits(Self.tokens, batch: 1, length: n, cache: nil, prefix: nil).scalars
        let b = try kept.model.logits(Self.tokens, batch: 1, length: n, cache: nil, prefix: nil).scalars
        #expect(Self.maxRelative(b, a) <= 1e-5, "\(family)")
    }

    /// NF4 (and Q8_0) at load hold exactly the format of the float weights; projections whose rows are not whole
    /// blocks stay float32.
    @Test(arguments: [BaseQuantization.nf4, .q8_0])
    func quantisationAtLoadHoldsTheFormatOfTheFloatWeights(_ mode: BaseQuantization) throws {
        let folder = Fixtures.path("llama-gqa", "base")
        let float = try PretrainedModel.load(folder), quantised = try PretrainedModel.load(folder, quantization: mode)
        let block = mode == .nf4 ? NF4.blockSize : 32
        var checked = 0
        for (path, module) in float.model.namedModules() where path.contains(".layers.") {
            guard let linear = module as? Linear else { continue }
            let now = quantised.model.namedModules().first { $0.name == path }?.module
            guard linear.inputDimensions % block == 0 else {
                #expect(now is Linear, "\(path) has rows of \(linear.inputDimensions) and should stay float32")
                continue
            }
            let q = try #require(now as? QuantizedLinear, "\(path)")
            if mode == .nf4 {
                let expected = try linear.weight.scalars.withUnsafeBufferPointer { try NF4(quantizing: $0, doubleQuantization: true) }
                #expect(q.quantized.dequantized().scalars == expected.dequantized(), "\(path)")
            } else {
                let bytes = GGUFQuantization.quantize(UnsafeBufferPointer(linear.weight.storage.buffer), as: .q8_0)
                var expected = [Float](repeating: 0, count: linear.weight.count)
                try bytes.withUnsafeBytes { raw in
                    try expected.withUnsafeMutableBufferPointer { try GGUFDequantization.dequantize(raw, type: .q8_0, into: $0, what: path) }
                }
                #expect(q.quantized.dequantized().scalars == expected, "\(path)")
            }
            checked += 1
        }
        #expect(checked > 5)
    }

    /// Q8_0 at load on a model whose head is tied to its table (the shipped Shakespeare model) quantises the
    /// table, and the head reads it there: the loss and its gradients equal a float model holding the same
    /// dequantised values.
    @Test func aTiedHeadReadsTheQuantisedTable() throws {
        let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("models/finch-shakespeare").path
        let quantised = try PretrainedModel.load(folder, quantization: .q8_0), float = try PretrainedModel.load(folder)
        guard case .quantized(let head) = quantised.model.outputWeight else {
            Issue.record("the tied head should read the quantised table")
            return
        }
        #expect(head.format == "q8_0")
        // The float model gets the very values the quantised one holds.
        let floatModules = Dictionary(uniqueKeysWithValues: float.model.namedModules().map { ($0.name, $0.module) })
        var replaced = 0
        for (path, module) in quantised.model.namedModules() {
            guard let q = (module as? any QuantizedModule)?.quantized else { continue }
            let target = (floatModules[path] as? Linear)?.weight ?? (floatModules[path] as? Embedding)?.weight
            try #require(target).assign(q.dequantized())
            replaced += 1
        }
        #expect(replaced > 10)
        let tokens: [Int32] = [5, 17, 33, 2, 9, 60, 41, 8], targets: [Int32] = [17, 33, -100, 9, 60, 41, 8, 3]
        var results: [(loss: Float, grads: [String: [Float]])] = []
        for model in [float.model, quantised.model] {
            _ = try LoRAAdapter.inject(into: model, configuration: LoRAConfiguration(rank: 2, alpha: 4, targets: .allLinear), seed: 1)
            let loss = try model.loss(tokens, batch: 2, length: 4, targets: targets, prefix: nil)
            try loss.backward()
            results.append((loss.scalars[0], Dictionary(uniqueKeysWithValues: model.trainableParameters().map { ($0.name, try! #require($0.tensor.grad).scalars) })))
        }
        #expect(abs(results[0].loss - results[1].loss) <= 1e-5 * results[0].loss)
        #expect(results[0].grads.keys.sorted() == results[1].grads.keys.sorted())
        for (name, g) in results[0].grads { #expect(Self.maxRelative(results[1].grads[name]!, g) <= 1e-4, "\(name)") }
        #expect(throws: (any Error).self) { try quantised.model.untieWordEmbeddings() }
        // A table held quantised cannot carry LoRA or a trainable copy: refused by name, not dequantised silently.
        let again = try PretrainedModel.load(folder, quantization: .q8_0)
        #expect { _ = try LoRAAdapter.inject(into: again.model, configuration: LoRAConfiguration(rank: 2, alpha: 4, targets: .names(["embed_tokens"])), seed: 1) }
            throws: { "\($0)".contains("'model.embed_tokens' is held as q8_0") }
        var saving = LoRAConfiguration(rank: 2, alpha: 4, targets: .names(["q_proj"]))
        saving.modulesToSave = ["embed_tokens"]
        #expect { _ = try LoRAAdapter.inject(into: again.model, configuration: saving, seed: 1) }
            throws: { "\($0)".contains("'model.embed_tokens' is held as q8_0") }
    }

    @Test func aFolderCannotKeepBlocksItDoesNotHave() {
        #expect { try PretrainedModel.load(Fixtures.path("llama-gqa", "base"), quantization: .keep) } throws: {
            "\($0)".contains("quantize: keep keeps a GGUF file's own blocks")
        }
    }
}
