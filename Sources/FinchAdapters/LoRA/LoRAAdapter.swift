import Foundation
import FinchModels
import FinchNN
import FinchTensor

/// The LoRA layers injected into one model, by module path.
public final class LoRAAdapter {
    public let configuration: LoRAConfiguration
    /// (module path, layer), in the model's module order.
    public let layers: [(path: String, layer: LoRALinear)]
    /// Adapted token embeddings (`embed_tokens` named as a target), in the model's module order.
    public let embeddings: [(path: String, layer: LoRAEmbedding)]
    /// Whole modules trained beside the adapter (PEFT's `modules_to_save`): a trainable copy of each, in the model.
    public let savedModules: [(path: String, module: Module)]

    init(configuration: LoRAConfiguration, layers: [(path: String, layer: LoRALinear)],
         embeddings: [(path: String, layer: LoRAEmbedding)] = [], savedModules: [(path: String, module: Module)] = []) {
        self.configuration = configuration
        self.layers = layers
        self.embeddings = embeddings
        self.savedModules = savedModules
    }

    /// Wraps every targeted Linear (and Embedding, when named) of `model` in a LoRA layer and freezes
    /// everything else. A head tied to an adapted embedding is untied first, so it keeps the base table.
    /// - Throws: when a target matches no module (the error lists the model's Linear and Embedding names).
    /// The configuration kept is the one given, with `fanInFanOut` set from the model's layout: true when a
    /// targeted weight is stored transposed in the model's files.
    public static func inject(into model: Module, configuration given: LoRAConfiguration,
                              seed: UInt64 = 0) throws -> LoRAAdapter {
        var configuration = given
        let (candidates, chosen) = try targets(in: model, configuration: configuration)
        try AdapterError.checkFitsInMemory(try valueCount(of: candidates, chosen: chosen, configuration: configuration),
                                           what: "the LoRA factors of rank \(configuration.rank)", setting: .rank)
        if let lm = model as? any CausalLanguageModel {
            configuration.fanInFanOut = chosen.contains { lm.storesTransposed($0 + ".weight") }
        }
        model.freeze()
        var generator = RandomGenerator(seed: seed)
        var layers: [(path: String, layer: LoRALinear)] = []
        var embeddings: [(path: String, layer: LoRAEmbedding)] = []
        for path in chosen {
            if let table = candidates.first(where: { $0.name == path })?.module as? QuantizedEmbedding {
                throw AdapterError("module '\(path)' is held as \(table.quantized.format); LoRA on the token table needs it in float32 (quantize: none, or nf4, which keeps the table float32)", setting: .targets)
            }
            if let table = candidates.first(where: { $0.name == path })?.module as? Embedding {
                let (rank, alpha) = configuration.rankAndAlpha(for: path)
                let headShares = try prepareTiedHead(of: model, for: table, configuration: configuration)
                let lora = try LoRAEmbedding(base: table, rank: rank, alpha: alpha, useRSLoRA: configuration.useRSLoRA,
                                             appliesToTiedHead: headShares,
                                             loadable: configuration.initialization == .zeros,
                                             useDoRA: configuration.useDoRA, generator: &generator)
                do {
                    try model.replaceModule(at: path, with: lora)
                } catch {
                    throw AdapterError("module '\(path)' cannot carry a LoRA adapter (\(error))", setting: .targets)
                }
                embeddings.append((path, lora))
                continue
            }
            guard let base = candidates.first(where: { $0.name == path })?.module as? any LinearLayer else { continue }
            let (rank, alpha) = configuration.rankAndAlpha(for: path)
            let lora = try LoRALinear(base: base, rank: rank, alpha: alpha, useRSLoRA: configuration.useRSLoRA,
                                      dropout: Float(configuration.dropout), initialization: configuration.initialization,
                                      useDoRA: configuration.useDoRA, generator: &generator)
            do {
                try model.replaceModule(at: path, with: lora)
            } catch {
                throw AdapterError("module '\(path)' cannot carry a LoRA adapter (\(error))", setting: .targets)
            }
            layers.append((path, lora))
        }
        let saved = try saveModules(in: model, candidates: candidates, adapted: Set(chosen),
                                    configuration: configuration)
        return LoRAAdapter(configuration: configuration, layers: layers, embeddings: embeddings, savedModules: saved)
    }

    /// The values the LoRA factors of `configuration` would hold in `model` (A and B of every targeted module,
    /// with `rank_pattern`'s ranks), counted without allocating them; nil when the count overflows `Int`.
    /// - Throws: as `inject` does for targets that match nothing, and for a rank that is not positive.
    public static func valueCount(in model: Module, configuration: LoRAConfiguration) throws -> Int? {
        let (candidates, chosen) = try targets(in: model, configuration: configuration)
        return try valueCount(of: candidates, chosen: chosen, configuration: configuration)
    }

    /// The Linear and Embedding modules of `model`, and the paths of those the configuration targets.
    static func targets(in model: Module, configuration: LoRAConfiguration) throws
        -> (candidates: [(name: String, module: Module)], chosen: [String]) {
        let candidates = model.namedModules().filter {
            ($0.module is Linear || $0.module is QuantizedLinear || $0.module is Embedding || $0.module is QuantizedEmbedding)
                && !$0.name.isEmpty
        }
        let linearPaths = Set(candidates.filter { $0.module is Linear || $0.module is QuantizedLinear }.map(\.name))
        return (candidates, try select(candidates.map(\.name), linear: linearPaths, configuration: configuration))
    }

    static func valueCount(of candidates: [(name: String, module: Module)], chosen: [String],
                           configuration: LoRAConfiguration) throws -> Int? {
        let chosen = Set(chosen)
        var total = 0
        for (path, module) in candidates where chosen.contains(path) {
            let (rank, _) = configuration.rankAndAlpha(for: path)
            guard rank > 0 else { throw AdapterError("the rank for '\(path)' is \(rank); ranks must be positive", setting: .rank) }
            // Linear [out, in] gets A [r, in] and B [out, r]; Embedding [count, dim] gets A [r, count] and B [dim, r].
            let shape = (module as? Linear)?.weight.shape ?? (module as? QuantizedLinear)?.quantized.shape
                ?? (module as? Embedding)?.weight.shape ?? (module as? QuantizedEmbedding)?.quantized.shape ?? []
            let (sides, o1) = shape.reduce(0, +).multipliedReportingOverflow(by: rank)
            let (sum, o2) = total.addingReportingOverflow(sides)
            if o1 || o2 { return nil }
            total = sum
        }
        return total
    }

    /// The one rule for a head tied to an embedding that an adapter changes: with `ensure_weight_tying` it
    /// shares the change (returns true); otherwise it is untied first and keeps the base table.
    static func prepareTiedHead(of model: Module, for table: Embedding,
                                configuration: LoRAConfiguration) throws -> Bool {
        guard let lm = model as? any CausalLanguageModel, lm.outputWeight.tensor === table.weight else { return false }
        if configuration.ensureWeightTying { return true }
        do {
            try lm.untieWordEmbeddings()
        } catch {
            throw AdapterError("the embedding cannot be adapted apart from the head tied to it (\(error))",
                               setting: .targets)
        }
        return false
    }

    /// Puts a trainable copy of every `modules_to_save` module in the model. A head tied to a copied
    /// embedding reads the copy with `ensure_weight_tying`, and keeps the base table otherwise (untied).
    static func saveModules(in model: Module, candidates: [(name: String, module: Module)], adapted: Set<String>,
                            configuration: LoRAConfiguration) throws -> [(path: String, module: Module)] {
        var saved: [(path: String, module: Module)] = []
        for name in configuration.modulesToSave {
            let matches = candidates.filter { $0.name == name || $0.name.hasSuffix("." + name) }
            guard !matches.isEmpty else {
                let names = Set(candidates.map { $0.name.split(separator: ".").last.map(String.init) ?? $0.name }).sorted()
                throw AdapterError("modules_to_save '\(name)' matches nothing in this model; its Linear and Embedding modules are: \(names.joined(separator: ", "))",
                                   setting: .modulesToSave)
            }
            for (path, module) in matches {
                guard !adapted.contains(path) else {
                    throw AdapterError("module '\(path)' is both a LoRA target and in modules_to_save; choose one",
                                       setting: .modulesToSave)
                }
                let copy: Module
                if let table = module as? QuantizedEmbedding {
                    throw AdapterError("modules_to_save '\(path)' is held as \(table.quantized.format); a trainable copy of the token table needs it in float32 (quantize: none)", setting: .modulesToSave)
                } else if let table = module as? Embedding {
                    _ = try prepareTiedHead(of: model, for: table, configuration: configuration)
                    copy = Embedding(weight: table.weight.copy())
                } else if let linear = module as? Linear {
                    copy = Linear(weight: linear.weight.copy(), bias: linear.bias?.copy())
                } else if let quantized = module as? QuantizedLinear {
                    copy = quantized.dequantized()
                } else { continue }
                copy.unfreeze()
                do {
                    try model.replaceModule(at: path, with: copy)
                } catch {
                    throw AdapterError("module '\(path)' cannot be in modules_to_save (\(error))",
                                       setting: .modulesToSave)
                }
                saved.append((path, copy))
            }
        }
        return saved
    }

    /// The module paths a configuration selects among `paths` (of which `linear` are Linear modules;
    /// `all-linear` selects only those, as PEFT's does).
    static func select(_ paths: [String], linear: Set<String>? = nil,
                       configuration: LoRAConfiguration) throws -> [String] {
        let leafNames = Array(Set(paths.map { $0.split(separator: ".").last.map(String.init) ?? $0 })).sorted()
        var selected: [String]
        switch configuration.targets {
        case .allLinear:
            // PEFT leaves out the model's output layer: `lm_head`, GPT-NeoX's `embed_out`.
            selected = paths.filter { p in (linear?.contains(p) ?? true) && !["lm_head", "embed_out"].contains { p == $0 || p.hasSuffix("." + $0) } }
        case .names(let names):
            guard !names.isEmpty else { throw AdapterError("target_modules is empty; name modules such as \(leafNames.joined(separator: ", "))", setting: .targets) }
            for name in names where !paths.contains(where: { $0 == name || $0.hasSuffix("." + name) }) {
                throw AdapterError("target module '\(name)' matches nothing in this model; its Linear and Embedding modules are: \(leafNames.joined(separator: ", "))",
                                   setting: .targets)
            }
            selected = paths.filter { p in names.contains { p == $0 || p.hasSuffix("." + $0) } }
        case .pattern(let pattern):
            guard let regex = try? NSRegularExpression(pattern: "^(?:\(pattern))$") else {
                throw AdapterError("target_modules regular expression '\(pattern)' does not compile", setting: .targets)
            }
            selected = paths.filter { regex.firstMatch(in: $0, range: NSRange($0.startIndex..., in: $0)) != nil }
            guard !selected.isEmpty else {
                throw AdapterError("target_modules pattern '\(pattern)' matches nothing in this model; its Linear and Embedding modules are: \(leafNames.joined(separator: ", "))",
                                   setting: .targets)
            }
        }
        if let layers = configuration.layersToTransform {
            selected = selected.filter { layerIndex($0).map(layers.contains) ?? false }
            guard !selected.isEmpty else {
                throw AdapterError("layers_to_transform \(layers) selects no targeted module (layer indices in this model: \(Set(paths.compactMap(layerIndex)).sorted()))",
                                   setting: .layers)
            }
        }
        return selected
    }

    /// The first numeric path component (`model.layers.3.self_attn.q_proj` → 3).
    static func layerIndex(_ path: String) -> Int? {
        path.split(separator: ".").lazy.compactMap { Int($0) }.first
    }

    /// Adapter tensors under PEFT's file keys: `base_model.model.<path>.lora_A.weight`.
    /// Embeddings: `base_model.model.<path>.lora_embedding_A` [r, vocabulary] and `…lora_embedding_B` [d, r].
    public func peftTensors() -> [(key: String, tensor: Tensor)] {
        var tensors: [(key: String, tensor: Tensor)] = []
        for (path, layer) in embeddings {
            tensors.append(("base_model.model.\(path).lora_embedding_A", layer.lora_embedding_A))
            tensors.append(("base_model.model.\(path).lora_embedding_B", layer.lora_embedding_B))
            if let magnitude = layer.lora_magnitude_vector {
                tensors.append(("base_model.model.\(path).lora_magnitude_vector", magnitude))
            }
        }
        for (path, layer) in layers {
            tensors.append(("base_model.model.\(path).lora_A.weight", layer.lora_A.weight))
            tensors.append(("base_model.model.\(path).lora_B.weight", layer.lora_B.weight))
            if let magnitude = layer.lora_magnitude_vector {
                tensors.append(("base_model.model.\(path).lora_magnitude_vector", magnitude))
            }
        }
        for (path, module) in savedModules {
            for (name, tensor) in module.namedParameters() { tensors.append(("base_model.model.\(path).\(name)", tensor)) }
        }
        return tensors
    }


    /// PEFT's file keys for a head tied to an adapted embedding (`ensure_weight_tying`): the head's LoRA factors
    /// are the embedding's transposed (lm_head.lora_A = Bᵀ [r, d], lm_head.lora_B = Aᵀ [vocabulary, r]).
    /// A copied embedding the head reads as well is written again as `lm_head.weight`.
    public func tiedHeadTensors() throws -> [(key: String, tensor: Tensor)] {
        try embeddings.filter { $0.layer.appliesToTiedHead }.flatMap { _, layer in
            [("base_model.model.lm_head.lora_A.weight", try layer.lora_embedding_B.transposed()),
             ("base_model.model.lm_head.lora_B.weight", try layer.lora_embedding_A.transposed())]
        } + tiedSavedTable.map { [("base_model.model.lm_head.weight", $0)] }.orEmpty
    }

    /// The copied embedding table a tied head reads (modules_to_save with ensure_weight_tying), if any.
    var tiedSavedTable: Tensor? {
        guard configuration.ensureWeightTying else { return nil }
        return savedModules.compactMap { ($0.module as? Embedding)?.weight }.first
    }

    /// Every adapted module path, embeddings first.
    public var paths: [String] { embeddings.map(\.path) + layers.map(\.path) }

    public func merge() throws {
        for l in embeddings { try l.layer.merge() }
        for l in layers { try l.layer.merge() }
    }

    public func unmerge() throws {
        for l in embeddings { try l.layer.unmerge() }
        for l in layers { try l.layer.unmerge() }
    }

    /// Merges every adapter into its base weight and puts the plain Linear (or Embedding) back in the model.
    public func mergeAndUnload(from model: Module) throws {
        for (path, layer) in embeddings {
            try layer.merge()
            try model.replaceModule(at: path, with: layer.baseLayer)
        }
        for (path, layer) in layers {
            try layer.merge()
            try model.replaceModule(at: path, with: layer.baseLayer)
        }
    }
}

extension Optional where Wrapped == [(key: String, tensor: Tensor)] {
    var orEmpty: [(key: String, tensor: Tensor)] { self ?? [] }
}
