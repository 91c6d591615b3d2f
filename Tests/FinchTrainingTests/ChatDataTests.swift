import Foundation
import Testing
import FinchFormats
import TestSupport
import FinchModels
import FinchNN
import FinchTensor
@testable import FinchTraining

/// Chat records (`messages`) read with the model's chat template from its folder: the loss falls on the replies.
@Suite("chat data")
struct ChatDataTests {
    /// The fixture GPT-2 folder with a ChatML template in tokenizer_config.json (its <|endoftext|> ends each turn).
    static func folder() throws -> String {
        let dir = try Fixtures.scratchDirectory()
        for file in ["config.json", "tokenizer.json", "model.safetensors"] {
            try FileManager.default.copyItem(atPath: Fixtures.path("gpt2", "base/\(file)"), toPath: "\(dir)/\(file)")
        }
        let template = "{% for m in messages %}{{ m.role + ': ' + m.content + eos_token + '\\n' }}{% endfor %}"
            + "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
        let config: [String: Any] = ["chat_template": template, "eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>"]
        try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: "\(dir)/tokenizer_config.json"))
        return dir
    }

    @Test func repliesAndTheirEndTokensAreTheOnlyTargets() throws {
        let dir = try Self.folder()
        let base = try PretrainedModel.load(dir, requireTokenizer: true)
        let tokenizer = try base.requireTokenizer()
        let path = "\(dir)/chat.jsonl"
        let record = #"{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Farewell"}]}"#
        try (record + "\n\n" + record + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        // This template's generation prompt ends in a space, which the reply's first token ("ĠHello") holds: that
        // token is the reply's, as in transformers' assistant masks.
        for (loss, replies) in [(ChatFormat.Loss.assistant, [" Hello<|endoftext|>", " Farewell<|endoftext|>"]),
                                (.lastAssistant, [" Farewell<|endoftext|>"])] {
            let (records, lines) = try TrainingData.tokenize(
                try TrainingData.readText(path), format: try TrainingData.format(of: path, text: TrainingData.readText(path)),
                path: path, tokenizer: tokenizer, endOfText: 0, chat: .init(format: { try base.chatFormat() }, loss: loss))
            #expect(lines == [1, 3] && records.count == 2)
            let r = records[0]
            var runs: [[Int]] = [], previous = false
            for (id, target) in zip(r.tokens, r.targetMask) {
                if target { if previous { runs[runs.count - 1].append(Int(id)) } else { runs.append([Int(id)]) } }
                previous = target
            }
            #expect(runs.map { tokenizer.decode($0) } == replies)
            #expect(tokenizer.decode(r.tokens.map(Int.init)).hasPrefix("system: Be brief.<|endoftext|>\nuser: Hi there"))
        }
    }

    @Test func badChatRecordsAreNamedByLine() throws {
        let dir = try Self.folder()
        let base = try PretrainedModel.load(dir, requireTokenizer: true)
        let chat = TrainingData.Chat(format: { try base.chatFormat() }, loss: .assistant)
        let cases: [(String, String)] = [
            (#"{"messages": []}"#, ":1: expected \"messages\": a non-empty list of {\"role\", \"content\"} objects"),
            (#"{"messages": [{"role": "user"}]}"#, ":1: message 1 needs a string \"role\" and a string \"content\""),
            (#"{"messages": [{"role": "user", "content": "no reply"}]}"#, ":1: the conversation has no assistant turn, so nothing in it would train"),
        ]
        for (line, message) in cases {
            let path = "\(dir)/bad.jsonl"
            try line.write(toFile: path, atomically: true, encoding: .utf8)
            let error = try #require(throws: RecipeError.self) {
                try TrainingData.load(path: path, format: .auto, tokenizer: try base.requireTokenizer(), sequenceLength: 64,
                                      packing: true, endOfText: 0, chat: chat)
            }
            #expect("\(error)" == path + message, "\(error)")
        }
        // A model without a chat template says so.
        try FileManager.default.removeItem(atPath: "\(dir)/tokenizer_config.json")
        let plain = try PretrainedModel.load(dir, requireTokenizer: true)
        let path = "\(dir)/ok.jsonl"
        try #"{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}"#.write(toFile: path, atomically: true, encoding: .utf8)
        let error = try #require(throws: RecipeError.self) {
            try TrainingData.load(path: path, format: .auto, tokenizer: try plain.requireTokenizer(), sequenceLength: 64, packing: true,
                                  endOfText: 0, chat: .init(format: { try plain.chatFormat() }, loss: .assistant))
        }
        #expect("\(error)".contains("holds chat records (\"messages\"), but the model has no chat template"))
    }
}

/// `finch eval` on a chat file: each conversation scored on its last reply.
@Suite("chat evaluation")
struct ChatEvaluationTests {
    @Test func theLastReplyIsScoredAndGenerated() throws {
        let dir = try ChatDataTests.folder()
        let base = try PretrainedModel.load(dir, requireTokenizer: true)
        let path = "\(dir)/eval.jsonl"
        let records = [
            #"{"messages": [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Farewell"}]}"#,
            #"{"messages": [{"role": "user", "content": "Two"}, {"role": "assistant", "content": "2"}]}"#,
        ]
        try records.joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
        let result = try CompletionEvaluation.run(model: base.model, tokenizer: try base.requireTokenizer(), path: path, prefix: nil,
                                                  maxNewTokens: 4, chat: try #require(try base.chatFormat()))
        #expect(result.examples == 2 && result.loss.isFinite && result.loss > 0)
        #expect(result.predictions.map(\.expected) == ["Farewell", "2"] && result.predictions.map(\.prompt) == ["Bye", "Two"])
        // The fixture model is untrained: whatever it says, it is not the reply.
        #expect(result.exactMatch == 0)
    }
}

/// `finch eval` on a prompt/completion file runs examples of one length together; what it reports is what scoring
/// and decoding each example alone gives.
@Suite("completion evaluation")
struct CompletionEvaluationTests {
    @Test func batchesScoreAndGenerateAsEachExampleAlone() throws {
        let dir = try ChatDataTests.folder()
        let base = try PretrainedModel.load(dir, requireTokenizer: true)
        let tokenizer = try base.requireTokenizer()
        let path = "\(dir)/eval.jsonl"
        // Prompts of equal and of different lengths, so batches of several rows and of one are both made.
        let pairs = [("Hello there", " world"), ("Hello again", " friend of mine"), ("A", " b c"), ("Hello there", " you"),
                     ("The quick brown fox", " jumps")]
        let lines = try pairs.map { p, c in
            String(decoding: try JSONSerialization.data(withJSONObject: ["prompt": p, "completion": c]), as: UTF8.self)
        }
        try lines.joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
        let result = try CompletionEvaluation.run(model: base.model, tokenizer: tokenizer, path: path, prefix: nil,
                                                  maxNewTokens: 5)
        let eos = base.model.config.eosTokenIds.first ?? 0
        var total = 0.0, count = 0
        var expected: [String] = []
        try GradientMode.withoutGradients {
            for (p, c) in pairs {
                let promptIds = tokenizer.encode(p, addSpecialTokens: true)
                let completionIds = tokenizer.encode(c, addSpecialTokens: false) + [eos]
                let tokens = (promptIds + completionIds).map(Int32.init)
                let mask = [Bool](repeating: false, count: promptIds.count) + [Bool](repeating: true, count: completionIds.count)
                let logits = try base.model.logits(tokens, batch: 1, length: tokens.count, cache: nil, prefix: nil)
                total += Double(try Losses.causalLanguageModel(logits: logits, tokens: tokens, mask: mask).item()) * Double(completionIds.count)
                count += completionIds.count
                let stops = Set(base.model.config.eosTokenIds)
                let ids = try Generation.generate(model: base.model, prompt: promptIds,
                                                  options: GenerationOptions(maxTokens: 5, stopTokens: stops))
                expected.append(tokenizer.decode(ids.filter { !stops.contains($0) }, skipSpecialTokens: true))
            }
        }
        #expect(abs(result.loss - total / Double(count)) <= 1e-5 * max(1, abs(result.loss)))
        #expect(result.predictions.map(\.generated) == expected)
        #expect(result.predictions.map(\.prompt) == pairs.map(\.0))
    }
}
