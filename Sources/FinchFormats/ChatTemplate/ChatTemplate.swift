import Foundation

/// A model's chat template (`tokenizer.chat_template` in a GGUF file, `chat_template` in tokenizer_config.json),
/// rendered as transformers' `apply_chat_template` renders it: Jinja with `trim_blocks` and `lstrip_blocks`, the
/// messages, `add_generation_prompt`, the tokenizer's `bos_token` and `eos_token`, `raise_exception` and
/// `strftime_now`. Finch implements the part of Jinja the published chat templates use; a template that needs more
/// is refused when it is read, naming what it uses.
public struct ChatTemplate: Sendable {
    public let source: String
    private let nodes: [JinjaNodeBox]

    /// One message: its role, its text, and any other fields a template may read (`tool_calls`, `name`, …).
    public struct Message: Sendable, Equatable {
        public var role: String
        public var content: String
        public var extra: [String: JSONValue]

        public init(role: String, content: String, extra: [String: JSONValue] = [:]) {
            self.role = role
            self.content = content
            self.extra = extra
        }
    }

    public init(_ source: String) throws {
        self.source = source
        nodes = try JinjaParser.parse(source).map(JinjaNodeBox.init)
    }

    /// The text for `messages`. `variables` adds to (or replaces) what the template sees, for example a fixed
    /// `date_string` for LLaMA-3's templates.
    public func render(_ messages: [Message], addGenerationPrompt: Bool, bosToken: String = "", eosToken: String = "",
                       variables: [String: JSONValue] = [:]) throws -> String {
        var globals: [String: JinjaValue] = [
            "messages": .array(messages.map { m in
                var object = JinjaObject(keys: ["role", "content"], values: ["role": .string(m.role), "content": .string(m.content)])
                for key in m.extra.keys.sorted() { object.set(key, JinjaValue(json: m.extra[key]!)) }
                return .object(object)
            }),
            "add_generation_prompt": .bool(addGenerationPrompt),
            "bos_token": .string(bosToken), "eos_token": .string(eosToken),
            "raise_exception": .function(JinjaFunction(name: "raise_exception") { args, _ in
                throw ChatTemplateError("the chat template refused the messages: \(try args.first?.printed() ?? "")")
            }),
            "strftime_now": .function(JinjaFunction(name: "strftime_now") { args, _ in
                guard case .string(let format)? = args.first else { throw ChatTemplateError("strftime_now needs a format") }
                var now = time(nil)
                var parts = tm()
                localtime_r(&now, &parts)
                var buffer = [Int8](repeating: 0, count: 256)
                let n = strftime(&buffer, buffer.count, format, &parts)
                return .string(String(decoding: buffer.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self))
            }),
            "namespace": .function(JinjaFunction(name: "namespace") { _, kwargs in .namespace(JinjaNamespace(kwargs)) }),
            "range": .function(JinjaFunction(name: "range") { args, _ in
                let bounds = args.compactMap { v -> Int? in if case .int(let i) = v { return i } else { return nil } }
                guard bounds.count == args.count, (1...3).contains(bounds.count) else { throw ChatTemplateError("range needs 1 to 3 integers") }
                let (lo, hi, step) = bounds.count == 1 ? (0, bounds[0], 1) : (bounds[0], bounds[1], bounds.count == 3 ? bounds[2] : 1)
                guard step != 0 else { throw ChatTemplateError("range step cannot be zero") }
                let count = max(0, ((Double(hi) - Double(lo)) / Double(step)).rounded(.up))
                guard count <= Double(1 << 20) else { throw ChatTemplateError("range of \(Int(min(count, 1e18))) numbers is more than a chat template may use") }
                return .array(Array(stride(from: lo, to: hi, by: step)).map(JinjaValue.int))
            }),
        ]
        for (key, value) in variables { globals[key] = JinjaValue(json: value) }
        return try JinjaRenderer.render(nodes.map(\.node), globals: globals)
    }
}

/// Holds a parsed node so `ChatTemplate` can be `Sendable` (nodes are immutable once parsed).
struct JinjaNodeBox: @unchecked Sendable {
    let node: JinjaNode
}
