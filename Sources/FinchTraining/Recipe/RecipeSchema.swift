/// Every recipe key: its type, default and meaning. The loader, the override parser, `finch validate`,
/// the resolved recipe a run saves, and the README's recipe reference are all derived from this list.
public struct RecipeField: Sendable {
    public enum Kind: Sendable, Equatable {
        case string, int, float, bool
        case stringList, intList, floatPair
        case choice([String])

        public var expected: String {
            switch self {
            case .string: return "a string"
            case .int: return "an integer"
            case .float: return "a number"
            case .bool: return "true or false"
            case .stringList: return "a list of strings"
            case .intList: return "a list of integers"
            case .floatPair: return "a list of two numbers"
            case .choice(let options): return "one of " + options.joined(separator: ", ")
            }
        }
    }

    public let key: String
    public let kind: Kind
    public let required: Bool
    public let summary: String
    public let read: @Sendable (Recipe) -> RecipeValue?
    let write: @Sendable (inout Recipe, RecipeValue) -> Void
}

/// A typed recipe value.
public enum RecipeValue: Equatable, Sendable, CustomStringConvertible {
    case string(String), int(Int), float(Double), bool(Bool)
    case strings([String]), ints([Int]), floats([Double])

    public var description: String {
        switch self {
        case .string(let s): return s.isEmpty ? "\"\"" : s
        case .int(let i): return "\(i)"
        case .float(let d): return Self.number(d)
        case .bool(let b): return "\(b)"
        case .strings(let l): return "[" + l.joined(separator: ", ") + "]"
        case .ints(let l): return "[" + l.map(String.init).joined(separator: ", ") + "]"
        case .floats(let l): return "[" + l.map(Self.number).joined(separator: ", ") + "]"
        }
    }

    static func number(_ d: Double) -> String {
        if d == d.rounded() && abs(d) < 1e15 { return String(format: "%.1f", d) }
        return "\(d)"
    }
}

public enum RecipeSchema {
    static func s(_ k: String, _ summary: String, required: Bool = false, _ get: @escaping @Sendable (Recipe) -> String?,
                  _ set: @escaping @Sendable (inout Recipe, String) -> Void) -> RecipeField {
        RecipeField(key: k, kind: .string, required: required, summary: summary, read: { get($0).map(RecipeValue.string) },
                    write: { r, v in if case .string(let x) = v { set(&r, x) } })
    }
    static func i(_ k: String, _ summary: String, _ get: @escaping @Sendable (Recipe) -> Int?,
                  _ set: @escaping @Sendable (inout Recipe, Int) -> Void) -> RecipeField {
        RecipeField(key: k, kind: .int, required: false, summary: summary, read: { get($0).map(RecipeValue.int) },
                    write: { r, v in if case .int(let x) = v { set(&r, x) } })
    }
    static func f(_ k: String, _ summary: String, _ get: @escaping @Sendable (Recipe) -> Double?,
                  _ set: @escaping @Sendable (inout Recipe, Double) -> Void) -> RecipeField {
        RecipeField(key: k, kind: .float, required: false, summary: summary, read: { get($0).map(RecipeValue.float) },
                    write: { r, v in if case .float(let x) = v { set(&r, x) } })
    }
    static func b(_ k: String, _ summary: String, _ get: @escaping @Sendable (Recipe) -> Bool,
                  _ set: @escaping @Sendable (inout Recipe, Bool) -> Void) -> RecipeField {
        RecipeField(key: k, kind: .bool, required: false, summary: summary, read: { .bool(get($0)) },
                    write: { r, v in if case .bool(let x) = v { set(&r, x) } })
    }
    static func c<E: RawRepresentable & CaseIterable & Sendable>(
        _ k: String, _ summary: String, _ get: @escaping @Sendable (Recipe) -> E, _ set: @escaping @Sendable (inout Recipe, E) -> Void
    ) -> RecipeField where E.RawValue == String {
        RecipeField(key: k, kind: .choice(E.allCases.map(\.rawValue)), required: false, summary: summary,
                    read: { .string(get($0).rawValue) },
                    write: { r, v in if case .string(let x) = v, let e = E(rawValue: x) { set(&r, e) } })
    }

    public static let fields: [RecipeField] = [
        s("model", "Base model: a Hugging Face folder (config.json, model.safetensors, tokenizer.json).", required: true,
          { $0.model }, { $0.model = $1 }),
        c("model_init", "pretrained (read model.safetensors) or random (transformers' initialisation, for pretraining; needs adapter.type none).",
          { $0.modelInit }, { $0.modelInit = $1 }),
        i("seed", "Seed for initialisation, dropout and shuffling.", { $0.seed }, { $0.seed = $1 }),

        c("adapter.type", "lora, prefix, or none (full fine-tuning: every base weight trains).", { $0.adapterType }, { $0.adapterType = $1 }),
        i("adapter.rank", "LoRA rank r.", { $0.rank }, { $0.rank = $1 }),
        f("adapter.alpha", "LoRA alpha; the update is scaled by alpha / r (alpha / √r with rslora).", { $0.alpha }, { $0.alpha = $1 }),
        f("adapter.dropout", "Dropout on the LoRA input during training.", { $0.dropout }, { $0.dropout = $1 }),
        RecipeField(key: "adapter.targets", kind: .stringList, required: false,
                    summary: "Modules LoRA wraps, by name (q_proj, v_proj, …, embed_tokens) or [all-linear] (every Linear but the head).",
                    read: { .strings($0.targets) }, write: { r, v in if case .strings(let x) = v { r.targets = x } }),
        s("adapter.target_regex", "A regular expression over full module paths; replaces adapter.targets when set.",
          { $0.targetRegex }, { $0.targetRegex = $1 }),
        RecipeField(key: "adapter.layers", kind: .intList, required: false,
                    summary: "Only these layer indices get LoRA (default: all).",
                    read: { $0.layers.map(RecipeValue.ints) }, write: { r, v in if case .ints(let x) = v { r.layers = x } }),
        b("adapter.rslora", "Scale by alpha / √r (rank-stabilised LoRA).", { $0.rsLoRA }, { $0.rsLoRA = $1 }),
        RecipeField(key: "adapter.modules_to_save", kind: .stringList, required: false,
                    summary: "LoRA: modules trained whole and saved in the adapter (PEFT's modules_to_save), e.g. [embed_tokens].",
                    read: { .strings($0.modulesToSave) }, write: { r, v in if case .strings(let x) = v { r.modulesToSave = x } }),
        b("adapter.ensure_weight_tying", "With embed_tokens among the targets of a model whose head is tied to it: the head reads the adapted table too (PEFT's ensure_weight_tying); otherwise the head keeps the base table.",
          { $0.ensureWeightTying }, { $0.ensureWeightTying = $1 }),
        c("adapter.init", "LoRA A initialisation: kaiming (uniform) or gaussian; B starts at zero.", { $0.initialization }, { $0.initialization = $1 }),
        i("adapter.virtual_tokens", "Prefix tuning: virtual key/value positions per layer.", { $0.virtualTokens }, { $0.virtualTokens = $1 }),
        i("adapter.projection_hidden", "Prefix tuning: width of the reparameterisation MLP (0 trains the table directly).",
          { $0.projectionHidden }, { $0.projectionHidden = $1 }),

        s("data.train", "Training data file: .txt (plain text), .jsonl with \"text\", or .jsonl with \"prompt\"/\"completion\".",
          required: true, { $0.trainData }, { $0.trainData = $1 }),
        s("data.validation", "Validation data file, same formats (default: none).", { $0.validationData }, { $0.validationData = $1 }),
        c("data.format", "auto (by extension and fields), text, jsonl, or completion (loss on the completion only).",
          { $0.dataFormat }, { $0.dataFormat = $1 }),
        i("data.seq_len", "Tokens per training sequence (a batch runs only as far as its last target, not through the padding after it).", { $0.sequenceLength }, { $0.sequenceLength = $1 }),
        b("data.packing", "Pack whole JSON-lines records into each sequence, never splitting one that fits; each attends only to itself (false: one record per sequence, padded).",
          { $0.packing }, { $0.packing = $1 }),
        b("data.shuffle", "Shuffle sequences each epoch (seeded by seed and epoch).", { $0.shuffle }, { $0.shuffle = $1 }),

        f("optimizer.lr", "Peak learning rate of AdamW.", { $0.learningRate }, { $0.learningRate = $1 }),
        RecipeField(key: "optimizer.betas", kind: .floatPair, required: false, summary: "AdamW beta1, beta2.",
                    read: { .floats($0.betas) }, write: { r, v in if case .floats(let x) = v { r.betas = x } }),
        f("optimizer.eps", "AdamW epsilon.", { $0.epsilon }, { $0.epsilon = $1 }),
        f("optimizer.weight_decay", "Decoupled weight decay (PyTorch AdamW) on every trainable tensor.", { $0.weightDecay }, { $0.weightDecay = $1 }),
        c("optimizer.schedule", "Learning-rate schedule after warmup: constant, linear (to min_lr) or cosine (to min_lr).",
          { $0.schedule }, { $0.schedule = $1 }),
        i("optimizer.warmup_steps", "Linear warmup: lr·(step+1)/warmup_steps for the first warmup_steps steps.",
          { $0.warmupSteps }, { $0.warmupSteps = $1 }),
        f("optimizer.min_lr", "The floor linear and cosine decay end at.", { $0.minimumLearningRate }, { $0.minimumLearningRate = $1 }),
        f("optimizer.max_grad_norm", "Clip gradients to this global L2 norm (0: no clipping).", { $0.maxGradNorm }, { $0.maxGradNorm = $1 }),

        i("training.batch_size", "Sequences per micro-batch (no more than data.train gives).", { $0.batchSize }, { $0.batchSize = $1 }),
        i("training.grad_accum", "Micro-batches accumulated per optimizer step.", { $0.gradientAccumulation }, { $0.gradientAccumulation = $1 }),
        b("training.activation_checkpointing",
          "Recompute each decoder layer's activations (all but the last layer's) in the backward pass instead of keeping them: far less memory, about a third more time.",
          { $0.activationCheckpointing }, { $0.activationCheckpointing = $1 }),
        i("training.steps", "Optimizer steps to run (default: from training.epochs).", { $0.steps }, { $0.steps = $1 }),
        f("training.epochs", "Passes over the training data, when training.steps is not given (default 1).", { $0.epochs }, { $0.epochs = $1 }),

        i("eval.every", "Evaluate on data.validation every N steps (0: only at the end).", { $0.evalEvery }, { $0.evalEvery = $1 }),
        i("eval.max_batches", "Evaluate on at most this many validation batches (default: all).", { $0.evalBatches }, { $0.evalBatches = $1 }),

        i("checkpoint.every", "Write a checkpoint every N steps (0: only at the end).", { $0.checkpointEvery }, { $0.checkpointEvery = $1 }),
        i("checkpoint.keep", "Complete checkpoints kept; older ones are removed once a newer one is complete.",
          { $0.checkpointKeep }, { $0.checkpointKeep = $1 }),

        i("logging.every", "Log a metrics line every N steps.", { $0.logEvery }, { $0.logEvery = $1 }),
        c("logging.progress", "auto (a bar on a terminal, lines otherwise), bar, or plain.", { $0.progress }, { $0.progress = $1 }),

        s("output.dir", "Run directory (default: runs/ + the recipe file's name).", { $0.outputDirectory.isEmpty ? nil : $0.outputDirectory },
          { $0.outputDirectory = $1 }),
        b("output.export_merged", "Also write the merged model (Hugging Face folder) to RUN_DIR/merged at the end.",
          { $0.exportMerged }, { $0.exportMerged = $1 }),
        c("output.export_dtype", "dtype of the merged export: float32, float16 or bfloat16.", { $0.exportType }, { $0.exportType = $1 }),
    ]

    public static let byKey: [String: RecipeField] = Dictionary(uniqueKeysWithValues: fields.map { ($0.key, $0) })

    /// The keys that configure one adapter type only: under another `adapter.type` they would change nothing.
    public static let adapterTypeOfKey: [String: Recipe.AdapterKind] = [
        "adapter.rank": .lora, "adapter.alpha": .lora, "adapter.dropout": .lora, "adapter.targets": .lora,
        "adapter.target_regex": .lora, "adapter.layers": .lora, "adapter.rslora": .lora, "adapter.modules_to_save": .lora,
        "adapter.ensure_weight_tying": .lora, "adapter.init": .lora,
        "adapter.virtual_tokens": .prefix, "adapter.projection_hidden": .prefix,
    ]
}
