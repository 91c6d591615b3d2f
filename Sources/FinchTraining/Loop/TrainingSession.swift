import Foundation
import FinchAdapters
import FinchFormats
import FinchModels
import FinchNN
import FinchTensor

/// Everything a recipe sets up before the first step: the model with its adapter, the data, the
/// trainable tensors by name, the optimizer and the schedule. It wires the layers together; what an adapter
/// is and how it is built belongs to FinchAdapters (`Adapter.make`), what a key means to `RecipeSchema`.
public final class TrainingSession {
    public let loaded: LoadedRecipe
    public var recipe: Recipe { loaded.recipe }
    public let model: any CausalLanguageModel
    /// The frozen model distillation learns from (nil: no distillation, or distill.alpha 0).
    public let teacher: (any CausalLanguageModel)?
    /// nil for full fine-tuning.
    public let adapter: Adapter?
    /// The tensors that train, by stable name (optimizer state and checkpoints use these names).
    public let trainable: [(name: String, tensor: Tensor)]
    public let trainData: TrainingData
    public let validationData: TrainingData?
    public let totalSteps: Int
    /// DP-SGD's settings (nil: the run is not private).
    public let privacy: PrivacySettings?
    public let optimizer: AdamW
    public let schedule: LearningRateSchedule
    public let totalParameterCount: Int

    /// The session of a recipe: its model folder and data files read, the adapter made.
    public convenience init(_ loaded: LoadedRecipe) throws {
        let r = loaded.recipe
        let base: PretrainedModel
        let tokenizer: Tokenizer
        do {
            base = try PretrainedModel.load(r.model, requireTokenizer: true,
                                            randomSeed: r.modelInit == .random ? UInt64(r.seed) &+ 0x5EED : nil,
                                            quantization: r.quantize)
            tokenizer = try base.requireTokenizer()
        } catch let error as FormatError {
            throw RecipeError(file: loaded.file, line: loaded.lines["model"], "model: \(error)")
        }
        let model = base.model
        let teacher = try Self.loadTeacher(loaded, studentTokenizer: tokenizer, studentVocabulary: model.outputWeight.vocabulary)
        let adapter = try Self.makeAdapter(loaded, model: model)
        let eos = Int32(model.config.eosTokenIds.first ?? 0)
        func data(_ key: String, _ path: String) throws -> TrainingData {
            guard FileManager.default.fileExists(atPath: path) else {
                throw RecipeError(file: loaded.file, line: loaded.lines[key], "\(key): file '\(path)' does not exist")
            }
            let chat = TrainingData.Chat(format: { try base.chatFormat() }, loss: r.chatLoss)
            return try TrainingData.load(path: path, format: r.dataFormat, tokenizer: tokenizer,
                                         sequenceLength: r.sequenceLength, packing: r.packing, endOfText: eos, chat: chat)
        }
        // Before the data is laid out in windows of data.seq_len tokens.
        try Self.checkPositions(loaded, model: model, adapter: adapter)
        let trainData = try data("data.train", r.trainData)
        let validationData = try r.validationData.map { try data("data.validation", $0) }
        try self.init(loaded, model: model, adapter: adapter, trainData: trainData, validationData: validationData,
                      teacher: teacher)
    }

    /// distill.teacher loaded (with distill.teacher_adapter applied), frozen, in evaluation mode; nil without one or
    /// with distill.alpha 0. Its tokenizer must be the student's, token for token.
    static func loadTeacher(_ loaded: LoadedRecipe, studentTokenizer: Tokenizer,
                            studentVocabulary: Int) throws -> (any CausalLanguageModel)? {
        let r = loaded.recipe
        guard let path = r.distillTeacher, r.distillAlpha > 0 else { return nil }
        let teacher: PretrainedModel
        do {
            teacher = try PretrainedModel.load(path, requireTokenizer: true)
            let tokenizer = try teacher.requireTokenizer()
            if tokenizer.vocabularySize != studentTokenizer.vocabularySize {
                throw FormatError(file: path, "its tokenizer has \(tokenizer.vocabularySize) tokens, the student's (model) \(studentTokenizer.vocabularySize): teacher and student must share a tokenizer")
            }
            if teacher.model.outputWeight.vocabulary != studentVocabulary {
                throw FormatError(file: path, "its head makes \(teacher.model.outputWeight.vocabulary) logits, the student's (model) \(studentVocabulary): teacher and student must share a vocabulary")
            }
            if let id = (0..<tokenizer.vocabularySize).first(where: { tokenizer.token(of: $0) != studentTokenizer.token(of: $0) }) {
                throw FormatError(file: path, "its token \(id) is \(tokenizer.token(of: id).map { "'\($0)'" } ?? "missing"), the student's (model) \(studentTokenizer.token(of: id).map { "'\($0)'" } ?? "missing"): teacher and student must share a tokenizer")
            }
        } catch let error as FormatError {
            throw RecipeError(file: loaded.file, line: loaded.lines["distill.teacher"], "distill.teacher: \(error)")
        }
        if let adapterPath = r.distillTeacherAdapter {
            do {
                let adapter = try PEFTFormat.load(adapterPath, into: teacher.model)
                if case .lora(let lora) = adapter { try lora.mergeAndUnload(from: teacher.model) }
                if case .prefix = adapter {
                    throw FormatError(file: adapterPath, "a prefix-tuning teacher is not supported; give a LoRA adapter or a merged model")
                }
            } catch let error as FormatError {
                throw RecipeError(file: loaded.file, line: loaded.lines["distill.teacher_adapter"], "distill.teacher_adapter: \(error)")
            } catch let error as AdapterError {
                throw RecipeError(file: loaded.file, line: loaded.lines["distill.teacher_adapter"], "distill.teacher_adapter: \(error.message)")
            }
        }
        teacher.model.freeze()
        teacher.model.eval()
        return teacher.model
    }

    /// A session over a model already built (an adapter in it made by `makeAdapter`) and data already read,
    /// as the benchmark has them; the recipe gives everything else.
    public init(_ loaded: LoadedRecipe, model: any CausalLanguageModel, adapter: Adapter?, trainData: TrainingData,
                validationData: TrainingData?, teacher: (any CausalLanguageModel)? = nil) throws {
        self.loaded = loaded
        let r = loaded.recipe
        self.model = model
        self.teacher = teacher
        self.adapter = adapter
        trainable = Adapter.trainableTensors(adapter, in: model)
        model.checkpointsActivations = r.activationCheckpointing
        // PEFT's count: the base model's parameters and the adapter's (a module trained whole counts twice).
        let baseCount = model.parameterCount - (adapter?.valuesAddedToModel ?? 0)
        totalParameterCount = baseCount + (adapter == nil ? 0 : trainable.reduce(0) { $0 + $1.tensor.count })
        try Self.checkPositions(loaded, model: model, adapter: adapter)
        self.trainData = trainData
        self.validationData = validationData
        // A batch larger than the data would hold the same sequences twice: refused, as mlx-lm does.
        guard trainData.sequences.count >= r.batchSize else {
            let n = trainData.sequences.count
            throw RecipeError(file: loaded.file, line: loaded.lines["training.batch_size"],
                              "training.batch_size: \(r.batchSize) is more than the \(n) sequence\(n == 1 ? "" : "s") of up to "
                                + "\(r.sequenceLength) tokens that data.train ('\(r.trainData)') gives, so each batch would repeat "
                                + "sequences; use training.batch_size=\(n) or less, or more data")
        }
        // The same with gradient accumulation: a step of more sequences than the data holds repeats some.
        let (sequencesPerStep, tooMany) = r.batchSize.multipliedReportingOverflow(by: r.gradientAccumulation)
        guard !tooMany, sequencesPerStep <= trainData.sequences.count else {
            let n = trainData.sequences.count, step = tooMany ? "more than can be counted" : "\(sequencesPerStep)"
            throw RecipeError(file: loaded.file, line: loaded.lines["training.grad_accum"],
                              "training.grad_accum: \(r.gradientAccumulation) batches of \(r.batchSize) make \(step) sequences "
                                + "a step, more than the \(n) that data.train ('\(r.trainData)') gives, so each step would repeat "
                                + "sequences; use training.grad_accum=\(max(1, n / r.batchSize)) or less, or more data")
        }
        let epochSteps = (Double(trainData.sequences.count) * (r.epochs ?? 1) / Double(sequencesPerStep)).rounded(.up)
        guard r.steps != nil || epochSteps < 1e15 else {
            throw RecipeError(file: loaded.file, line: loaded.lines["training.epochs"],
                              "training.epochs: \(r.epochs ?? 1) passes over \(trainData.sequences.count) sequences make "
                                + "\(epochSteps) steps; give a number of epochs a run can finish")
        }
        totalSteps = r.steps ?? max(1, Int(epochSteps))
        privacy = try Self.privacySettings(loaded, data: trainData, steps: totalSteps)
        optimizer = AdamW(parameters: trainable, betas: (Float(r.betas[0]), Float(r.betas[1])),
                          epsilon: Float(r.epsilon), weightDecay: Float(r.weightDecay))
        schedule = LearningRateSchedule(kind: r.schedule, peak: r.learningRate, floor: r.minimumLearningRate,
                                        warmupSteps: r.warmupSteps, totalSteps: totalSteps)
    }

    /// The recipe's `privacy:` section resolved against the data: q = batch_size · grad_accum / N, δ = 1 / N unless
    /// given, σ chosen for privacy.target_epsilon over `steps` steps when that is what the recipe gives.
    static func privacySettings(_ loaded: LoadedRecipe, data: TrainingData, steps: Int) throws -> PrivacySettings? {
        let r = loaded.recipe
        guard r.privacyEnabled else { return nil }
        // The guarantee is per sequence: a packed window of several records would protect the window, not each record.
        if r.packing && data.format != .text && data.format != .auto {
            throw RecipeError(file: loaded.file, line: loaded.lines["data.packing"],
                              "data.packing: privacy protects each training sequence, and packing puts several records in one; set data.packing: false so that each record is its own sequence")
        }
        let n = data.sequences.count, expected = r.batchSize * r.gradientAccumulation
        let rate = Double(expected) / Double(n), delta = r.privacyDelta ?? 1 / Double(n)
        var sigma = r.privacyNoiseMultiplier ?? 0
        if let target = r.privacyTargetEpsilon {
            guard let chosen = RDPAccountant.noiseMultiplier(targetEpsilon: target, delta: delta, sampleRate: rate,
                                                             steps: steps) else {
                throw RecipeError(file: loaded.file, line: loaded.lines["privacy.target_epsilon"],
                                  "privacy.target_epsilon: no noise multiplier up to 10⁶ keeps \(steps) steps at sampling rate \(rate) within ε \(target) (δ \(delta)); allow a larger ε, fewer steps or a smaller batch")
            }
            sigma = chosen
        }
        return PrivacySettings(noiseMultiplier: sigma, maxGradNorm: r.privacyMaxGradNorm, delta: delta,
                               sampleRate: rate, expectedBatchSize: expected, targetEpsilon: r.privacyTargetEpsilon)
    }

    /// The recipe's adapter made in `model` (seeded by the recipe's seed); an error names the recipe key at fault.
    public static func makeAdapter(_ loaded: LoadedRecipe, model: any CausalLanguageModel) throws -> Adapter? {
        var generator = RandomGenerator(seed: UInt64(loaded.recipe.seed))
        do {
            return try Adapter.make(loaded.recipe.adapter, in: model, generator: &generator)
        } catch let error as AdapterError {
            let key = error.setting.map { RecipeSchema.key(of: $0, in: loaded.recipe.adapter) } ?? "adapter.type"
            throw RecipeError(file: loaded.file, line: loaded.lines[key], "\(key): \(error.message)")
        }
    }

    /// A prefix's virtual tokens and a sequence of data.seq_len tokens must both fit the model's positions.
    static func checkPositions(_ loaded: LoadedRecipe, model: any CausalLanguageModel, adapter: Adapter?) throws {
        let r = loaded.recipe, positions = model.config.maxPositions
        let reserved = adapter?.attentionPrefix?.length ?? 0
        guard r.sequenceLength <= positions - reserved else {
            let key = reserved > 0 && r.sequenceLength <= positions ? "adapter.virtual_tokens" : "data.seq_len"
            let what = reserved > 0 ? "\(reserved) virtual tokens and data.seq_len \(r.sequenceLength) exceed"
                : "\(r.sequenceLength) exceeds"
            throw RecipeError(file: loaded.file, line: loaded.lines[key],
                              "\(key): \(what) the model's \(positions) positions")
        }
    }

    public var trainableParameterCount: Int { trainable.reduce(0) { $0 + $1.tensor.count } }

    /// PEFT's summary line; over a quantised base, a second line with what the weights are stored as and the
    /// bytes each kind takes.
    public var parameterSummary: String {
        let summary = trainableSummary(trainable: trainableParameterCount, total: totalParameterCount)
        let storage = QuantizedBase.storage(of: model)
        guard storage.contains(where: { $0.format != "f32" }) else { return summary }
        let kinds = storage.map { "\($0.format) \($0.tensors) tensors \(String(format: "%.1f", Double($0.bytes) / 1_048_576)) MB" }
        return summary + "\nweights: " + kinds.joined(separator: ", ")
    }

    /// Next-token loss of a batch of sequences (targets masked where the data says so). The batch runs only as
    /// far as its last target: the padding after it changes no loss (attention is causal), so a batch of short
    /// records costs its longest one, not data.seq_len, as transformers' padding collators have it.
    func loss(_ batch: [TokenSequence]) throws -> (loss: Tensor, targets: Int, positions: Int) {
        let (t, tokens, targets) = layout(batch)
        // Packed records attend only within themselves; a sequence without records is one (it starts at 0).
        let starts = batch.contains { $0.recordStarts != nil }
            ? batch.flatMap { $0.recordStarts?.prefix(t) ?? [Int32](repeating: 0, count: t)[...] } : nil
        let teacher = try self.teacher?.distillationTeacher(tokens, batch: batch.count, length: t, recordStarts: starts,
                                                            temperature: Float(recipe.distillTemperature),
                                                            alpha: Float(recipe.distillAlpha))
        let loss = try model.loss(tokens, batch: batch.count, length: t, targets: targets,
                                  prefix: adapter?.attentionPrefix,
                                  recordStarts: starts, teacher: teacher)
        return (loss, targets.filter { $0 != Losses.ignoreIndex }.count, batch.count * t)
    }

    /// A batch as the model reads it: its length (as far as its last target), its tokens and next-token targets.
    func layout(_ batch: [TokenSequence]) -> (length: Int, tokens: [Int32], targets: [Int32]) {
        let t = batch.compactMap { $0.targetMask.lastIndex(of: true).map { $0 + 1 } }.max() ?? recipe.sequenceLength
        let tokens = batch.flatMap { $0.tokens.prefix(t) }
        let mask = batch.flatMap { $0.targetMask.prefix(t) }
        return (t, tokens, Losses.nextTokenTargets(tokens, batch: batch.count, length: t, mask: mask))
    }

    /// The targets of each sequence of `batch`, as `loss` counts them.
    func targetCounts(_ batch: [TokenSequence]) -> [Int] {
        let (t, _, targets) = layout(batch)
        return (0..<batch.count).map { i in targets[i * t..<(i + 1) * t].filter { $0 != Losses.ignoreIndex }.count }
    }

    /// Whether every trainable tensor is a LoRA matrix of a Linear layer, whose per-example gradients one batched
    /// backward pass can keep (`PerExampleGradients`); otherwise DP-SGD runs each example's backward pass alone.
    public var capturesPerExampleGradients: Bool {
        adapter?.attentionPrefix == nil
            && trainable.allSatisfy { $0.name.hasSuffix(".lora_A.weight") || $0.name.hasSuffix(".lora_B.weight") }
    }

    /// Mean validation loss over every predicted target (or the first `eval.max_batches` batches). Across the
    /// processes of a run each takes its share of the batches; every batch's sum comes back to all of them and
    /// they are added in batch order, the same on any number of processes.
    func validationLoss(_ parallel: DataParallel = .single) throws -> Double? {
        guard let validationData else { return nil }
        let r = recipe, sequences = validationData.sequences
        let batches = min((sequences.count + r.batchSize - 1) / r.batchSize, r.evalBatches ?? .max)
        var local: [Int: [Float]] = [:]
        try GradientMode.withoutGradients {
            model.eval()
            defer { model.train() }
            for b in 0..<batches where parallel.owns(b) {
                let batch = Array(sequences[b * r.batchSize..<min((b + 1) * r.batchSize, sequences.count)])
                let (loss, targets, _) = try self.loss(batch)
                let sum = targets > 0 ? Double(try loss.item()) * Double(targets) : 0
                local[b] = Trainer.floats(carrying: sum) + Trainer.floats(carrying: Double(targets))
            }
        }
        var total = 0.0, count = 0.0
        for values in try parallel.gather(local, count: batches, width: 4) {
            guard let values else { throw DistributedError(message: "a validation batch came back from no rank") }
            total += Trainer.double(from: values[0], values[1])
            count += Trainer.double(from: values[2], values[3])
        }
        return count > 0 ? total / count : nil
    }
}
