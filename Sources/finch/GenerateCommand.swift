import ArgumentParser
import Foundation
import FinchAdapters
import FinchFormats
import FinchModels

struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Continue a prompt: greedy by default, or sampled with temperature, top-k and top-p.")

    @OptionGroup var source: ModelSource

    @Option(parsing: .unconditional, help: "The text to continue.")
    var prompt: String

    @Option(parsing: .unconditional, help: "At most this many new tokens.")
    var maxTokens: Int = 64

    @Option(parsing: .unconditional, help: "0 is greedy; above 0 samples from softmax(logits / T).")
    var temperature: Float = 0

    @Option(parsing: .unconditional, help: "Sample among the K most likely tokens only.")
    var topK: Int?

    @Option(parsing: .unconditional, help: "Sample among the most likely tokens whose probability reaches P.")
    var topP: Float?

    @Option(parsing: .unconditional, help: "Seed for sampling.")
    var seed: Int = 0

    @Flag(help: "Recompute the whole sequence at each step instead of using the key/value cache.")
    var noCache = false

    @Flag(help: "Over a base kept in Q4_0, Q4_1 or Q8_0 blocks, keep every product in float32 instead of multiplying the blocks by 8-bit activations when decoding (llama.cpp's way, the default: faster, logits differ by the activations' rounding).")
    var floatActivations = false

    @Flag(help: "Print one JSON object on stdout (prompt ids, generated ids, text, seconds) instead of streaming.")
    var json = false

    @Flag(help: "Send --prompt as a user message through the model's chat template and print the assistant's reply (it stops at the end of its turn).")
    var chat = false

    @Option(parsing: .unconditional, help: "With --chat: a system message before the user's.")
    var system: String?

    func validate() throws {
        guard maxTokens >= 1 else { throw OptionError("--max-tokens must be at least 1, got \(maxTokens)") }
        guard temperature >= 0, temperature.isFinite else { throw OptionError("--temperature must be 0 or more, got \(temperature)") }
        if let topK, topK < 1 { throw OptionError("--top-k must be at least 1, got \(topK)") }
        if let topP, !(topP > 0 && topP <= 1) { throw OptionError("--top-p must be in (0, 1], got \(topP)") }
        guard seed >= 0 else { throw OptionError("--seed must be 0 or more, got \(seed)") }
    }

    func run() throws {
        let (base, tokenizer, applied) = try source.load()
        var promptIds = tokenizer.encode(prompt, addSpecialTokens: true)
        var stopTokens = Set(base.config.eosTokenIds)
        if chat {
            guard let format = try base.chatFormat() else {
                throw OptionError("--chat needs the model's chat template; \(source.model) has none (tokenizer.chat_template in a GGUF file, chat_template in tokenizer_config.json)")
            }
            let messages = (system.map { [ChatTemplate.Message(role: "system", content: $0)] } ?? [])
                + [ChatTemplate.Message(role: "user", content: prompt)]
            promptIds = try format.prompt(messages, tokenizer: tokenizer)
            if let end = tokenizer.id(of: format.eosToken) { stopTokens.insert(end) }
        } else if system != nil {
            throw OptionError("--system is a chat message: give --chat too")
        }
        let echo = chat ? "" : prompt
        let options = GenerationOptions(maxTokens: maxTokens, temperature: temperature, topK: topK, topP: topP,
                                        seed: UInt64(seed), stopTokens: stopTokens, useCache: !noCache,
                                        quantizedActivations: !floatActivations)
        // Stream: print what the decoded text gained, holding back a trailing incomplete character.
        var produced: [Int] = []
        var printed = ""
        let start = Date()
        if json {
            let ids = try Generation.generate(model: base.model, prompt: promptIds, options: options,
                                              prefix: applied?.attentionPrefix) { _ in }
            try Output.json(["prompt_ids": promptIds, "ids": ids, "text": tokenizer.decode(ids, skipSpecialTokens: true),
                             "seconds": Date().timeIntervalSince(start)])
            return
        }
        // The prompt is printed with the first token, so a request that cannot run prints only its error.
        _ = try Generation.generate(model: base.model, prompt: promptIds, options: options,
                                    prefix: applied?.attentionPrefix) { token in
            if produced.isEmpty { print(echo, terminator: "") }
            produced.append(token)
            let text = tokenizer.decode(produced, skipSpecialTokens: true)
            guard !text.hasSuffix("\u{FFFD}"), text.hasPrefix(printed) else { return }
            print(text.dropFirst(printed.count), terminator: "")
            fflush(nil)
            printed = text
        }
        let final = tokenizer.decode(produced, skipSpecialTokens: true)
        if final.hasPrefix(printed) { print(final.dropFirst(printed.count), terminator: "") }
        print("")
        fflush(nil)  // the text ends its line before the timing goes to stderr
        let seconds = Date().timeIntervalSince(start)
        Output.standardError("\(produced.count) tokens in \(Output.fixed(seconds, 2)) s, \(Output.fixed(Double(produced.count) / max(seconds, 1e-9), 1)) tokens/s")
        // A model whose vocabulary is larger than its tokenizer's can choose ids no token stands for; decoding
        // leaves them out (as the tokenizers library does), so say so rather than print less without a word.
        let untokenized = produced.filter { tokenizer.token(of: $0) == nil }
        if let first = untokenized.first {
            Output.standardError("\(untokenized.count) of the generated ids (the first \(first)) have no token in \(tokenizer.path) "
                + "(\(tokenizer.vocabularySize) tokens; the model has \(base.config.vocabularySize)) and are left out of the text")
        }
    }
}
