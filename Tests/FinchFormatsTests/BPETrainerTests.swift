import Foundation
import Testing
import TestSupport
@testable import FinchFormats

@Suite("byte-level BPE trainer")
struct BPETrainerTests {
    static let corpus = String(repeating: "To be, or not to be: that is the question. Whether 'tis nobler in the mind to suffer\n", count: 20)
        + "The slings and arrows of outrageous fortune, or to take arms against a sea of troubles.\n"

    static func trained(_ size: Int = 300) throws -> (Tokenizer, BPETrainer.Result) {
        let trainer = try BPETrainer(vocabularySize: size)
        let result = trainer.train(words: BPETrainer.countWords([corpus]))
        let dir = try Fixtures.scratchDirectory()
        try trainer.tokenizerJSON(result).write(to: URL(fileURLWithPath: "\(dir)/tokenizer.json"))
        return (try Tokenizer(path: "\(dir)/tokenizer.json"), result)
    }

    @Test func fillsTheVocabularyAndRoundTripsAnyText() throws {
        let (tokenizer, result) = try Self.trained()
        #expect(result.tokens.count == 300)
        #expect(result.tokens[0] == "<|endoftext|>")
        #expect(tokenizer.vocabularySize == 300)
        for text in [Self.corpus, "Unseen words: zebra, 東京, 🙂, tabs\tand\nnew lines", "", "<|endoftext|>"] {
            #expect(tokenizer.decode(tokenizer.encode(text, addSpecialTokens: false)) == text)
        }
        // Frequent words become single tokens.
        #expect(tokenizer.encode(" question", addSpecialTokens: false).count == 1)
        #expect(tokenizer.encode("<|endoftext|>", addSpecialTokens: false) == [0])
    }

    @Test func isDeterministic() throws {
        let a = try Self.trained().1, b = try Self.trained().1
        #expect(a.tokens == b.tokens)
        #expect(a.merges.map { $0.0 + " " + $0.1 } == b.merges.map { $0.0 + " " + $0.1 })
    }

    @Test func refusesAVocabularySmallerThanTheByteAlphabet() {
        #expect(throws: FormatError.self) { try BPETrainer(vocabularySize: 200) }
    }
}
