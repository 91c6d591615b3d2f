import Foundation
import FinchAdapters
import FinchFormats
import FinchModels
import FinchTensor
import FinchTraining

/// One parser of outside input, driven with arbitrary bytes. A target may throw (bad input must be refused with
/// an error); a trap, a crash or a broken invariant is what the fuzzer looks for.
enum FuzzTarget: String, CaseIterable {
    /// A safetensors file: header, offsets, and every loadable tensor converted to float32.
    case safetensors
    /// `model.safetensors.index.json` of a sharded checkpoint, beside one valid shard.
    case safetensorsIndex = "safetensors-index"
    /// `config.json`: parsed, sized against memory, and built into a model when small.
    case config
    /// `tokenizer.json` (the bytes before the first NUL), then encoding and decoding the bytes after it.
    case tokenizer
    /// Arbitrary text through the fixtures' two tokenizers (byte-level BPE, llama and GPT-2 style).
    case encode
    /// `adapter_config.json` of a PEFT folder (beside the fixture's LoRA weights), applied to the fixture model.
    case adapterConfig = "adapter-config"
    /// A recipe (the bytes before the first NUL) with `key.path=value` overrides (the lines after it); a recipe
    /// that loads must load again from its own resolved YAML, to the same recipe.
    case recipe
    /// A checkpoint's `state.json`; a state that is accepted must drive the batch loader and its generators.
    case state
    /// Training data lines: the first byte picks the extension, packing and window length, the rest is the file.
    case data
    /// A GGUF file: header, metadata, tensor table, every tensor of a readable type turned into float32, the model
    /// configuration its metadata gives, and its tokenizer, which then encodes and decodes a text.
    case gguf
    /// A chat template (GGUF's tokenizer.chat_template, tokenizer_config.json's chat_template): parsed, then
    /// rendered on a short conversation with and without the generation prompt.
    case chatTemplate = "chat-template"

    func run(_ bytes: Data, in scratch: Scratch) {
        switch self {
        case .safetensors: Self.safetensors(bytes, scratch)
        case .safetensorsIndex: Self.safetensorsIndex(bytes, scratch)
        case .config: Self.config(bytes)
        case .tokenizer: Self.tokenizer(bytes)
        case .encode: Self.encode(bytes, scratch)
        case .adapterConfig: Self.adapterConfig(bytes, scratch)
        case .recipe: Self.recipe(bytes)
        case .state: Self.state(bytes, scratch)
        case .data: Self.data(bytes, scratch)
        case .gguf: Self.gguf(bytes, scratch)
        case .chatTemplate: Self.chatTemplate(bytes)
        }
    }

    /// The bytes before the first NUL and those after it.
    static func split(_ bytes: Data) -> (Data, Data) {
        guard let nul = bytes.firstIndex(of: 0) else { return (bytes, Data()) }
        return (bytes[bytes.startIndex..<nul], bytes[(nul + 1)...])
    }

    static func safetensors(_ bytes: Data, _ scratch: Scratch) {
        let path = scratch.write(bytes, to: "t.safetensors")
        guard let file = try? SafetensorsFile(path: path) else { return }
        for entry in file.entries where entry.dtype.isLoadable {
            var values = [Float](repeating: 0, count: entry.elementCount)
            _ = values.withUnsafeMutableBufferPointer { try? file.readFiniteFloats(entry.name, into: $0) }
        }
    }

    static func gguf(_ bytes: Data, _ scratch: Scratch) {
        let path = scratch.write(bytes, to: "t.gguf")
        guard let file = try? GGUFFile(path: path) else { return }
        // Every tensor lies inside the file, so its values are at most a few times the file's bytes.
        for tensor in file.tensors where GGUFDequantization.supported.contains(tensor.type) {
            _ = try? file.floats(tensor)
        }
        _ = try? GGUFModel.config(file)
        guard let tokenizer = try? Tokenizer(gguf: file) else { return }
        let ids = tokenizer.encode("Héllo wörld 123 <s> 日本 🙂  x", addSpecialTokens: true)
        _ = tokenizer.decode(ids, skipSpecialTokens: true)
    }

    static func chatTemplate(_ bytes: Data) {
        guard let template = try? ChatTemplate(String(decoding: bytes, as: UTF8.self)) else { return }
        let messages = [ChatTemplate.Message(role: "system", content: "Be brief."), ChatTemplate.Message(role: "user", content: "Hi 🙂"),
                        ChatTemplate.Message(role: "assistant", content: " Hello\n")]
        for prompt in [false, true] {
            _ = try? template.render(messages, addGenerationPrompt: prompt, bosToken: "<s>", eosToken: "</s>")
        }
    }

    static func safetensorsIndex(_ bytes: Data, _ scratch: Scratch) {
        let folder = scratch.folder("index")
        scratch.copy(scratch.fixture("llama-gqa/lora/adapter_model.safetensors"),
                     to: "index/model-00001-of-00001.safetensors")
        _ = scratch.write(bytes, to: "index/model.safetensors.index.json")
        guard let checkpoint = try? SafetensorsCheckpoint(folder: folder) else { return }
        for name in checkpoint.names {
            guard let entry = checkpoint.entry(named: name), entry.dtype.isLoadable else { continue }
            var values = [Float](repeating: 0, count: entry.elementCount)
            _ = values.withUnsafeMutableBufferPointer { try? checkpoint.readFloats(name, into: $0) }
        }
    }

    static func config(_ bytes: Data) {
        guard let config = try? ModelConfig.parse(bytes, path: "config.json"),
              (try? ModelSize.check(config, path: "config.json", against: nil)) != nil,
              let count = ModelSize.parameterCount(config), count <= 2_000_000 else { return }
        _ = try? CausalLanguageModelFactory.make(config)
    }

    static func tokenizer(_ bytes: Data) {
        let (json, text) = split(bytes)
        guard let value = try? JSONValue.parse(json, file: "tokenizer.json"),
              let tokenizer = try? Tokenizer(json: value, path: "tokenizer.json") else { return }
        let string = String(decoding: text, as: UTF8.self)
        for special in [false, true] {
            let ids = tokenizer.encode(string, addSpecialTokens: special)
            _ = tokenizer.decode(ids)
            _ = tokenizer.decode(ids, skipSpecialTokens: true)
            _ = tokenizer.pieces(ids)
        }
    }

    static func encode(_ bytes: Data, _ scratch: Scratch) {
        let string = String(decoding: bytes, as: UTF8.self)
        for tokenizer in scratch.fixtureTokenizers {
            let ids = tokenizer.encode(string, addSpecialTokens: true)
            _ = tokenizer.decode(ids, skipSpecialTokens: true)
            _ = tokenizer.pieces(ids)
        }
    }

    static func adapterConfig(_ bytes: Data, _ scratch: Scratch) {
        let folder = scratch.folder("adapter")
        scratch.copy(scratch.fixture("llama-gqa/lora/adapter_model.safetensors"),
                     to: "adapter/adapter_model.safetensors")
        _ = scratch.write(bytes, to: "adapter/adapter_config.json")
        // A fresh model each time (an adapter is injected into it); its weights do not matter to the adapter.
        guard let model = try? CausalLanguageModelFactory.make(scratch.fixtureConfig) else {
            preconditionFailure("the fixture config does not make a model")
        }
        _ = try? PEFTFormat.load(folder, into: model)
    }

    static func recipe(_ bytes: Data) {
        let (yaml, rest) = split(bytes)
        let overrides = String(decoding: rest, as: UTF8.self).split(separator: "\n").map(String.init)
        guard let text = String(data: yaml, encoding: .utf8),
              let loaded = try? RecipeLoader.parse(text, file: "r.yaml", overrides: overrides) else { return }
        // What a run directory keeps must read back as the same recipe.
        guard let again = try? RecipeLoader.parse(loaded.resolvedYAML, file: "resolved.yaml") else {
            preconditionFailure("the resolved recipe does not load:\n\(loaded.resolvedYAML)")
        }
        let changed = RecipeLoader.changedKeys(loaded.recipe, again.recipe)
        precondition(changed.isEmpty && again.recipe == loaded.recipe,
                     "the resolved recipe loads as another recipe: \(changed)")
    }

    static func state(_ bytes: Data, _ scratch: Scratch) {
        guard let state = try? CheckpointState.read(bytes, file: "state.json", totalSteps: 1000) else { return }
        var loader = BatchLoader(data: scratch.smallData, batchSize: 3, shuffle: true, seed: 7, cursor: state.cursor)
        _ = loader.next()
        _ = loader.next()
        for words in state.generators.values {
            guard var generator = try? RandomGenerator(state: words) else { preconditionFailure("an accepted state does not seed") }
            _ = generator.next()
        }
    }

    static func data(_ bytes: Data, _ scratch: Scratch) {
        guard let first = bytes.first else { return }
        let name = ["d.jsonl", "d.txt", "d.json", "d"][Int(first & 3)]
        let path = scratch.write(bytes.dropFirst(), to: name)
        let length = 2 + Int(first >> 3)
        guard let tokenizer = scratch.fixtureTokenizers.first else { return }
        guard let data = try? TrainingData.load(path: path, format: .auto, tokenizer: tokenizer, sequenceLength: length,
                                                packing: first & 4 != 0, endOfText: 2) else { return }
        precondition(data.sequences.allSatisfy { $0.tokens.count == length && $0.targetMask.count == length },
                     "a sequence is not \(length) tokens long")
        precondition(data.sequences.allSatisfy { ($0.recordStarts?.count ?? length) == length },
                     "record starts do not cover the window")
    }
}
