import FinchNN
import FinchTensor

/// An adapter applied to a model: LoRA layers injected into it, or a prefix passed to its attention.
public enum Adapter {
    case lora(LoRAAdapter)
    case prefix(PrefixTuning)

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

    public var kind: String {
        switch self {
        case .lora: return "LORA"
        case .prefix: return "PREFIX_TUNING"
        }
    }
}

/// PEFT's one-line summary: `trainable params: 1,024 || all params: 191,808 || trainable%: 0.5339`.
public func trainableSummary(trainable: Int, total: Int) -> String {
    let percent = total == 0 ? 0 : 100 * Double(trainable) / Double(total)
    return "trainable params: \(trainable.formatted()) || all params: \(total.formatted()) || trainable%: \(String(format: "%.4f", percent))"
}
