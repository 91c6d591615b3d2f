import Foundation
import Testing
import TestSupport
import FinchFormats
import FinchTensor
@testable import FinchModels

/// A LLaMA and a GPT-2 written to GGUF as llama.cpp's converter writes them (Tests/Fixtures/gguf/make_gguf.py)
/// load to the same models as the Hugging Face folders they were made from, and write back to the same tensors.
@Suite("models from GGUF")
struct GGUFModelTests {
    @Test(arguments: Fixtures.ggufFamilies)
    func aGGUFModelIsTheHuggingFaceFolderBitForBit(_ family: String) throws {
        let folder = try HuggingFaceFolder.load(Fixtures.path(family, "base"))
        let path = Fixtures.path("gguf", family + ".gguf")
        let (model, file) = try GGUFModel.load(path)
        // llama.cpp's converter writes a Mistral as a LLaMA and keeps no sliding window: it loads as one.
        var expected = folder.config
        if case .llama(var c) = expected, c.family == .mistral {
            c.family = .llama
            c.slidingWindow = nil
            expected = .llama(c)
        }
        #expect(model.config == expected)
        let theirs = Dictionary(uniqueKeysWithValues: folder.model.namedParameters().map { ($0.name, $0.tensor.scalars) })
        for (name, tensor) in model.namedParameters() {
            #expect(tensor.scalars == theirs[name], "\(name)")  // q and k un-permuted exactly
        }
        let tokens: [Int32] = (0..<24).map { Int32(($0 * 37 + 5) % 600) }
        let logits = try GradientMode.withoutGradients {
            try model.logits(tokens, batch: 2, length: 12, cache: nil, prefix: nil).scalars
        }
        let reference = try GradientMode.withoutGradients {
            try folder.model.logits(tokens, batch: 2, length: 12, cache: nil, prefix: nil).scalars
        }
        #expect(logits == reference)
        // Written back, every tensor the converter wrote (a GPT-2 head copied from the table aside) is as it was.
        let written = Dictionary(uniqueKeysWithValues: try GGUFModel.ggufValues(of: model).map { ($0.name, $0.values) })
        for info in file.tensors where info.name != "output.weight" || family != "gpt2" {
            #expect(try file.floats(info) == written[info.name], "\(info.name)")
        }
        #expect(written.count == file.tensors.count - (family == "gpt2" ? 1 : 0))
    }

    @Test func aModelFileFinchCannotBuildIsRefusedByName() throws {
        // metadata.gguf says llama but holds no model tensors.
        #expect(throws: FormatError.self) { try GGUFModel.load(Fixtures.path("gguf", "metadata.gguf")) }
        do {
            _ = try GGUFModel.load(Fixtures.path("gguf", "metadata.gguf"))
        } catch {
            #expect("\(error)".hasSuffix("missing tensor 'token_embd.weight' (the token embeddings, 2 dimensions)"), "\(error)")
        }
    }

    /// A fixture GGUF rewritten with its metadata changed by `edit`; returns the error loading it gives.
    static func loadingError(of family: String, edit: ([(key: String, value: GGUFValue)]) -> [(key: String, value: GGUFValue)]) throws -> String {
        let file = try GGUFFile(path: Fixtures.path("gguf", family + ".gguf"))
        let tensors = file.tensors.map { GGUFWriter.Tensor(name: $0.name, shape: $0.shape, type: $0.type, bytes: [UInt8](file.rawBytes($0))) }
        let path = try Fixtures.scratchDirectory() + "/edited.gguf"
        try GGUFWriter.write(metadata: edit(file.metadata), tensors: tensors, to: path)
        do {
            _ = try GGUFModel.load(path)
            return "loaded"
        } catch {
            return "\(error)"
        }
    }

    @Test func gptNeoXAndCommandRMetadataIsCheckedByName() throws {
        let noScale = try Self.loadingError(of: "cohere") { $0.filter { $0.key != "command-r.logit_scale" } }
        #expect(noScale.hasSuffix("missing command-r.logit_scale"), "\(noScale)")
        let odd = try Self.loadingError(of: "gpt-neox") { $0.map { $0.key == "gptneox.rope.dimension_count" ? ($0.key, .uint32(5)) : $0 } }
        #expect(odd.hasSuffix("gptneox.rope.dimension_count 5 must be even and at most the head size 16"), "\(odd)")
        let flag = try Self.loadingError(of: "gpt-neox") { $0.map { $0.key == "gptneox.use_parallel_residual" ? ($0.key, .uint32(1)) : $0 } }
        #expect(flag.contains("gptneox.use_parallel_residual must be a bool"), "\(flag)")
        let scaled = try Self.loadingError(of: "cohere") { $0.map { $0.key == "command-r.rope.scaling.type" ? ($0.key, .string("yarn")) : $0 } }
        #expect(scaled.hasSuffix("command-r.rope.scaling.type \"yarn\" is not supported (Finch implements plain rotary positions)"), "\(scaled)")
    }

    /// SmolLM2-135M-Instruct Q4_1 where `FINCH_GGUF_SMOLLM2` names it: the configuration llama.cpp reads from it, and
    /// a next token that shows the weights are in place. (Its logits against transformers' are still to check.)
    @Test(.enabled(if: ProcessInfo.processInfo.environment["FINCH_GGUF_SMOLLM2"] != nil))
    func smolLM2Loads() throws {
        let (model, _) = try GGUFModel.load(try #require(ProcessInfo.processInfo.environment["FINCH_GGUF_SMOLLM2"]))
        guard case .llama(let c) = model.config else { Issue.record("not llama"); return }
        #expect(c.layerCount == 30 && c.hiddenSize == 576 && c.headCount == 9 && c.keyValueHeadCount == 3)
        #expect(c.vocabularySize == 49_152 && c.tieWordEmbeddings && c.ropeTheta == 100_000 && c.headDimension == 64)
        #expect(c.intermediateSize == 1536 && c.maxPositionEmbeddings == 8192 && c.eosTokenIds == [2])
        // "The capital of France is" by the file's own token list (The, Ġcapital, Ġof, ĠFrance, Ġis): the most
        // likely next token is ĠParis (7042).
        let logits = try GradientMode.withoutGradients {
            try model.logits([504, 3575, 282, 4649, 314], batch: 1, length: 5, cache: nil, prefix: nil).scalars
        }
        #expect(logits.count == 5 * 49_152 && logits.allSatisfy(\.isFinite))
        let last = logits[(4 * 49_152)...]
        #expect(last.indices.max { last[$0] < last[$1] }.map { $0 - 4 * 49_152 } == 7042)
    }

    @Test func rowOrdersMoveRowsAsTheConverterDoes() {
        // Two heads of four rows, one value a row: Hugging Face's halves (0, 1 | 2, 3) become llama.cpp's interleaved
        // (0, 2, 1, 3) within each head, and back.
        var rotary: [Float] = [0, 1, 2, 3, 4, 5, 6, 7]
        rotary.withUnsafeMutableBufferPointer { RowOrder.interleavedRotary(heads: 2).toGGUF($0, rowLength: 1) }
        #expect(rotary == [0, 2, 1, 3, 4, 6, 5, 7])
        rotary.withUnsafeMutableBufferPointer { RowOrder.interleavedRotary(heads: 2).toHuggingFace($0, rowLength: 1) }
        #expect(rotary == [0, 1, 2, 3, 4, 5, 6, 7])
        // GPT-NeoX, two heads of two rows, rows of two values: Hugging Face's (q0 k0 v0 q1 k1 v1) per head becomes
        // llama.cpp's (q0 q1 k0 k1 v0 v1).
        let names = ["q0", "k0", "v0", "q1", "k1", "v1"].flatMap { h in [h + "a", h + "b", h + "c", h + "d"] }
        var fused = Array(0..<names.count)
        fused.withUnsafeMutableBufferPointer { RowOrder.groupedQKV(heads: 2).toGGUF($0, rowLength: 2) }
        let grouped = ["q0", "q1", "k0", "k1", "v0", "v1"].flatMap { h in [h + "a", h + "b", h + "c", h + "d"] }
        #expect(fused.map { names[$0] } == grouped)
        fused.withUnsafeMutableBufferPointer { RowOrder.groupedQKV(heads: 2).toHuggingFace($0, rowLength: 2) }
        #expect(fused == Array(0..<names.count))
    }
}
