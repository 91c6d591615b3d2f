import Foundation
import Testing
import TestSupport
@testable import FinchFormats

/// Finch's GGUF quantiser and writer against gguf-py's files (Tests/Fixtures/gguf, made by make_gguf.py there).
@Suite("GGUF writing")
struct GGUFWritingTests {
    /// Each type's bytes are the ones gguf-py's `quants.quantize` wrote for the same float32 values, which
    /// include constant and zero blocks and a large outlier.
    @Test(arguments: GGUFQuantization.supported)
    func quantisationMatchesGGUFPy(_ type: GGUFTensorType) throws {
        let file = try GGUFFile(path: Fixtures.path("gguf", "quants.gguf"))
        let values = try file.floats(try #require(file.tensor(named: "values")))
        let stored = try #require(file.tensor(named: type.name.lowercased()))
        let ours = values.withUnsafeBufferPointer { GGUFQuantization.quantize($0, as: type) }
        #expect(ours == Array(file.rawBytes(stored)))
        #expect(GGUFQuantization.canStore(rowLength: 96, as: type) && (type.block.values == 1 || !GGUFQuantization.canStore(rowLength: 100, as: type)))
    }

    /// Written again from what Finch read, metadata.gguf (every value type, nested arrays, a 3-D tensor) comes out
    /// byte for byte as gguf-py wrote it.
    @Test func rewritingAGGUFPyFileGivesItsBytes() throws {
        let path = Fixtures.path("gguf", "metadata.gguf")
        let file = try GGUFFile(path: path)
        let tensors = file.tensors.map {
            GGUFWriter.Tensor(name: $0.name, shape: $0.shape, type: $0.type, bytes: Array(file.rawBytes($0)))
        }
        let out = try Fixtures.scratchDirectory() + "/copy.gguf"
        try GGUFWriter.write(metadata: file.metadata, tensors: tensors, to: out)
        #expect(try Data(contentsOf: URL(fileURLWithPath: out)) == Data(contentsOf: URL(fileURLWithPath: path)))
    }

    @Test func inconsistentTensorsAreRefusedAndNothingIsWritten() throws {
        let out = try Fixtures.scratchDirectory() + "/bad.gguf"
        let cases: [([GGUFWriter.Tensor], String)] = [
            ([.init(name: "w", shape: [2, 3], type: .f32, bytes: [UInt8](repeating: 0, count: 20))], "tensor 'w': 20 bytes are not shape [2, 3] in F32"),
            ([.init(name: "w", shape: [2, 16], type: .q8_0, bytes: [UInt8](repeating: 0, count: 34))], "tensor 'w': 34 bytes are not shape [2, 16] in Q8_0"),
            ([.init(name: "w", shape: [1], type: .f32, bytes: [0, 0, 0, 0]), .init(name: "w", shape: [1], type: .f32, bytes: [0, 0, 0, 0])],
             "tensor name 'w' is repeated"),
        ]
        for (tensors, message) in cases {
            let error = try #require(throws: FormatError.self) { try GGUFWriter.write(metadata: [], tensors: tensors, to: out) }
            #expect("\(error)" == "\(out): \(message)")
            #expect(!FileManager.default.fileExists(atPath: out))
        }
        let error = try #require(throws: FormatError.self) {
            try GGUFWriter.write(metadata: [("general.alignment", .uint32(48))], tensors: [], to: out)
        }
        #expect("\(error)".contains("general.alignment must be a power of two"))
    }
}

/// Tokenizers built from GGUF metadata against llama.cpp's own tokenizer for the same files, and for the byte-level
/// files against the `tokenizers` library with each pre-tokenizer's original definition (make_tokenizer_gguf.py and
/// llamacpp_token_ids.py). For the SentencePiece file Finch follows llama.cpp where transformers differs: a text
/// that starts with a space, or follows a special token, still gets the ▁ SentencePiece puts before a text.
@Suite("GGUF tokenizers")
struct GGUFTokenizerTests {
    struct Case: Decodable { let text: String; let ids: [Int]; let llama_cpp_ids: [Int] }

    static let files = ["tokenizer-gpt-2.gguf", "tokenizer-smollm.gguf", "tokenizer-llama-bpe.gguf", "tokenizer-qwen2.gguf",
                        "tokenizer-llama.gguf"]

    @Test(arguments: files)
    func idsMatchTheReference(_ name: String) throws {
        let expected = try JSONDecoder().decode([String: [Case]].self,
                                                from: Data(contentsOf: URL(fileURLWithPath: Fixtures.path("gguf", "tokenizer-expected.json"))))
        let cases = try #require(expected[name])
        let tokenizer = try Tokenizer(gguf: try GGUFFile(path: Fixtures.path("gguf", name)))
        #expect(cases.count == 8 && cases[0].ids.count > 300)
        let sentencePiece = name == "tokenizer-llama.gguf"
        for c in cases {
            #expect(tokenizer.encode(c.text, addSpecialTokens: false) == c.llama_cpp_ids, "\(name): \(c.text.prefix(40).debugDescription)")
            if sentencePiece {
                #expect(tokenizer.encode(c.text, addSpecialTokens: true) == [1] + c.llama_cpp_ids)
            } else {
                #expect(c.ids == c.llama_cpp_ids)
                #expect(tokenizer.decode(c.ids) == c.text)  // byte-level BPE gives back every byte
            }
        }
    }

    /// Token offsets (for chat loss masks) land on the text: each token's bytes start where the text has them.
    @Test(arguments: files)
    func offsetsSpellTheTextBack(_ name: String) throws {
        let tokenizer = try Tokenizer(gguf: try GGUFFile(path: Fixtures.path("gguf", name)))
        let text = try String(contentsOfFile: Fixtures.path("gguf", "mixed.txt"), encoding: .utf8) + "<|endoftext|> tail"
        let (ids, offsets) = try #require(tokenizer.encodeWithOffsets(text))
        #expect(ids == tokenizer.encode(text, addSpecialTokens: false))
        #expect(offsets.first == 0 && zip(offsets, offsets.dropFirst()).allSatisfy { $0 <= $1 })
        let bytes = Array(text.utf8)
        for (id, offset) in zip(ids, offsets) {
            var piece = tokenizer.tokenBytes(id)
            if offset == 0, piece.first == 0x20, bytes.first != 0x20 { piece.removeFirst() }  // SentencePiece's added ▁
            #expect(Array(bytes[offset..<min(bytes.count, offset + piece.count)]) == piece, "\(name): token \(id) at \(offset)")
        }
    }

    @Test func unknownPreTokenizersAndBrokenVocabulariesAreRefusedByName() throws {
        let source = try GGUFFile(path: Fixtures.path("gguf", "tokenizer-smollm.gguf"))
        let dir = try Fixtures.scratchDirectory()
        func variant(_ change: (inout [(key: String, value: GGUFValue)]) -> Void) throws -> String {
            var metadata = source.metadata
            change(&metadata)
            let path = dir + "/variant.gguf"
            try GGUFWriter.write(metadata: metadata, tensors: [], to: path)
            let error = try #require(throws: FormatError.self) { try Tokenizer(gguf: try GGUFFile(path: path)) }
            return "\(error)"
        }
        func set(_ key: String, _ value: GGUFValue) -> (inout [(key: String, value: GGUFValue)]) -> Void {
            { m in m = m.map { $0.key == key ? (key, value) : $0 } }
        }
        #expect(try variant(set("tokenizer.ggml.pre", .string("deepseek-coder")))
            .hasSuffix("tokenizer.ggml.pre \"deepseek-coder\" is not supported (Finch implements default, gpt-2, smollm, starcoder, llama-bpe, llama3, qwen2)"))
        #expect(try variant(set("tokenizer.ggml.model", .string("bert"))).hasSuffix("tokenizer.ggml.model \"bert\" is not supported (Finch reads \"gpt2\" and \"llama\" tokenizers)"))
        #expect(try variant(set("tokenizer.ggml.token_type", .array(.int32, [.int32(1)])))
            .hasSuffix("tokenizer.ggml.token_type has 1 entries, expected one per token (640)"))
        #expect(try variant(set("tokenizer.ggml.bos_token_id", .uint32(640))).hasSuffix("tokenizer.ggml.bos_token_id is 640, expected a token id below 640"))
        #expect(try variant { $0.removeAll { $0.key == "tokenizer.ggml.merges" } }
            .hasSuffix("missing tokenizer.ggml.merges (a gpt2 tokenizer needs its BPE merges)"))
        #expect(try variant(set("tokenizer.ggml.merges", .array(.string, [.string("Ġ zz")])))
            .contains("merge 0 (Ġ zz) uses a token missing from the vocabulary"))
    }
}
