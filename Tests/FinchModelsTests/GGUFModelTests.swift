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
        for info in file.tensors where info.name != "output.weight" || family == "llama-gqa" {
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

    @Test func unpermutingRestoresEachHeadsHalves() {
        // Two heads of four rows, one value a row: llama.cpp's order (0, 2, 1, 3) within a head back to (0, 1, 2, 3).
        var values: [Float] = [0, 2, 1, 3, 4, 6, 5, 7]
        values.withUnsafeMutableBufferPointer { GGUFModel.unpermute($0, heads: 2, rowLength: 1) }
        #expect(values == [0, 1, 2, 3, 4, 5, 6, 7])
    }
}
