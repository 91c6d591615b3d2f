import FinchModels
import FinchNN
import FinchTensor

/// The adapter a run asks for, before it exists: which method, with its settings. A setting of another method
/// cannot be written down, and `Adapter.make` is the one place a spec becomes modules.
public enum AdapterSpec: Equatable, Sendable {
    case lora(LoRAConfiguration)
    case prefix(PrefixConfiguration)
    /// Full fine-tuning: no adapter, every base weight trains.
    case none

    public enum Kind: String, Sendable, CaseIterable {
        case lora, prefix, none

        /// The method's name in messages.
        public var name: String {
            switch self {
            case .lora: return "LoRA"
            case .prefix: return "prefix tuning"
            case .none: return "none (full fine-tuning)"
            }
        }
    }

    /// A spec of `kind` with every setting at its default.
    public init(defaultsOf kind: Kind) {
        switch kind {
        case .lora: self = .lora(LoRAConfiguration())
        case .prefix: self = .prefix(PrefixConfiguration())
        case .none: self = .none
        }
    }

    public var kind: Kind {
        switch self {
        case .lora: return .lora
        case .prefix: return .prefix
        case .none: return .none
        }
    }

    /// The LoRA settings, when this is LoRA; setting it makes the spec LoRA.
    public var lora: LoRAConfiguration? {
        get { if case .lora(let c) = self { return c } else { return nil } }
        set { if let newValue { self = .lora(newValue) } }
    }

    /// The prefix-tuning settings, when this is prefix tuning; setting it makes the spec prefix tuning.
    public var prefix: PrefixConfiguration? {
        get { if case .prefix(let c) = self { return c } else { return nil } }
        set { if let newValue { self = .prefix(newValue) } }
    }
}

/// An adapter applied to a model: LoRA layers injected into it, or a prefix passed to its attention.
public enum Adapter {
    case lora(LoRAAdapter)
    case prefix(PrefixTuning)

    /// Builds what `spec` asks for in `model` and freezes what does not train: LoRA layers injected into it, a
    /// prefix beside it, or nothing (nil) with every weight of the model unfrozen for full fine-tuning.
    /// - Throws: `AdapterError`, whose `setting` names the setting at fault.
    public static func make(_ spec: AdapterSpec, in model: any CausalLanguageModel,
                            generator: inout RandomGenerator) throws -> Adapter? {
        switch spec {
        case .lora(let configuration):
            if let layers = configuration.layersToTransform,
               let missing = layers.first(where: { !(0..<model.layerCount).contains($0) }) {
                throw AdapterError("this model has no layer \(missing) (its layers are 0–\(model.layerCount - 1))",
                                   setting: .layers)
            }
            return .lora(try LoRAAdapter.inject(into: model, configuration: configuration, seed: generator.next()))
        case .prefix(let configuration):
            // Virtual tokens take positions before the sequence's own.
            guard configuration.virtualTokens < model.config.maxPositions else {
                throw AdapterError("\(configuration.virtualTokens) virtual tokens leave no room in the model's "
                                   + "\(model.config.maxPositions) positions", setting: .virtualTokens)
            }
            model.freeze()
            return .prefix(try PrefixTuning(configuration, for: model, generator: &generator))
        case .none:
            model.unfreeze()
            return nil
        }
    }

    /// The tensors that train, by the stable names optimizer state and checkpoints use: the model's trainable
    /// parameters by module path (LoRA factors, modules trained whole, or every weight), or the prefix's own
    /// parameters under `prefix.`.
    public static func trainableTensors(_ adapter: Adapter?,
                                        in model: any CausalLanguageModel) -> [(name: String, tensor: Tensor)] {
        if case .prefix(let p)? = adapter { return p.namedParameters().map { ("prefix." + $0.name, $0.tensor) } }
        return model.trainableParameters()
    }

    /// What the model's forward pass needs besides its (possibly LoRA-wrapped) modules.
    public var attentionPrefix: AttentionPrefix? {
        if case .prefix(let p) = self { return p }
        return nil
    }

    /// The adapter's own trainable tensors by name (LoRA: PEFT keys; prefix: its parameter names).
    public var trainableParameters: [(name: String, tensor: Tensor)] {
        switch self {
        case .lora(let l): return l.peftTensors().map { ($0.key, $0.tensor) }
        case .prefix(let p): return p.namedParameters()
        }
    }

    /// The states of the random generators training draws from (LoRA dropout), by module path, so a resumed
    /// run draws what the uninterrupted one would have.
    public var randomStates: [String: [UInt64]] {
        guard case .lora(let l) = self else { return [:] }
        return Dictionary(uniqueKeysWithValues: l.layers.map { ($0.path, $0.layer.generator.state) })
    }

    /// Puts back generator states saved from `randomStates`; paths not given keep their generators.
    public func restoreRandomStates(_ states: [String: [UInt64]]) throws {
        guard case .lora(let l) = self else { return }
        for (path, layer) in l.layers {
            if let words = states[path] { layer.generator = try RandomGenerator(state: words) }
        }
    }

    /// Folds the adapter into the model's weights and puts the plain modules back, for an export; false (and
    /// nothing changed) for a method that adds to the forward pass instead (prefix tuning).
    public func mergeAndUnload(from model: any CausalLanguageModel) throws -> Bool {
        switch self {
        case .lora(let l):
            try l.mergeAndUnload(from: model)
            return true
        case .prefix:
            return false
        }
    }

    /// The method's name in messages.
    public var name: String {
        switch self {
        case .lora: return "LoRA"
        case .prefix: return "prefix-tuning"
        }
    }

    /// The values the adapter added to the model's own modules: LoRA's factors (a module trained whole replaces
    /// its original, and a prefix stays outside the model). The model's parameter count less these is the base's.
    public var valuesAddedToModel: Int {
        guard case .lora(let l) = self else { return 0 }
        func count(_ tensors: [Tensor]) -> Int { tensors.reduce(0) { $0 + $1.count } }
        return count(l.peftTensors().map(\.tensor)) - count(l.savedModules.flatMap { $0.module.namedParameters().map(\.tensor) })
    }

    /// The modules the adapter changes, by path (none for a prefix).
    public var adaptedPaths: [String] {
        if case .lora(let l) = self { return l.paths }
        return []
    }
}

/// PEFT's one-line summary: `trainable params: 1,024 || all params: 191,808 || trainable%: 0.5339`.
public func trainableSummary(trainable: Int, total: Int) -> String {
    let percent = total == 0 ? 0 : 100 * Double(trainable) / Double(total)
    return "trainable params: \(trainable.formatted()) || all params: \(total.formatted()) || "
        + "trainable%: \(String(format: "%.4f", percent))"
}
