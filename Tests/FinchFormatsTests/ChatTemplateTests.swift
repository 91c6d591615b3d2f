import Foundation
import Testing
import TestSupport
@testable import FinchFormats

/// Chat templates of six model families (Tests/Fixtures/chat-templates, as published) rendered byte for byte as
/// transformers' `apply_chat_template` renders them (expected.json, made by make_expected.py there).
@Suite("chat templates")
struct ChatTemplateTests {
    struct Expected: Decodable {
        struct Case: Decodable { let conversation: String; let add_generation_prompt: Bool; let text: String?; let error: String? }
        struct Template: Decodable { let bos_token: String; let eos_token: String; let cases: [Case] }
        let conversations: [String: [[String: String]]]
        let templates: [String: Template]
    }

    static let families = ["smollm2", "qwen2.5", "llama-3.2", "mistral-nemo", "phi-3.5", "gemma-2"]

    static func expected() throws -> Expected {
        try JSONDecoder().decode(Expected.self, from: Data(contentsOf: URL(fileURLWithPath: Fixtures.path("chat-templates", "expected.json"))))
    }

    @Test(arguments: families)
    func rendersAsTransformersDoes(_ family: String) throws {
        let expected = try Self.expected()
        let reference = try #require(expected.templates[family])
        let template = try ChatTemplate(String(contentsOfFile: Fixtures.path("chat-templates", family + ".jinja"), encoding: .utf8))
        #expect(reference.cases.count == 6)
        for c in reference.cases {
            let messages = try #require(expected.conversations[c.conversation]).map {
                ChatTemplate.Message(role: $0["role"]!, content: $0["content"]!)
            }
            let what = "\(family) \(c.conversation) add_generation_prompt=\(c.add_generation_prompt)"
            if let text = c.text {
                let ours = try template.render(messages, addGenerationPrompt: c.add_generation_prompt, bosToken: reference.bos_token,
                                               eosToken: reference.eos_token, variables: ["date_string": .string("06 Dec 2026")])
                #expect(ours == text, "\(what):\n\(ours.debugDescription)\n\(text.debugDescription)")
            } else {
                let error = try #require(throws: ChatTemplateError.self, "\(what)") {
                    try template.render(messages, addGenerationPrompt: c.add_generation_prompt, bosToken: reference.bos_token,
                                        eosToken: reference.eos_token)
                }
                #expect(error.message == "the chat template refused the messages: \(c.error ?? "")", "\(what)")
            }
        }
    }

    @Test func whitespaceControlFollowsJinja() throws {
        // trim_blocks drops the newline after a statement; lstrip_blocks the indentation before one; '-' all of it.
        let cases: [(String, String)] = [
            ("{% if true %}\nA\n{% endif %}\nB", "A\nB"),
            ("  {% if true %}A{% endif %}", "A"),
            ("x  {% if true %}A{% endif %}", "x  A"),
            ("a {{- ' b ' -}} c", "a b c"),
            ("{% for i in range(3) %}{{ i }}{% if not loop.last %},{% endif %}{% endfor %}", "0,1,2"),
            ("{% set ns = namespace(n=0) %}{% for x in [1, 2, 3] %}{% set ns.n = ns.n + x %}{% endfor %}{{ ns.n }}", "6"),
            ("{% set n = 1 %}{% for x in [1] %}{% set n = 5 %}{% endfor %}{{ n }}", "1"),
            ("{{ 'abc'[1:] }}{{ [1, 2, 3][-1] }}{{ 7 // 2 }}{{ -7 % 3 }}{{ 1.0 }}{{ none }}{{ true }}", "bc3321.0NoneTrue"),
            ("{{ {'b': 1, 'a': [1, 'x']} | tojson }}", "{\"b\": 1, \"a\": [1, \"x\"]}"),
            ("{{ ' x '.strip() + '|' + ('a' ~ 1) }}{{ 'y' if false else 'n' }}{{ x is defined }}", "x|a1nFalse"),
            ("{% for k, v in {'a': 1}.items() if v > 0 %}{{ k }}={{ v }}{% endfor %}", "a=1"),
            ("{# comment #}\n{{ [3, 1] | length }}{{ 'A' | lower }}{{ ['a', 'b'] | join('-') }}", "2aa-b"),
        ]
        for (source, expected) in cases {
            #expect(try ChatTemplate(source).render([], addGenerationPrompt: false) == expected, "\(source)")
        }
    }

    /// A template from a model file is outside input: nesting, text and loops are bounded, and integer edge cases
    /// give values, not traps.
    @Test func runawayTemplatesStopWithAnError() throws {
        let deep = String(repeating: "(", count: 200) + "1" + String(repeating: ")", count: 200)
        #expect(throws: ChatTemplateError.self) { try ChatTemplate("{{ \(deep) }}") }
        let blocks = String(repeating: "{% if true %}", count: 100) + String(repeating: "{% endif %}", count: 100)
        #expect(throws: ChatTemplateError.self) { try ChatTemplate(blocks) }
        for source in ["{{ 'ab' * 100000000 }}", "{% for i in range(3000) %}{% for j in range(3000) %}{% endfor %}{% endfor %}",
                       "{{ range(100000000) | length }}", "{% for i in range(500000) %}{{ 'abcdefghijklmnopqrstuvwxyz' }}{% endfor %}"] {
            #expect(throws: ChatTemplateError.self, "\(source)") { try ChatTemplate(source).render([], addGenerationPrompt: false) }
        }
        let edges = "{{ (-9223372036854775807 - 1) // -1 }} {{ (-9223372036854775807 - 1) % -1 }} {{ -(-9223372036854775807 - 1) }} {{ 2 ** 1000 }}"
        #expect(try ChatTemplate(edges).render([], addGenerationPrompt: false).hasPrefix("-9223372036854775808 0 -9223372036854775808 "))
    }

    @Test func whatTheSubsetLacksIsRefusedByName() throws {
        let refusals: [(String, String)] = [
            ("{% macro f() %}x{% endmacro %}", "line 1: {% macro %} is not implemented by Finch's template subset"),
            ("{{ x | wordwrap }}", "line 1: the filter 'wordwrap' is not implemented by Finch's template subset in \"x | wordwrap\""),
            ("{% if x %}\nno end", "line 1: {% if %} is never closed with {% endif %}"),
            ("{{ 'open }}", "line 1: a tag opened with {{ is never closed"),
            ("{{ x +* 1 }}", "line 1: unexpected '*' in \"x +* 1\""),
            ("x {{ y ", "line 1: a tag opened with {{ is never closed"),
            ("{% set x %}y{% endset %}", "a block {% set %} … {% endset %} is not implemented"),
            ("{% endfor %}", "line 1: {% endfor %} has no block to end"),
        ]
        for (source, message) in refusals {
            let error = try #require(throws: ChatTemplateError.self, "\(source)") { try ChatTemplate(source) }
            #expect(error.message.hasPrefix(message) || error.message.contains(message), "\(source): \(error.message)")
        }
    }
}

/// Which tokens of a rendered conversation train: exactly each assistant reply and the end-of-turn token that
/// closes it, for every family's template, over a tokenizer that knows the family's special tokens.
@Suite("chat loss masks")
struct ChatLossMaskTests {
    /// The fixture GPT-2 tokenizer with the family's special tokens added.
    static func tokenizer(_ specials: [String]) throws -> Tokenizer {
        var json = try JSONValue.load(path: Fixtures.path("gpt2", "base/tokenizer.json"))
        guard case .object(var object) = json, case .array(var added) = object["added_tokens"] ?? .array([]) else {
            throw ChatTemplateError("fixture tokenizer")
        }
        for (i, s) in specials.enumerated() {
            added.append(.object(["id": .int(640 + i), "content": .string(s), "special": .bool(true)]))
        }
        object["added_tokens"] = .array(added)
        json = .object(object)
        return try Tokenizer(json: json, path: "test-tokenizer.json")
    }

    static let families: [(name: String, specials: [String], endOfTurn: String, conversation: String)] = [
        ("smollm2", ["<|im_start|>", "<|im_end|>"], "<|im_end|>", "system-multi-turn"),
        ("qwen2.5", ["<|im_start|>", "<|im_end|>"], "<|im_end|>", "system-multi-turn"),
        ("llama-3.2", ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], "<|eot_id|>", "system-multi-turn"),
        ("phi-3.5", ["<|user|>", "<|assistant|>", "<|system|>", "<|end|>", "<s>"], "<|end|>", "system-multi-turn"),
        ("gemma-2", ["<bos>", "<start_of_turn>", "<end_of_turn>"], "<end_of_turn>", "multi-turn"),
        ("mistral-nemo", ["<s>", "</s>", "[INST]", "[/INST]"], "</s>", "multi-turn"),
    ]

    @Test(arguments: families.map(\.name))
    func onlyAssistantRepliesAndTheirEndTokensTrain(_ family: String) throws {
        let (_, specials, endOfTurn, conversation) = Self.families.first { $0.name == family }!
        let expected = try ChatTemplateTests.expected()
        let reference = try #require(expected.templates[family])
        let template = try ChatTemplate(String(contentsOfFile: Fixtures.path("chat-templates", family + ".jinja"), encoding: .utf8))
        let format = ChatFormat(template: template, bosToken: reference.bos_token, eosToken: reference.eos_token, origin: family)
        let tokenizer = try Self.tokenizer(specials)
        let messages = try #require(expected.conversations[conversation]).map {
            ChatTemplate.Message(role: $0["role"]!, content: $0["content"]!)
        }
        // LLaMA-3's and Gemma's templates trim each message; the others write it as it is.
        let trims = family == "llama-3.2" || family == "gemma-2"
        let replies = messages.filter { $0.role == "assistant" }.map { (trims ? $0.content.trimmingCharacters(in: .whitespaces) : $0.content) + endOfTurn }
        for loss in ChatFormat.Loss.allCases {
            let (ids, targets) = try format.encode(messages, tokenizer: tokenizer, loss: loss)
            #expect(ids == tokenizer.encode(try format.render(messages, addGenerationPrompt: false), addSpecialTokens: false))
            // Runs of trained tokens, decoded.
            var runs: [[Int]] = [], previous = false
            for (id, target) in zip(ids, targets) {
                if target { if previous { runs[runs.count - 1].append(id) } else { runs.append([id]) } }
                previous = target
            }
            let trained = runs.map { tokenizer.decode($0) }
            #expect(trained == (loss == .assistant ? replies : Array(replies.suffix(1))), "\(family) \(loss)")
        }
    }

    @Test func aConversationWithoutAReplyOrWithChangingTurnsIsRefused() throws {
        let format = ChatFormat(template: try ChatTemplate("{% for m in messages %}{{ m.content }}{% if loop.last %}!{% endif %}{% endfor %}"),
                                bosToken: "", eosToken: "", origin: "t.jinja")
        let tokenizer = try ChatLossMaskTests.tokenizer([])
        let user = ChatTemplate.Message(role: "user", content: "hi"), reply = ChatTemplate.Message(role: "assistant", content: "yo")
        let none = try #require(throws: ChatTemplateError.self) { try format.encode([user], tokenizer: tokenizer, loss: .assistant) }
        #expect(none.message == "the conversation has no assistant turn, so nothing in it would train")
        let changing = try #require(throws: ChatTemplateError.self) {
            try format.encode([user, reply, user, reply], tokenizer: tokenizer, loss: .assistant)
        }
        #expect(changing.message.hasPrefix("t.jinja: the template writes the conversation before assistant turn 2 differently"))
        let plain = ChatFormat(template: try ChatTemplate("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"),
                               bosToken: "", eosToken: "", origin: "p.jinja")
        let empty = try #require(throws: ChatTemplateError.self) {
            try plain.encode([user, ChatTemplate.Message(role: "assistant", content: "  ")], tokenizer: tokenizer, loss: .assistant)
        }
        #expect(empty.message == "assistant turn 2 is empty: it has no text to train on")
        let headerless = try #require(throws: ChatTemplateError.self) { try plain.encode([user, reply], tokenizer: tokenizer, loss: .assistant) }
        #expect(headerless.message.hasPrefix("p.jinja: the text the template writes for assistant turn 2 does not begin with its message"))
    }
}
