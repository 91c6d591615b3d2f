import Foundation
import FinchAdapters

/// Every recipe key: its type, meaning, the adapter type it belongs to and its range check (defaults are
/// `Recipe`'s). The loader, the override parser, `finch validate`, the resolved recipe a run saves, and the
/// README's recipe reference are all derived from this list.
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
    /// The adapter type the key configures; nil for keys every run has. Under another type it has no value.
    public let adapterType: AdapterSpec.Kind?
    public let read: @Sendable (Recipe) -> RecipeValue?
    let write: @Sendable (inout Recipe, RecipeValue) -> Void
    /// What is wrong with the recipe's value of this key (it may compare others), or nil when it is in range.
    let check: @Sendable (Recipe) -> String?
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
    typealias Check<T> = @Sendable (T, Recipe) -> String?

    /// A field of type `T`: `get` gives its value (nil: not set, or a key of another adapter type), `set` stores one.
    static func field<T>(_ key: String, _ kind: RecipeField.Kind, _ summary: String, required: Bool = false,
                         adapter: AdapterSpec.Kind? = nil, wrap: @escaping @Sendable (T) -> RecipeValue,
                         unwrap: @escaping @Sendable (RecipeValue) -> T?,
                         _ get: @escaping @Sendable (Recipe) -> T?, _ set: @escaping @Sendable (inout Recipe, T) -> Void,
                         check: Check<T>? = nil) -> RecipeField {
        RecipeField(key: key, kind: kind, required: required, summary: summary, adapterType: adapter,
                    read: { get($0).map(wrap) },
                    write: { r, v in if let x = unwrap(v) { set(&r, x) } },
                    check: { r in get(r).flatMap { check?($0, r) } })
    }
    static func s(_ k: String, _ summary: String, required: Bool = false, adapter: AdapterSpec.Kind? = nil,
                  _ get: @escaping @Sendable (Recipe) -> String?, _ set: @escaping @Sendable (inout Recipe, String) -> Void,
                  check: Check<String>? = nil) -> RecipeField {
        field(k, .string, summary, required: required, adapter: adapter, wrap: RecipeValue.string,
              unwrap: { if case .string(let x) = $0 { x } else { nil } }, get, set, check: check)
    }
    static func i(_ k: String, _ summary: String, adapter: AdapterSpec.Kind? = nil,
                  _ get: @escaping @Sendable (Recipe) -> Int?,
                  _ set: @escaping @Sendable (inout Recipe, Int) -> Void, check: Check<Int>? = nil) -> RecipeField {
        field(k, .int, summary, adapter: adapter, wrap: RecipeValue.int,
              unwrap: { if case .int(let x) = $0 { x } else { nil } }, get, set, check: check)
    }
    static func f(_ k: String, _ summary: String, adapter: AdapterSpec.Kind? = nil,
                  _ get: @escaping @Sendable (Recipe) -> Double?,
                  _ set: @escaping @Sendable (inout Recipe,
                                              Double) -> Void, check: Check<Double>? = nil) -> RecipeField {
        field(k, .float, summary, adapter: adapter, wrap: RecipeValue.float,
              unwrap: { if case .float(let x) = $0 { x } else { nil } }, get, set, check: check)
    }
    static func b(_ k: String, _ summary: String, adapter: AdapterSpec.Kind? = nil,
                  _ get: @escaping @Sendable (Recipe) -> Bool?,
                  _ set: @escaping @Sendable (inout Recipe, Bool) -> Void) -> RecipeField {
        field(k, .bool, summary, adapter: adapter, wrap: RecipeValue.bool,
              unwrap: { if case .bool(let x) = $0 { x } else { nil } }, get, set)
    }
    static func strings(_ k: String, _ summary: String, adapter: AdapterSpec.Kind? = nil,
                        _ get: @escaping @Sendable (Recipe) -> [String]?, _ set: @escaping @Sendable (inout Recipe, [String]) -> Void,
                        check: Check<[String]>? = nil) -> RecipeField {
        field(k, .stringList, summary, adapter: adapter, wrap: RecipeValue.strings,
              unwrap: { if case .strings(let x) = $0 { x } else { nil } }, get, set, check: check)
    }
    static func c<E: RawRepresentable & CaseIterable & Sendable>(
        _ k: String, _ summary: String, _ get: @escaping @Sendable (Recipe) -> E, _ set: @escaping @Sendable (inout Recipe, E) -> Void,
        check: Check<E>? = nil
    ) -> RecipeField where E.RawValue == String {
        field(k, .choice(E.allCases.map(\.rawValue)), summary, wrap: { RecipeValue.string($0.rawValue) },
              unwrap: { if case .string(let x) = $0 { E(rawValue: x) } else { nil } }, get, set, check: check)
    }

    static func positive<T: Comparable & Numeric>(_ v: T,
                                                  _: Recipe) -> String? { v > 0 ? nil : "must be positive, got \(v)" }
    static func notNegative<T: Comparable & Numeric>(_ v: T, _: Recipe) -> String? { v >= 0 ? nil : "must be 0 or positive, got \(v)" }

    /// Every key, in the order of the resolved recipe and of the checks.
    public static let fields: [RecipeField] = [
        s("model", "Base model: a Hugging Face folder (config.json, model.safetensors, tokenizer.json) or a GGUF file.",
          required: true,
          { $0.model }, { $0.model = $1 }),
        c("model_init", "pretrained (read model.safetensors) or random (transformers' initialisation, for pretraining; needs adapter.type none).",
          { $0.modelInit }, { $0.modelInit = $1 },
          check: { v, r in v == .pretrained || r.adapter == .none ? nil
              : "random initialisation trains the whole model; set adapter.type: none (an adapter over random weights learns nothing useful)" }),
        c("quantize", "How the frozen base is held: none (float32), keep (a GGUF file's own quantised blocks, the token table's too), nf4 (the decoder projections, as QLoRA), q8_0, q4_0 or q4_1 (the projections and a LLaMA token table), quantised at load. Adapters train in float32 over it.",
          { $0.quantize }, { $0.quantize = $1 },
          check: { v, r in v == .none || r.adapter != .none ? nil
              : "full fine-tuning trains every base weight in float32; set quantize: none (or train an adapter over the quantised base)" }),
        i("seed", "Seed for initialisation, dropout and shuffling.", { $0.seed }, { $0.seed = $1 }, check: notNegative),

        // The type first: the keys after it belong to one type each and have no value under another.
        c("adapter.type", "lora, prefix, or none (full fine-tuning: every base weight trains).", { $0.adapter.kind },
          { r, kind in if r.adapter.kind != kind { r.adapter = AdapterSpec(defaultsOf: kind) } }),
        i("adapter.rank", "LoRA rank r.", adapter: .lora, { $0.adapter.lora?.rank }, { $0.adapter.lora?.rank = $1 },
          check: positive),
        f("adapter.alpha", "LoRA alpha; the update is scaled by alpha / r (alpha / √r with rslora).", adapter: .lora,
          { $0.adapter.lora?.alpha }, { $0.adapter.lora?.alpha = $1 }, check: positive),
        f("adapter.dropout", "Dropout on the LoRA input during training.", adapter: .lora,
          { $0.adapter.lora?.dropout }, { $0.adapter.lora?.dropout = $1 },
          check: { v, _ in v >= 0 && v < 1 ? nil : "must be in [0, 1), got \(v)" }),
        strings("adapter.targets", "Modules LoRA wraps, by name (q_proj, v_proj, …, embed_tokens) or [all-linear] (every Linear but the head).",
                adapter: .lora, { r in
                    switch r.adapter.lora?.targets {
                    case .names(let names)?: return names
                    case .allLinear?: return ["all-linear"]
                    case .pattern?, nil: return nil
                    }
                }, { r, names in
                    // adapter.target_regex, when set, replaces the names whichever comes first.
                    if case .pattern? = r.adapter.lora?.targets { return }
                    r.adapter.lora?.targets = names == ["all-linear"] ? .allLinear : .names(names)
                }, check: { v, _ in v.isEmpty ? "must name at least one module" : nil }),
        s("adapter.target_regex", "A regular expression over full module paths; replaces adapter.targets when set.",
          adapter: .lora,
          { if case .pattern(let p)? = $0.adapter.lora?.targets { p } else { nil } }, { $0.adapter.lora?.targets = .pattern($1) },
          check: { v, _ in (try? NSRegularExpression(pattern: v)) != nil ? nil : "'\(v)' is not a valid regular expression" }),
        field("adapter.layers", .intList, "Only these layer indices get LoRA (default: all).", adapter: .lora,
              wrap: RecipeValue.ints,
              unwrap: { if case .ints(let x) = $0 { x } else { nil } },
              { $0.adapter.lora?.layersToTransform }, { $0.adapter.lora?.layersToTransform = $1 }),
        b("adapter.rslora", "Scale by alpha / √r (rank-stabilised LoRA).", adapter: .lora,
          { $0.adapter.lora?.useRSLoRA }, { $0.adapter.lora?.useRSLoRA = $1 }),
        b("adapter.dora", "DoRA (PEFT's use_dora): a trained magnitude per output row rescales the LoRA-updated weight's normalised rows (on the token table: a magnitude per embedding dimension).",
          adapter: .lora, { $0.adapter.lora?.useDoRA }, { $0.adapter.lora?.useDoRA = $1 }),
        strings("adapter.modules_to_save",
                "LoRA: modules trained whole and saved in the adapter (PEFT's modules_to_save), e.g. [embed_tokens].",
                adapter: .lora, { $0.adapter.lora?.modulesToSave }, { $0.adapter.lora?.modulesToSave = $1 }),
        b("adapter.ensure_weight_tying", "With embed_tokens among the targets of a model whose head is tied to it: the head reads the adapted table too (PEFT's ensure_weight_tying); otherwise the head keeps the base table.",
          adapter: .lora, { $0.adapter.lora?.ensureWeightTying }, { $0.adapter.lora?.ensureWeightTying = $1 }),
        field("adapter.init", .choice(["kaiming", "gaussian"]),
              "LoRA A initialisation: kaiming (uniform) or gaussian; B starts at zero.",
              adapter: .lora, wrap: RecipeValue.string, unwrap: { if case .string(let x) = $0 { x } else { nil } },
              { r in r.adapter.lora.map { $0.initialization == .gaussian ? "gaussian" : "kaiming" } },
              { r, name in r.adapter.lora?.initialization = name == "gaussian" ? .gaussian : .kaimingUniform }),
        i("adapter.virtual_tokens", "Prefix tuning: virtual key/value positions per layer.", adapter: .prefix,
          { $0.adapter.prefix?.virtualTokens }, { $0.adapter.prefix?.virtualTokens = $1 }, check: positive),
        i("adapter.projection_hidden",
          "Prefix tuning: width of the reparameterisation MLP (0 trains the table directly).", adapter: .prefix,
          { $0.adapter.prefix?.projectionHidden }, { $0.adapter.prefix?.projectionHidden = $1 }, check: notNegative),

        s("data.train",
          "Training data file: .txt (plain text), .jsonl with \"text\", with \"prompt\"/\"completion\", or with \"messages\" (chat).",
          required: true, { $0.trainData }, { $0.trainData = $1 }),
        s("data.validation", "Validation data file, same formats (default: none).", { $0.validationData },
          { $0.validationData = $1 }),
        c("data.format", "auto (by extension and fields), text, jsonl, completion (loss on the completion only), or chat (conversations in the model's chat template, loss on the assistant's replies).",
          { $0.dataFormat }, { $0.dataFormat = $1 }),
        c("data.loss_on", "Chat data: assistant (every assistant reply trains) or last_assistant (only the last; the earlier turns are context).",
          { $0.chatLoss }, { $0.chatLoss = $1 }),
        i("data.seq_len", "Tokens per training sequence (a batch runs only as far as its last target, not through the padding after it).",
          { $0.sequenceLength }, { $0.sequenceLength = $1 }, check: { v, _ in v >= 2 ? nil : "must be at least 2, got \(v)" }),
        b("data.packing", "Pack whole JSON-lines records into each sequence, never splitting one that fits; each attends only to itself (false: one record per sequence, padded).",
          { $0.packing }, { $0.packing = $1 }),
        b("data.shuffle", "Shuffle sequences each epoch (seeded by seed and epoch).", { $0.shuffle },
          { $0.shuffle = $1 }),

        s("distill.teacher", "Distillation: a model the student learns from (a Hugging Face folder or a GGUF file, frozen, the student's tokenizer). The loss becomes alpha · T² · KL(teacher_T ‖ student_T) + (1 − alpha) · cross-entropy on the positions that train.",
          { $0.distillTeacher }, { $0.distillTeacher = $1 }),
        s("distill.teacher_adapter", "A PEFT adapter folder applied to the teacher (LoRA merged into it, or a prefix).",
          { $0.distillTeacherAdapter }, { $0.distillTeacherAdapter = $1 },
          check: { _, r in r.distillTeacher == nil ? "needs distill.teacher" : nil }),
        f("distill.temperature", "Distillation temperature T: both distributions are softmax(logits / T).",
          { $0.distillTemperature }, { $0.distillTemperature = $1 }, check: positive),
        f("distill.alpha", "Distillation weight: alpha on the teacher's term, 1 − alpha on cross-entropy (0: the plain loss, the teacher unused).",
          { $0.distillAlpha }, { $0.distillAlpha = $1 },
          check: { v, _ in v >= 0 && v <= 1 ? nil : "must be between 0 and 1, got \(v)" }),

        f("privacy.noise_multiplier", "Differential privacy (DP-SGD, as Opacus): σ, the Gaussian noise on the sum of clipped per-example gradients is σ · privacy.max_grad_norm. Setting it (or privacy.target_epsilon) turns privacy on: batches are Poisson-sampled (each example joins with probability training.batch_size · training.grad_accum / N), each example's gradient is clipped on its own, and ε is reported at every log line and in RUN_DIR/privacy.json.",
          { $0.privacyNoiseMultiplier }, { $0.privacyNoiseMultiplier = $1 },
          check: { v, r in v < 0 ? "must be 0 or positive, got \(v)"
              : r.privacyTargetEpsilon != nil ? "give privacy.noise_multiplier or privacy.target_epsilon, not both" : nil }),
        f("privacy.target_epsilon", "Differential privacy: choose σ so that the whole run (every step) is (ε, δ)-private by the RDP accountant, as Opacus' get_noise_multiplier does.",
          { $0.privacyTargetEpsilon }, { $0.privacyTargetEpsilon = $1 }, check: positive),
        f("privacy.max_grad_norm", "Differential privacy: each example's gradient (every trainable tensor together) is clipped to this L2 norm. Under privacy optimizer.max_grad_norm is not applied.",
          { $0.privacyEnabled || $0.privacyMaxGradNorm != 1 ? $0.privacyMaxGradNorm : nil }, { $0.privacyMaxGradNorm = $1 },
          check: { v, r in v <= 0 ? "must be positive, got \(v)"
              : !r.privacyEnabled ? "clips per example only under privacy; set privacy.noise_multiplier or privacy.target_epsilon" : nil }),
        f("privacy.delta", "Differential privacy: δ of the (ε, δ) guarantee (default 1 / the number of training examples).",
          { $0.privacyDelta }, { $0.privacyDelta = $1 },
          check: { v, r in !(v > 0 && v < 1) ? "must be between 0 and 1, got \(v)"
              : !r.privacyEnabled ? "needs privacy.noise_multiplier or privacy.target_epsilon" : nil }),

        f("optimizer.lr", "Peak learning rate of AdamW.", { $0.learningRate }, { $0.learningRate = $1 },
          check: positive),
        field("optimizer.betas", .floatPair, "AdamW beta1, beta2.", wrap: RecipeValue.floats,
              unwrap: { if case .floats(let x) = $0 { x } else { nil } }, { $0.betas }, { $0.betas = $1 },
              check: { v, _ in v.allSatisfy { $0 >= 0 && $0 < 1 } ? nil : "each must be in [0, 1), got \(v)" }),
        f("optimizer.eps", "AdamW epsilon.", { $0.epsilon }, { $0.epsilon = $1 }, check: positive),
        f("optimizer.weight_decay", "Decoupled weight decay (PyTorch AdamW) on every trainable tensor.",
          { $0.weightDecay }, { $0.weightDecay = $1 }, check: notNegative),
        c("optimizer.schedule",
          "Learning-rate schedule after warmup: constant, linear (to min_lr) or cosine (to min_lr).",
          { $0.schedule }, { $0.schedule = $1 }),
        i("optimizer.warmup_steps", "Linear warmup: lr·(step+1)/warmup_steps for the first warmup_steps steps.",
          { $0.warmupSteps }, { $0.warmupSteps = $1 }, check: notNegative),
        f("optimizer.min_lr", "The floor linear and cosine decay end at.", { $0.minimumLearningRate },
          { $0.minimumLearningRate = $1 },
          check: { v, r in v >= 0 && v <= r.learningRate ? nil : "must be between 0 and optimizer.lr (\(r.learningRate)), got \(v)" }),
        f("optimizer.max_grad_norm", "Clip gradients to this global L2 norm (0: no clipping).", { $0.maxGradNorm },
          { $0.maxGradNorm = $1 },
          check: { v, _ in v >= 0 ? nil : "must be 0 (off) or positive, got \(v)" }),

        i("training.batch_size", "Sequences per micro-batch (no more than data.train gives).", { $0.batchSize },
          { $0.batchSize = $1 },
          check: positive),
        i("training.grad_accum", "Micro-batches accumulated per optimizer step.", { $0.gradientAccumulation },
          { $0.gradientAccumulation = $1 }, check: positive),
        b("training.activation_checkpointing",
          "Recompute each decoder layer's activations (all but the last layer's) in the backward pass instead of keeping them: far less memory, about a third more time.",
          { $0.activationCheckpointing }, { $0.activationCheckpointing = $1 }),
        i("training.steps", "Optimizer steps to run (default: from training.epochs).", { $0.steps }, { $0.steps = $1 },
          check: positive),
        f("training.epochs", "Passes over the training data, when training.steps is not given (default 1).",
          { $0.epochs }, { $0.epochs = $1 },
          check: { v, r in v <= 0 ? "must be positive, got \(v)" : r.steps != nil ? "give training.steps or training.epochs, not both" : nil }),

        i("eval.every", "Evaluate on data.validation every N steps (0: only at the end).", { $0.evalEvery },
          { $0.evalEvery = $1 },
          check: { v, r in v < 0 ? "must be 0 or positive, got \(v)"
              : v > 0 && r.validationData == nil ? "evaluates on data.validation, which is not set" : nil }),
        i("eval.max_batches", "Evaluate on at most this many validation batches (default: all).", { $0.evalBatches },
          { $0.evalBatches = $1 },
          check: { v, r in v <= 0 ? "must be positive, got \(v)"
              : r.validationData == nil ? "limits evaluation on data.validation, which is not set" : nil }),

        i("checkpoint.every", "Write a checkpoint every N steps (0: only at the end).", { $0.checkpointEvery },
          { $0.checkpointEvery = $1 },
          check: notNegative),
        i("checkpoint.keep", "Complete checkpoints kept; older ones are removed once a newer one is complete.",
          { $0.checkpointKeep }, { $0.checkpointKeep = $1 }, check: { v, _ in v >= 1 ? nil : "must be at least 1, got \(v)" }),

        i("logging.every", "Log a metrics line every N steps.", { $0.logEvery }, { $0.logEvery = $1 },
          check: { v, _ in v >= 1 ? nil : "must be at least 1, got \(v)" }),
        c("logging.progress", "auto (a bar on a terminal, lines otherwise), bar, or plain.", { $0.progress },
          { $0.progress = $1 }),
        c("logging.loss_scale", "The loss axis of RUN_DIR/loss.svg: linear or log.", { $0.lossScale }, { $0.lossScale = $1 }),

        s("output.dir", "Run directory (default: runs/ + the recipe file's name).",
          { $0.outputDirectory.isEmpty ? nil : $0.outputDirectory },
          { $0.outputDirectory = $1 }),
        b("output.export_merged", "Also write the merged model at the end: RUN_DIR/merged (Hugging Face folder) or, for a GGUF base, RUN_DIR/merged.gguf.",
          { $0.exportMerged }, { $0.exportMerged = $1 }),
        c("output.export_dtype", "dtype of the merged export: float32, float16 or bfloat16.", { $0.exportType },
          { $0.exportType = $1 }),
    ]

    public static let byKey: [String: RecipeField] = Dictionary(uniqueKeysWithValues: fields.map { ($0.key, $0) })

    /// The recipe key of an adapter setting an `AdapterError` names.
    static func key(of setting: AdapterError.Setting, in spec: AdapterSpec) -> String {
        switch setting {
        case .rank: return "adapter.rank"
        case .targets:
            if case .pattern? = spec.lora?.targets { return "adapter.target_regex" }
            return "adapter.targets"
        case .layers: return "adapter.layers"
        case .modulesToSave: return "adapter.modules_to_save"
        case .virtualTokens: return "adapter.virtual_tokens"
        case .projectionHidden: return "adapter.projection_hidden"
        }
    }
}
