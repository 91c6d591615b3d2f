import Foundation

/// A model's way of writing conversations: its chat template and the special tokens the template prints, with
/// what turns a conversation into token ids and marks the assistant's tokens for the loss.
public struct ChatFormat: Sendable {
    public let template: ChatTemplate
    public let bosToken: String
    public let eosToken: String
    /// Where the template came from, for messages.
    public let origin: String

    /// Which assistant turns train.
    public enum Loss: String, Sendable, CaseIterable {
        /// Every assistant turn.
        case assistant
        /// The last assistant turn only (the ones before it are context).
        case lastAssistant = "last_assistant"
    }

    public init(template: ChatTemplate, bosToken: String, eosToken: String, origin: String) {
        self.template = template
        self.bosToken = bosToken
        self.eosToken = eosToken
        self.origin = origin
    }

    public func render(_ messages: [ChatTemplate.Message], addGenerationPrompt: Bool) throws -> String {
        do {
            return try template.render(messages, addGenerationPrompt: addGenerationPrompt, bosToken: bosToken, eosToken: eosToken)
        } catch let error as ChatTemplateError {
            throw ChatTemplateError("\(origin): \(error.message)")
        }
    }

    /// The ids of the conversation up to the assistant's next turn (the template's generation prompt), to
    /// generate a reply from.
    public func prompt(_ messages: [ChatTemplate.Message], tokenizer: Tokenizer) throws -> [Int] {
        tokenizer.encode(try render(messages, addGenerationPrompt: true), addSpecialTokens: false)
    }

    /// The conversation's ids, as transformers' `apply_chat_template(tokenize=True)` gives them, and which are the
    /// assistant's: the tokens holding the text each assistant turn adds after the template's generation prompt,
    /// through the end-of-turn token that closes it (whitespace after that is the template's, not the reply's).
    ///
    /// Found by rendering: the conversation up to turn i with the generation prompt ends where the reply starts;
    /// with turn i, the text then agrees with the whole conversation until the reply (and its end token) is over.
    /// A template that writes earlier turns differently once later ones follow is refused, as is a tokenizer that
    /// would cut a token across the reply's edges.
    public func encode(_ messages: [ChatTemplate.Message], tokenizer: Tokenizer, loss: Loss) throws -> (ids: [Int], targets: [Bool]) {
        let full = Array(try render(messages, addGenerationPrompt: false).unicodeScalars)
        var assistantTurns = messages.indices.filter { messages[$0].role == "assistant" }
        if loss == .lastAssistant { assistantTurns = assistantTurns.suffix(1) }
        guard !assistantTurns.isEmpty else {
            throw ChatTemplateError("the conversation has no assistant turn, so nothing in it would train")
        }
        var spans: [Range<Int>] = []
        for i in assistantTurns {
            let before = Array(try render(Array(messages[..<i]), addGenerationPrompt: true).unicodeScalars)
            let with = Array(try render(Array(messages[...i]), addGenerationPrompt: false).unicodeScalars)
            var end = 0
            while end < min(with.count, full.count), with[end] == full[end] { end += 1 }
            guard full.starts(with: before), with.starts(with: before), end > before.count else {
                throw ChatTemplateError("\(origin): the template writes the conversation before assistant turn \(i + 1) differently "
                    + "once that turn follows, so its reply cannot be located; train on the last turn only (data.loss_on: last_assistant)")
            }
            // The reply ends with the first special token after it (its end of turn): what the template writes after
            // that (a newline, the next turn's header, an end of text) is not the reply's.
            let reply = String(String.UnicodeScalarView(full[before.count..<end]))
            // It must begin with the message's text: a template whose generation prompt stops short of where the reply
            // starts (one that ignores add_generation_prompt) would otherwise train the assistant's header too.
            let content = messages[i].content.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !content.isEmpty else { throw ChatTemplateError("assistant turn \(i + 1) is empty: it has no text to train on") }
            guard reply.trimmingCharacters(in: .whitespacesAndNewlines).hasPrefix(content) else {
                throw ChatTemplateError("\(origin): the text the template writes for assistant turn \(i + 1) does not begin with its "
                    + "message (does the template write the assistant's header when add_generation_prompt is true?)")
            }
            let segments = tokenizer.splitOnAddedTokens(reply)
            if let close = segments.firstIndex(where: { if case .added = $0 { return true } else { return false } }) {
                let kept = segments[...close].reduce(0) { total, segment in
                    switch segment {
                    case .added(let t): return total + t.content.unicodeScalars.count
                    case .text(let t): return total + t.unicodeScalars.count
                    }
                }
                end = min(end, before.count + kept)
            }
            while end > before.count, full[end - 1].properties.isWhitespace { end -= 1 }
            if let last = spans.last, before.count < last.upperBound {
                throw ChatTemplateError("\(origin): assistant turns overlap in the rendered text")
            }
            spans.append(before.count..<end)
        }
        // Spans in UTF-8 bytes, as the tokenizer's offsets count.
        func byteOffset(_ scalars: Int) -> Int { String(String.UnicodeScalarView(full[..<scalars])).utf8.count }
        let byteSpans = spans.map { byteOffset($0.lowerBound)..<byteOffset($0.upperBound) }
        guard let (ids, offsets) = tokenizer.encodeWithOffsets(String(String.UnicodeScalarView(full))) else {
            throw ChatTemplateError("\(origin): the tokenizer's pieces do not spell the text back, so which tokens are the reply's is not clear")
        }
        // A token trains when any of its bytes is the reply's (as transformers' assistant masks count characters): the
        // one that joins the generation prompt's last space to the reply's first word is the reply's first token.
        let total = String(String.UnicodeScalarView(full)).utf8.count
        let targets = offsets.indices.map { i -> Bool in
            let token = offsets[i]..<max(offsets[i] + 1, i + 1 < offsets.count ? offsets[i + 1] : total)
            return byteSpans.contains { $0.overlaps(token) }
        }
        return (ids, targets)
    }
}
