import Foundation
import Testing
import TestSupport
@testable import FinchFormats

@Suite("tokenizer.json against the tokenizers library")
struct TokenizerTests {
    @Test(arguments: Fixtures.families)
    func everyRecordedCaseEncodesAndDecodesExactly(_ family: String) throws {
        let tokenizer = try Tokenizer(path: Fixtures.path(family, "base/tokenizer.json"))
        let reference = try Fixtures.reference(family)
        for c in reference.tokenizer_cases {
            #expect(tokenizer.encode(c.text, addSpecialTokens: false) == c.ids, "\(family): \(c.text.debugDescription)")
            #expect(tokenizer.encode(c.text, addSpecialTokens: true) == c.ids_with_special,
                    "\(family) with specials: \(c.text.debugDescription)")
            #expect(tokenizer.decode(c.ids) == c.decoded, "\(family) decode: \(c.text.debugDescription)")
        }
    }

    @Test(arguments: Fixtures.families)
    func evalTextEncodesToTheRecordedIds(_ family: String) throws {
        let tokenizer = try Tokenizer(path: Fixtures.path(family, "base/tokenizer.json"))
        let text = try String(contentsOfFile: Fixtures.path(family, "eval.txt"), encoding: .utf8)
        let ids = tokenizer.encode(text, addSpecialTokens: false)
        let expected = try Fixtures.reference(family).eval_token_ids
        #expect(ids.count == expected.count)
        #expect(ids == expected)
    }

    @Test func specialTokensInTextAreCutOutFirst() throws {
        let tokenizer = try Tokenizer(path: Fixtures.path("llama-gqa", "base/tokenizer.json"))
        let ids = tokenizer.encode("a</s>b", addSpecialTokens: false)
        #expect(ids.contains(2))
        #expect(tokenizer.decode(ids, skipSpecialTokens: true) == "ab" || tokenizer.decode(ids, skipSpecialTokens: true) == "a b")
    }

    @Test func malformedTokenizerFilesAreRefusedByName() throws {
        let dir = try Fixtures.scratchDirectory()
        func refuse(_ text: String, _ fragment: String, sourceLocation: SourceLocation = #_sourceLocation) {
            let path = "\(dir)/tokenizer.json"
            FileManager.default.createFile(atPath: path, contents: Data(text.utf8))
            do {
                _ = try Tokenizer(path: path)
                Issue.record("accepted: \(text)", sourceLocation: sourceLocation)
            } catch let error as FormatError {
                #expect(error.file == path, sourceLocation: sourceLocation)
                #expect(error.message.contains(fragment), "\(error)", sourceLocation: sourceLocation)
            } catch {
                Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
            }
        }
        refuse("{\"model\": {\"type\": \"BPE\", \"vocab\": {", "not valid JSON")
        refuse("[1, 2]", "expected a JSON object")
        refuse("{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}", "WordPiece")
        // A vocabulary that could encode nothing, and one id given to two tokens (decoding it would pick either).
        refuse("{\"model\": {\"type\": \"BPE\", \"vocab\": {}}}", "the BPE \"vocab\" is empty")
        refuse("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"b\": 1, \"a\": 0, \"c\": 1}}}",
               "vocab entries \"b\" and \"c\" share id 1")
        refuse("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [[\"a\", \"b\"]]}}",
               "missing from the vocabulary")
        refuse("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, \"normalizer\": {\"type\": \"Precompiled\"}}",
               "normalizer \"Precompiled\"")
        refuse("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, \"pre_tokenizer\": {\"type\": \"BertPreTokenizer\"}}", "BertPreTokenizer")
        refuse("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, \"post_processor\": {\"type\": \"BertProcessing\"}}", "BertProcessing")
        refuse("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, \"decoder\": {\"type\": \"WordPiece\"}}",
               "decoder \"WordPiece\"")
        // Ids past 32 bits (a model reads ids as Int32: such an id stopped the process where it was converted).
        refuse("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 4294967296}}}",
               "vocab entry \"a\" must map to an integer id from 0 to 2147483647, got 4294967296")
        refuse("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, \"added_tokens\": [{\"id\": 1000000000000000, \"content\": \"<big>\"}]}",
               "needs an integer \"id\" from 0 to 2147483647")
        refuse("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, \"added_tokens\": [{\"id\": -1, \"content\": \"<neg>\"}]}",
               "needs an integer \"id\" from 0 to 2147483647")
        refuse("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, \"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": [], \"pair\": [], \"special_tokens\": {\"<s>\": {\"id\": \"<s>\", \"ids\": [3000000000], \"tokens\": [\"<s>\"]}}}}",
               "special token \"<s>\" has id 3000000000")
    }
}
