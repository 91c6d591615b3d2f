import Foundation
import FinchFormats
import FinchModels
import FinchNN
import FinchTensor

/// PEFT adapter folders: `adapter_config.json` and `adapter_model.safetensors`, read and written with the
/// key names, shapes and config fields PEFT itself uses, so either side loads the other's files.
public enum PEFTFormat {
    public static let configFile = "adapter_config.json"
    public static let weightsFile = "adapter_model.safetensors"

    // MARK: Reading

    /// Reads a PEFT folder and applies it to `model` (LoRA layers are injected; a prefix is returned).
    public static func load(_ folder: String, into model: any CausalLanguageModel) throws -> Adapter {
        let configPath = (folder as NSString).appendingPathComponent(configFile)
        guard FileManager.default.fileExists(atPath: configPath) else {
            // A Finch run directory keeps its adapter in adapter/: name it rather than leave the user to guess.
            let inside = (folder as NSString).appendingPathComponent("adapter")
            let hint = FileManager.default.fileExists(atPath: (inside as NSString).appendingPathComponent(configFile))
                ? " (\(inside) holds one: pass that)" : ""
            throw FormatError(file: configPath, "missing: a PEFT adapter folder holds adapter_config.json and adapter_model.safetensors\(hint)")
        }
        guard let config = try JSONValue.load(path: configPath).object else {
            throw FormatError(file: configPath, "expected a JSON object")
        }
        let weights = try SafetensorsFile(path: (folder as NSString).appendingPathComponent(weightsFile))
        switch config["peft_type"]?.string {
        case "LORA":
            return .lora(try loadLoRA(config, configPath: configPath, weights: weights, into: model))
        case "PREFIX_TUNING":
            return .prefix(try loadPrefix(config, configPath: configPath, weights: weights, model: model))
        case let other:
            throw FormatError(file: configPath, "peft_type \(other.map { "\"\($0)\"" } ?? "(missing)") is not supported (Finch implements \"LORA\" and \"PREFIX_TUNING\")")
        }
    }

    static func loadLoRA(_ c: [String: JSONValue], configPath: String, weights: SafetensorsFile,
                         into model: any CausalLanguageModel) throws -> LoRAAdapter {
        func fail(_ message: String) -> FormatError { FormatError(file: configPath, message) }
        if let bias = c["bias"]?.string, bias != "none" { throw fail("bias \"\(bias)\" is not supported (Finch implements \"none\")") }
        if let t = c["target_parameters"], !t.isNull { throw fail("target_parameters is not supported") }
        if let lr = c["layer_replication"], !lr.isNull { throw fail("layer_replication is not supported") }
        guard let rank = c["r"]?.int, rank > 0 else { throw fail("\"r\" must be a positive integer") }
        var configuration = LoRAConfiguration(rank: rank, alpha: c["lora_alpha"]?.number ?? 8)
        configuration.dropout = c["lora_dropout"]?.number ?? 0
        configuration.useRSLoRA = c["use_rslora"]?.bool ?? false
        configuration.useDoRA = c["use_dora"]?.bool ?? false
        configuration.ensureWeightTying = c["ensure_weight_tying"]?.bool ?? false
        switch c["modules_to_save"] {
        case .none, .some(.null): break
        case .some(.array(let list)):
            // PEFT lists a tied embedding twice (`embed_tokens` and `model.embed_tokens`): one module.
            var names: [String] = []
            for name in list.compactMap(\.string) where !names.contains(where: { $0 == name || $0.hasSuffix("." + name) || name.hasSuffix("." + $0) }) {
                names.append(name)
            }
            configuration.modulesToSave = names
        default: throw fail("modules_to_save must be a list of module names")
        }
        configuration.fanInFanOut = c["fan_in_fan_out"]?.bool ?? false
        configuration.initialization = .zeros
        switch c["target_modules"] {
        case .some(.string(let s)) where s == "all-linear": configuration.targets = .allLinear
        case .some(.string(let s)): configuration.targets = .pattern(s)
        case .some(.array(let list)):
            let names = list.compactMap(\.string)
            guard names.count == list.count else { throw fail("target_modules must be a list of names or a string") }
            configuration.targets = .names(names)
        default: throw fail("target_modules must be a list of names or a string")
        }
        switch c["layers_to_transform"] {
        case .some(.int(let i)): configuration.layersToTransform = [i]
        case .some(.array(let list)): configuration.layersToTransform = list.compactMap(\.int)
        default: break
        }
        configuration.rankPattern = (c["rank_pattern"]?.object ?? [:]).compactMapValues(\.int)
        configuration.alphaPattern = (c["alpha_pattern"]?.object ?? [:]).compactMapValues(\.number)

        let adapter: LoRAAdapter
        do {
            // Ranks too large to allocate (a mistyped r of 10¹² would stop the process in the allocator) are
            // refused first, as not these weights' when the file holds fewer values; smaller mismatches are left to
            // the per-tensor checks below, whose messages name the tensor.
            let held = weights.entries.reduce(0) { $0 &+ $1.elementCount }
            let needed = try LoRAAdapter.valueCount(in: model, configuration: configuration) ?? Int.max
            if needed > AdapterError.trainableValueLimit, needed > held {
                let ranks = configuration.rankPattern.isEmpty ? "r \(rank) gives" : "r \(rank) and rank_pattern give"
                let count = needed == Int.max ? "more than can be counted" : "\(needed)"
                throw fail("\(ranks) the targeted modules \(count) LoRA values, but \(weights.path) holds \(held): the ranks do not match these weights")
            }
            adapter = try LoRAAdapter.inject(into: model, configuration: configuration)
        } catch let e as AdapterError {
            throw fail("\(e.message) (is this adapter for a \(model.config.modelType) model?)")
        }
        var expected: [String: Tensor] = [:]
        for (key, tensor) in adapter.peftTensors() { expected[key] = tensor }
        // PEFT also saves the whole base table of an adapted embedding (its save_embedding_layers "auto");
        // when present it replaces the model's table, as PEFT's loader does.
        var baseTables: [String: Tensor] = [:]
        for (path, layer) in adapter.embeddings { baseTables["base_model.model.\(path).base_layer.weight"] = layer.baseLayer.weight }
        // With ensure_weight_tying PEFT also writes the tied head's table and factors; they are the embedding's
        // (the same storage in PEFT), so once everything else is loaded they are checked against it.
        let tiedTable = adapter.embeddings.first(where: { $0.layer.appliesToTiedHead })?.layer.baseLayer.weight
        func tiedHead() throws -> [String: Tensor] {
            var map = Dictionary(uniqueKeysWithValues: try adapter.tiedHeadTensors().map { ($0.key, $0.tensor) })
            if let tiedTable { map["base_model.model.lm_head.base_layer.weight"] = tiedTable }
            return map
        }
        let tiedHeadKeys = Set(try tiedHead().keys)
        var tiedHeadEntries: [SafetensorsEntry] = []
        var seen = Set<String>()
        for entry in weights.entries {
            let key = entry.name.replacingOccurrences(of: ".default.weight", with: ".weight")
            if let table = baseTables[key] {
                guard entry.shape == table.shape else {
                    throw FormatError(file: weights.path, "tensor '\(entry.name)' has shape \(entry.shape), but the model's embedding is \(table.shape)")
                }
                try weights.readFiniteFloats(entry.name, into: table.storage.buffer)
                continue
            }
            if tiedHeadKeys.contains(key) {
                tiedHeadEntries.append(entry)
                continue
            }
            guard let tensor = expected[key] else {
                throw FormatError(file: weights.path, "tensor '\(entry.name)' matches no LoRA layer of this \(model.config.modelType) model (adapter targets: \(adapter.paths.prefix(3).joined(separator: ", "))…)")
            }
            guard entry.shape == tensor.shape else {
                throw FormatError(file: weights.path, "tensor '\(entry.name)' has shape \(entry.shape), but the model needs \(tensor.shape)")
            }
            try weights.readFiniteFloats(entry.name, into: tensor.storage.buffer)
            seen.insert(key)
        }
        if let missing = expected.keys.sorted().first(where: { !seen.contains($0) }) {
            throw FormatError(file: weights.path, "missing tensor '\(missing)' for a targeted module")
        }
        let loadedHead = try tiedHead()
        for entry in tiedHeadEntries {
            let key = entry.name.replacingOccurrences(of: ".default.weight", with: ".weight")
            guard let tensor = loadedHead[key], entry.shape == tensor.shape,
                  try weights.floats(entry.name) == tensor.scalars else {
                throw FormatError(file: weights.path, "tensor '\(entry.name)' should equal the tied embedding's (ensure_weight_tying), but it differs")
            }
        }
        return adapter
    }

    static func loadPrefix(_ c: [String: JSONValue], configPath: String, weights: SafetensorsFile,
                           model: any CausalLanguageModel) throws -> PrefixTuning {
        func fail(_ message: String) -> FormatError { FormatError(file: configPath, message) }
        guard let p = c["num_virtual_tokens"]?.int, p > 0 else { throw fail("\"num_virtual_tokens\" must be a positive integer") }
        let layers = c["num_layers"]?.int ?? model.layerCount
        guard layers == model.layerCount else {
            throw fail("num_layers is \(layers) but the \(model.config.modelType) model has \(model.layerCount) layers")
        }
        let d = model.keyValueHeadCount * model.headDimension
        if let tokenDim = c["token_dim"]?.int, tokenDim != d, tokenDim != model.hiddenSize {
            throw fail("token_dim is \(tokenDim) but the model's keys are \(d) wide")
        }
        if let subs = c["num_transformer_submodules"]?.int, subs != 1 { throw fail("num_transformer_submodules \(subs) is not supported (decoder-only models have 1)") }
        // The file's table is checked before the prefix is made, so a mistyped num_virtual_tokens allocates nothing.
        let expectedShape = [p, 2 * layers * d]
        guard let entry = weights.entry(named: "prompt_embeddings") else {
            throw FormatError(file: weights.path,
                              "missing tensor 'prompt_embeddings' (expected shape \(expectedShape))")
        }
        guard entry.shape == expectedShape else {
            throw FormatError(file: weights.path, "tensor 'prompt_embeddings' has shape \(entry.shape), but the model needs \(expectedShape) (\(p) virtual tokens × 2 × \(layers) layers × \(d))")
        }
        var generator = RandomGenerator(seed: 0)
        let prefix: PrefixTuning
        do {
            prefix = try PrefixTuning(virtualTokenCount: p, layerCount: layers,
                                      keyValueHeadCount: model.keyValueHeadCount,
                                      headDimension: model.headDimension, generator: &generator)
        } catch let e as AdapterError {
            throw fail(e.message)
        }
        try weights.readFiniteFloats("prompt_embeddings", into: prefix.promptEmbeddings!.storage.buffer)
        if let extra = weights.names.first(where: { $0 != "prompt_embeddings" }) {
            throw FormatError(file: weights.path, "unexpected tensor '\(extra)' in a prefix-tuning adapter")
        }
        return prefix
    }

    // MARK: Writing

    /// Writes `adapter` as a PEFT folder. A prefix with the reparameterisation MLP is collapsed to its table.
    public static func save(_ adapter: Adapter, model: any CausalLanguageModel, to folder: String,
                            baseModel: String? = nil) throws {
        try Folder.create(folder)
        let items: [SafetensorsWriter.Item]
        var config: [String: Any]
        switch adapter {
        case .lora(let lora):
            items = (lora.peftTensors() + (try lora.tiedHeadTensors())).map { .init(name: $0.key, tensor: $0.tensor) }
            config = loraConfig(lora.configuration)
        case .prefix(let prefix):
            let table = try GradientMode.withoutGradients { try prefix.prefixTable() }
            items = [.init(name: "prompt_embeddings", shape: table.shape, values: table.scalars)]
            config = prefixConfig(prefix, model: model)
        }
        config["base_model_name_or_path"] = baseModel ?? NSNull()
        try SafetensorsWriter.write(items, metadata: ["format": "pt"],
                                    to: (folder as NSString).appendingPathComponent(weightsFile))
        let data = try JSONSerialization.data(withJSONObject: config,
                                              options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        try AtomicFile.write(data + Data("\n".utf8), to: (folder as NSString).appendingPathComponent(configFile))
    }

    static func loraConfig(_ c: LoRAConfiguration) -> [String: Any] {
        let targets: Any
        switch c.targets {
        case .names(let names): targets = names
        case .allLinear: targets = "all-linear"
        case .pattern(let p): targets = p
        }
        return [
            "alpha_pattern": c.alphaPattern, "auto_mapping": NSNull(), "bias": "none",
            "fan_in_fan_out": c.fanInFanOut, "inference_mode": true,
            "init_lora_weights": true, "layer_replication": NSNull(), "layers_pattern": NSNull(),
            "layers_to_transform": c.layersToTransform.map { $0 as Any } ?? NSNull(), "loftq_config": [String: Any](),
            "lora_alpha": c.alpha, "lora_bias": false, "lora_dropout": c.dropout, "megatron_config": NSNull(),
            "megatron_core": "megatron.core", "modules_to_save": c.modulesToSave.isEmpty ? NSNull() : c.modulesToSave as Any,
            "peft_type": "LORA", "r": c.rank,
            "rank_pattern": c.rankPattern, "revision": NSNull(), "target_modules": targets, "task_type": "CAUSAL_LM",
            "use_dora": c.useDoRA, "use_rslora": c.useRSLoRA, "ensure_weight_tying": c.ensureWeightTying,
        ]
    }

    static func prefixConfig(_ p: PrefixTuning, model: any CausalLanguageModel) -> [String: Any] {
        [
            "auto_mapping": NSNull(), "encoder_hidden_size": p.tokenDimension, "inference_mode": true,
            "modules_to_save": NSNull(), "num_attention_heads": model.keyValueHeadCount, "num_layers": p.layerCount,
            "num_transformer_submodules": 1, "num_virtual_tokens": p.virtualTokenCount, "peft_type": "PREFIX_TUNING",
            "prefix_projection": false, "revision": NSNull(), "task_type": "CAUSAL_LM", "token_dim": p.tokenDimension,
        ]
    }
}
