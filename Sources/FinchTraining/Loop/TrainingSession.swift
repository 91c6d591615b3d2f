import Foundation
import FinchAdapters
import FinchFormats
import FinchModels
import FinchNN
import FinchTensor

/// Everything a recipe sets up before the first step: the model with its adapter, the data, the
/// trainable tensors by name, the optimizer and the schedule.
public final class TrainingSession {
    public let loaded: LoadedRecipe
    public var recipe: Recipe { loaded.recipe }
    public let folder: HuggingFaceFolder
    public var model: any CausalLanguageModel { folder.model }
    /// nil for full fine-tuning.
    public let adapter: Adapter?
    /// The tensors that train, by stable name (optimizer state and checkpoints use these names).
    public let trainable: [(name: String, tensor: Tensor)]
    public let trainData: TrainingData
    public let validationData: TrainingData?
    public let totalSteps: Int
    public let optimizer: AdamW
    public let schedule: LearningRateSchedule
    public let totalParameterCount: Int

    public init(_ loaded: LoadedRecipe) throws {
        self.loaded = loaded
        let r = loaded.recipe
        func located(_ key: String, _ error: Error) -> Error {
            if let e = error as? FormatError { return RecipeError(file: loaded.file, line: loaded.lines[key], "\(key): \(e)") }
            if let e = error as? AdapterError { return RecipeError(file: loaded.file, line: loaded.lines[key], "\(key): \(e.message)") }
            return error
        }
        do {
            folder = try HuggingFaceFolder.load(r.model, requireTokenizer: true,
                                                randomSeed: r.modelInit == .random ? UInt64(r.seed) &+ 0x5EED : nil)
        } catch {
            throw located("model", error)
        }
        let tokenizer = folder.tokenizer!
        let model = folder.model
        let baseCount = model.parameterCount
        var generator = RandomGenerator(seed: UInt64(r.seed))
        switch r.adapterType {
        case .lora:
            var configuration = LoRAConfiguration(
                rank: r.rank, alpha: Float(r.alpha), dropout: Float(r.dropout),
                targets: r.targetRegex.map { .pattern($0) } ?? (r.targets == ["all-linear"] ? .allLinear : .names(r.targets)),
                useRSLoRA: r.rsLoRA, layersToTransform: r.layers)
            configuration.initialization = r.initialization == .gaussian ? .gaussian : .kaimingUniform
            configuration.fanInFanOut = model.config.modelType == "gpt2"
            configuration.ensureWeightTying = r.ensureWeightTying
            configuration.modulesToSave = r.modulesToSave
            if let layers = r.layers, let missing = layers.first(where: { !(0..<model.layerCount).contains($0) }) {
                throw RecipeError(file: loaded.file, line: loaded.lines["adapter.layers"],
                                  "adapter.layers: this model has no layer \(missing) (its layers are 0–\(model.layerCount - 1))")
            }
            // Training holds each value four times (itself, its gradient, AdamW's two moments).
            // (A target that matches nothing is left to inject's error, which names the model's modules.)
            let memory = ModelSize.physicalMemoryBytes
            let counted: Int?
            do { counted = try LoRAAdapter.valueCount(in: model, configuration: configuration) } catch { counted = 0 }
            if (counted ?? Int.max) > memory / 16 {
                let values = counted.map { "\($0) values to train (\(ModelSize.gigabytes($0 &* 16)) with their gradients and AdamW's moments)" }
                throw RecipeError(file: loaded.file, line: loaded.lines["adapter.rank"],
                                  "adapter.rank: \(r.rank) gives the adapter \(values ?? "more values than can be counted"), more than this machine's \(ModelSize.gigabytes(memory)) of memory")
            }
            do {
                adapter = .lora(try LoRAAdapter.inject(into: model, configuration: configuration, seed: generator.next()))
            } catch {
                let targetsKey = r.targetRegex != nil ? "adapter.target_regex" : "adapter.targets"
                throw located((error as? AdapterError)?.setting == .modulesToSave ? "adapter.modules_to_save" : targetsKey, error)
            }
            trainable = model.trainableParameters()
        case .prefix:
            // Before the prefix is made: its tokens take positions, so this also bounds adapter.virtual_tokens.
            guard r.virtualTokens < model.config.maxPositions, r.sequenceLength <= model.config.maxPositions - r.virtualTokens else {
                throw RecipeError(file: loaded.file, line: loaded.lines["adapter.virtual_tokens"],
                                  "adapter.virtual_tokens: \(r.virtualTokens) virtual tokens and data.seq_len \(r.sequenceLength) exceed the model's \(model.config.maxPositions) positions")
            }
            model.freeze()
            let prefix: PrefixTuning
            do {
                prefix = try PrefixTuning(virtualTokenCount: r.virtualTokens, layerCount: model.layerCount,
                                          keyValueHeadCount: model.keyValueHeadCount, headDimension: model.headDimension,
                                          projectionHidden: r.projectionHidden > 0 ? r.projectionHidden : nil, generator: &generator)
            } catch {
                throw located(r.projectionHidden > 0 ? "adapter.projection_hidden" : "adapter.virtual_tokens", error)
            }
            adapter = .prefix(prefix)
            trainable = prefix.namedParameters().map { ("prefix." + $0.name, $0.tensor) }
        case .none:
            model.unfreeze()
            adapter = nil
            trainable = model.trainableParameters()
        }
        model.checkpointsActivations = r.activationCheckpointing
        totalParameterCount = baseCount + (adapter == nil ? 0 : trainable.reduce(0) { $0 + $1.tensor.count })

        let eos = Int32(model.config.eosTokenIds.first ?? 0)
        func data(_ key: String, _ path: String) throws -> TrainingData {
            guard FileManager.default.fileExists(atPath: path) else {
                throw RecipeError(file: loaded.file, line: loaded.lines[key], "\(key): file '\(path)' does not exist")
            }
            return try TrainingData.load(path: path, format: r.dataFormat, tokenizer: tokenizer, sequenceLength: r.sequenceLength,
                                         packing: r.packing, endOfText: eos)
        }
        // Before the data is laid out in windows of data.seq_len tokens.
        guard r.sequenceLength <= model.config.maxPositions - (r.adapterType == .prefix ? r.virtualTokens : 0) else {
            throw RecipeError(file: loaded.file, line: loaded.lines["data.seq_len"],
                              "data.seq_len: \(r.sequenceLength) exceeds the model's \(model.config.maxPositions) positions")
        }
        trainData = try data("data.train", r.trainData)
        validationData = try r.validationData.map { try data("data.validation", $0) }
        // A batch larger than the data would hold the same sequences twice: refused, as mlx-lm does.
        guard trainData.sequences.count >= r.batchSize else {
            let n = trainData.sequences.count
            throw RecipeError(file: loaded.file, line: loaded.lines["training.batch_size"],
                              "training.batch_size: \(r.batchSize) is more than the \(n) sequence\(n == 1 ? "" : "s") of up to \(r.sequenceLength) tokens that data.train ('\(r.trainData)') gives, so each batch would repeat sequences; use training.batch_size=\(n) or less, or more data")
        }
        // The same with gradient accumulation: a step of more sequences than the data holds repeats some.
        let (sequencesPerStep, tooMany) = r.batchSize.multipliedReportingOverflow(by: r.gradientAccumulation)
        guard !tooMany, sequencesPerStep <= trainData.sequences.count else {
            let n = trainData.sequences.count, step = tooMany ? "more than can be counted" : "\(sequencesPerStep)"
            throw RecipeError(file: loaded.file, line: loaded.lines["training.grad_accum"],
                              "training.grad_accum: \(r.gradientAccumulation) batches of \(r.batchSize) make \(step) sequences a step, more than the \(n) that data.train ('\(r.trainData)') gives, so each step would repeat sequences; use training.grad_accum=\(max(1, n / r.batchSize)) or less, or more data")
        }
        let epochSteps = (Double(trainData.sequences.count) * (r.epochs ?? 1) / Double(sequencesPerStep)).rounded(.up)
        guard r.steps != nil || epochSteps < 1e15 else {
            throw RecipeError(file: loaded.file, line: loaded.lines["training.epochs"],
                              "training.epochs: \(r.epochs ?? 1) passes over \(trainData.sequences.count) sequences make \(epochSteps) steps; give a number of epochs a run can finish")
        }
        totalSteps = r.steps ?? max(1, Int(epochSteps))
        optimizer = AdamW(parameters: trainable, betas: (Float(r.betas[0]), Float(r.betas[1])), epsilon: Float(r.epsilon),
                          weightDecay: Float(r.weightDecay))
        schedule = LearningRateSchedule(kind: r.schedule, peak: r.learningRate, floor: r.minimumLearningRate,
                                        warmupSteps: r.warmupSteps, totalSteps: totalSteps)
    }

    public var trainableParameterCount: Int { trainable.reduce(0) { $0 + $1.tensor.count } }

    /// PEFT's summary line.
    public var parameterSummary: String { trainableSummary(trainable: trainableParameterCount, total: totalParameterCount) }

    /// LoRA dropout generators by module path (saved in checkpoints so dropout resumes exactly).
    var dropoutGenerators: [(path: String, layer: LoRALinear)] {
        if case .lora(let l)? = adapter { return l.layers }
        return []
    }

    /// Next-token loss of a batch of sequences (targets masked where the data says so). The batch runs only as
    /// far as its last target: the padding after it changes no loss (attention is causal), so a batch of short
    /// records costs its longest one, not data.seq_len, as transformers' padding collators have it.
    func loss(_ batch: [TokenSequence]) throws -> (loss: Tensor, targets: Int, positions: Int) {
        let t = batch.compactMap { $0.targetMask.lastIndex(of: true).map { $0 + 1 } }.max() ?? recipe.sequenceLength
        let tokens = batch.flatMap { $0.tokens.prefix(t) }
        let mask = batch.flatMap { $0.targetMask.prefix(t) }
        let targets = Losses.nextTokenTargets(tokens, batch: batch.count, length: t, mask: mask)
        // Packed records attend only within themselves; a sequence without records is one (it starts at 0).
        let starts = batch.contains { $0.recordStarts != nil }
            ? batch.flatMap { $0.recordStarts?.prefix(t) ?? [Int32](repeating: 0, count: t)[...] } : nil
        let loss = try model.loss(tokens, batch: batch.count, length: t, targets: targets, prefix: adapter?.attentionPrefix,
                                  recordStarts: starts)
        return (loss, targets.filter { $0 != Losses.ignoreIndex }.count, batch.count * t)
    }

    /// Mean validation loss over every predicted target (or the first `eval.max_batches` batches).
    func validationLoss() throws -> Double? {
        guard let validationData else { return nil }
        return try GradientMode.withoutGradients {
            model.eval()
            defer { model.train() }
            var total = 0.0, count = 0
            var start = 0, batches = 0
            while start < validationData.sequences.count && batches < (recipe.evalBatches ?? .max) {
                let batch = Array(validationData.sequences[start..<min(start + recipe.batchSize, validationData.sequences.count)])
                let (loss, targets, _) = try self.loss(batch)
                if targets > 0 {
                    total += Double(try loss.item()) * Double(targets)
                    count += targets
                }
                start += recipe.batchSize
                batches += 1
            }
            return count > 0 ? total / Double(count) : nil
        }
    }
}
