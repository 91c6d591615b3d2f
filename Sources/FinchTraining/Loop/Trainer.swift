import Foundation
import FinchAdapters
import FinchFormats
import FinchModels
import FinchNN
import FinchTensor

/// What the loop reports while it runs (a terminal progress bar, log lines, or a test).
public enum TrainingEvent {
    case started(summary: String, totalSteps: Int, startStep: Int)
    case step(StepRecord)
    case evaluation(step: Int, loss: Double)
    case checkpoint(step: Int, path: String)
    /// Something the run goes on through but the user should know (a gradient that has vanished).
    case warning(String)
    case finished(runDirectory: String)
}

public struct TrainingError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// Runs a recipe: a loop that reads top to bottom (learning rate; forward and backward over the
/// accumulated micro-batches; clip; step; zero), with evaluation, logging and checkpoints at their
/// intervals, resumable exactly from any complete checkpoint.
public final class Trainer {
    public let session: TrainingSession
    public let runDirectory: String
    private var loader: BatchLoader
    private var startStep: Int
    /// The leader's log (nil on the other ranks).
    private let metrics: MetricsLog?
    /// The training data's fingerprint, written into every checkpoint (hashed once, not at each one).
    private let dataFingerprint: String
    /// One process trains in a run directory at a time: a second one would prune the first's checkpoints.
    /// Held by rank 0 (or the only process); the other ranks of an mpirun only read the run directory.
    private let lock: FileLock?
    /// The processes this run shares its steps with (one, without mpirun).
    public let parallel: DataParallel
    /// A private run's ε so far, restored from the checkpoint a run resumes.
    var accountant: RDPAccountant
    /// A private run's per-example clipped sum (allocated once, used by every step).
    lazy var clippedSum = ClippedGradientSum(parameters: session.trainable)

    /// The run directory's lock, taken before anything in it is read or changed.
    static func lock(_ runDirectory: String) throws -> FileLock {
        try FileLock((runDirectory as NSString).appendingPathComponent(".lock"), guarding: runDirectory)
    }

    /// A fresh run. Refuses a run directory that already holds checkpoints (resume it instead).
    public static func start(_ loaded: LoadedRecipe, parallel: DataParallel = .single) throws -> Trainer {
        try checkFresh(loaded.recipe.outputDirectory)
        // The session first: a recipe that cannot run (a missing model, bad data) leaves no run directory behind.
        return try start(TrainingSession(loaded), parallel: parallel)
    }

    /// A fresh run of a session already made (the benchmark's, over a model built in memory).
    public static func start(_ session: TrainingSession, parallel: DataParallel = .single) throws -> Trainer {
        let loaded = session.loaded, run = loaded.recipe.outputDirectory
        try checkFresh(run)
        try checkDistributable(session, parallel)
        guard parallel.isLeader else {
            return Trainer(session: session, runDirectory: run, cursor: DataCursor(epoch: 0, position: 0), startStep: 0,
                           lock: nil, parallel: parallel)
        }
        do {
            try Folder.create(run)
        } catch let error as FormatError {
            throw RecipeError(file: loaded.file, line: loaded.lines["output.dir"], "output.dir: \(error)")
        }
        let lock = try Self.lock(run)
        try AtomicFile.write(Data(loaded.resolvedYAML.utf8),
                             to: (run as NSString).appendingPathComponent("recipe.yaml"))
        let trainer = Trainer(session: session, runDirectory: run, cursor: DataCursor(epoch: 0, position: 0),
                              startStep: 0, lock: lock, parallel: parallel)
        try trainer.metrics?.open(keepingThrough: -1)
        return trainer
    }

    /// Continues the newest complete checkpoint of `runDirectory`. The run's recipe.yaml (with any
    /// `overrides`) must resolve to the recipe the checkpoint was written with, unless `allowRecipeChange`, and
    /// the training data must tokenize to the sequences it was trained on, unless `allowDataChange`.
    public static func resume(runDirectory: String, overrides: [String] = [], allowRecipeChange: Bool = false,
                              allowDataChange: Bool = false, parallel: DataParallel = .single) throws -> Trainer {
        let recipePath = (runDirectory as NSString).appendingPathComponent("recipe.yaml")
        guard FileManager.default.fileExists(atPath: recipePath) else {
            throw TrainingError(message: "\(runDirectory) is not a Finch run directory (no recipe.yaml)")
        }
        let lock = parallel.isLeader ? try Self.lock(runDirectory) : nil
        if parallel.isLeader { Checkpoint.removePartial(runDirectory: runDirectory) }
        let checkpoints = Checkpoint.complete(runDirectory: runDirectory)
        guard let latest = checkpoints.last else {
            throw TrainingError(message: "\(runDirectory) has no complete checkpoint to resume from; start it again with `finch train \(recipePath)`")
        }
        var loaded = try RecipeLoader.load(path: recipePath, overrides: overrides)
        if loaded.recipe.outputDirectory != runDirectory {
            var recipe = loaded.recipe
            recipe.outputDirectory = runDirectory
            loaded = LoadedRecipe(recipe: recipe, file: loaded.file, lines: loaded.lines)
        }
        let saved = try RecipeLoader.load(path: "\(latest.path)/recipe.yaml")
        var savedRecipe = saved.recipe
        savedRecipe.outputDirectory = loaded.recipe.outputDirectory
        let changed = RecipeLoader.changedKeys(savedRecipe, loaded.recipe)
        if !changed.isEmpty && !allowRecipeChange {
            throw TrainingError(message: "the recipe changed since checkpoint step \(latest.step) (\(changed.joined(separator: ", "))); resume with the recipe it was written with, or pass --allow-recipe-change")
        }
        let session = try TrainingSession(loaded)
        try checkDistributable(session, parallel)
        let state: CheckpointState
        do {
            state = try Checkpoint.restore(latest.path, into: session)
        } catch {
            // A damaged newest checkpoint: say which one came before it, and leave both where they are.
            guard checkpoints.count > 1 else { throw error }
            let previous = checkpoints[checkpoints.count - 2]
            throw TrainingError(message: "\(error) (checkpoint step \(latest.step) cannot be read; the one before it, step \(previous.step), "
                + "is \(previous.path): move \(latest.path) out of \(runDirectory)/checkpoints to resume from there)")
        }
        // Batches are positions in the data: other data (an edited file, another tokenizer) would continue a
        // different run under the same name.
        if let trained = state.dataFingerprint, trained != session.trainData.fingerprint, !allowDataChange {
            throw TrainingError(message: "data.train ('\(session.recipe.trainData)') is not the data checkpoint step \(latest.step) was trained on: its sequences differ (the file or the tokenizer changed since); restore it to resume exactly, or pass --allow-data-change to go on with the new data")
        }
        if !changed.isEmpty && parallel.isLeader {
            try AtomicFile.write(Data(loaded.resolvedYAML.utf8), to: recipePath)
        }
        let trainer = Trainer(session: session, runDirectory: runDirectory, cursor: state.cursor,
                              startStep: state.step, lock: lock, parallel: parallel,
                              accountant: try resumedAccountant(state, session: session, checkpoint: latest.path))
        try trainer.metrics?.open(keepingThrough: state.step)
        return trainer
    }

    /// What a run over several processes cannot do yet.
    static func checkDistributable(_ session: TrainingSession, _ parallel: DataParallel) throws {
        guard parallel.isDistributed, session.privacy != nil else { return }
        throw RecipeError(file: session.loaded.file, line: session.loaded.lines["privacy.noise_multiplier"] ?? session.loaded.lines["privacy.target_epsilon"],
                          "privacy: DP-SGD runs in one process; start it without mpirun")
    }

    static func checkFresh(_ run: String) throws {
        if !Checkpoint.complete(runDirectory: run).isEmpty {
            throw TrainingError(message: "\(run) already holds a run with checkpoints; continue it with `finch train --resume \(run)` or set output.dir to a new folder")
        }
    }

    init(session: TrainingSession, runDirectory: String, cursor: DataCursor, startStep: Int, lock: FileLock?,
         parallel: DataParallel = .single, accountant: RDPAccountant = RDPAccountant()) {
        self.session = session
        self.accountant = accountant
        self.lock = lock
        self.parallel = parallel
        self.runDirectory = runDirectory
        self.startStep = startStep
        let r = session.recipe
        loader = BatchLoader(data: session.trainData, batchSize: r.batchSize, shuffle: r.shuffle, seed: UInt64(r.seed),
                             cursor: cursor)
        metrics = parallel.isLeader ? MetricsLog(runDirectory: runDirectory, scale: session.recipe.lossScale) : nil
        dataFingerprint = session.trainData.fingerprint
    }

    /// The step the next call to `run` starts from.
    public var nextStep: Int { startStep }

    /// Trains to the recipe's last step, or stops after `stopAfter` steps (writing a checkpoint there).
    public func run(stopAfter: Int? = nil, onEvent: (TrainingEvent) -> Void = { _ in }) throws {
        let r = session.recipe
        let total = session.totalSteps
        let end = max(startStep, min(total, stopAfter ?? total))
        onEvent(.started(summary: session.parameterSummary + (session.privacy.map { "\n" + $0.summary(steps: total) } ?? ""),
                         totalSteps: total, startStep: startStep))
        session.model.train()
        let started = Date()
        var lastCheckpoint = -1
        var vanishing = VanishingGradientWatch()
        defer { metrics?.close() }
        for step in startStep..<end {
            let lr = session.schedule.learningRate(at: step)
            let stepStart = Date()
            let (loss, positions, norm, drawn) = try session.privacy.map { try privateGradient(step: step, $0) }
                ?? standardGradient(step: step)
            guard norm.isFinite else { throw nonFinite("the gradient norm is \(norm.isNaN ? "nan" : "\(norm)")", step: step + 1) }
            session.optimizer.update(learningRate: lr)
            // A finite gradient can still step a weight to infinity (a learning rate far too high): caught here,
            // before a checkpoint would keep it.
            if let broken = session.trainable.first(where: { !$0.tensor.isFinite }) {
                throw nonFinite("the update at learning rate \(lr) made '\(broken.name)' hold NaN or infinite values",
                                step: step + 1)
            }
            for (_, t) in session.trainable { t.zeroGrad() }
            if let steps = vanishing.observe(norm: norm, stepsRun: step + 1 - startStep, isLast: step + 1 == end) {
                onEvent(.warning("step \(step + 1): the gradient has vanished for \(steps) step\(steps == 1 ? "" : "s") "
                    + "(norm \(norm), the run's largest \(vanishing.largest); loss \(loss)): nothing "
                    + "is training; a learning rate far too high (optimizer.lr is \(r.learningRate)) can saturate the model"))
            }

            let done = step + 1
            let seconds = Date().timeIntervalSince(stepStart)
            let elapsed = Date().timeIntervalSince(started)
            let record = StepRecord(
                step: done, totalSteps: total, loss: loss, learningRate: lr, gradientNorm: norm,
                tokensPerSecond: Double(positions) / max(seconds, 1e-9),
                secondsRemaining: elapsed / Double(done - startStep) * Double(end - done),
                epsilon: session.privacy.map { accountant.epsilon(delta: $0.delta).epsilon }, examples: drawn?.examples,
                clippedShare: drawn.map { Double($0.clipped) / Double($0.examples) })
            if done % r.logEvery == 0 || done == total { try metrics?.record(record) }
            onEvent(.step(record))
            if (r.evalEvery > 0 && done % r.evalEvery == 0) || done == total, let v = try session.validationLoss(parallel) {
                try metrics?.recordValidation(step: done, loss: v)
                onEvent(.evaluation(step: done, loss: v))
            }
            if (r.checkpointEvery > 0 && done % r.checkpointEvery == 0) || done == end {
                onEvent(.checkpoint(step: done, path: try checkpoint(step: done, learningRate: lr)))
                lastCheckpoint = done
            }
        }
        startStep = end
        if lastCheckpoint < 0 && end > 0 && Checkpoint.complete(runDirectory: runDirectory).last?.step != end {
            onEvent(.checkpoint(step: end,
                                path: try checkpoint(step: end,
                                                     learningRate: session.schedule.learningRate(at: end - 1))))
        }
        if parallel.isLeader {
            try metrics?.drawSVG()
            try writePrivacyReport(step: end)
            if end == total { try finish() }
        }
        onEvent(.finished(runDirectory: runDirectory))
    }

    /// One step's gradient the usual way: the mean loss of training.grad_accum micro-batches, clipped to
    /// optimizer.max_grad_norm. Each micro-batch's gradient is computed on its own (on the rank that owns it, and
    /// when a step has several, its dropout drawn from (seed, step, micro-batch); a single one is rank 0's and draws
    /// from the run's stream as always) and the step's gradient is their sum in micro-batch order, so the bits do
    /// not depend on how many ranks share the step. Returns the mean loss, the positions the step
    /// computed (on every rank) and the norm before clipping.
    func standardGradient(step: Int) throws -> (loss: Double, positions: Int, norm: Double, drawn: (examples: Int, clipped: Int)?) {
        let r = session.recipe, count = r.gradientAccumulation, trainable = session.trainable
        var positions = 0
        // On one process the sum is made as the micro-batches come; across processes each one's gradient (and its
        // loss) is kept whole until they are gathered.
        var sums: [Tensor?] = Array(repeating: nil, count: trainable.count)
        var losses: [Int: Double] = [:], kept: [Int: [Float]] = [:]
        for j in 0..<count {
            let batch = loader.next()
            // Every rank counts the whole step's positions: the speed logged is the job's.
            guard parallel.owns(j) else {
                positions += batch.count * session.layout(batch).length
                continue
            }
            if let adapter = session.adapter, count > 1 {
                try adapter.restoreRandomStates(Dictionary(uniqueKeysWithValues: adapter.randomStates.keys.map {
                    ($0, DataParallel.dropoutState(seed: r.seed, step: step, microBatch: j, path: $0))
                }))
            }
            let (loss, _, computed) = try session.loss(batch)
            positions += computed
            let value = Double(try loss.item())
            guard value.isFinite else { throw nonFinite("the loss is \(value.isNaN ? "nan" : "\(value)")", step: step + 1) }
            try (loss * (1 / Float(count))).backward()
            losses[j] = value
            if parallel.isDistributed {
                kept[j] = trainable.flatMap { $0.tensor.grad?.scalars ?? [Float](repeating: 0, count: $0.tensor.count) }
                    + trainable.map { $0.tensor.grad == nil ? 0 : 1 } + Self.floats(carrying: value)
                for (_, t) in trainable { t.zeroGrad() }
            } else if count > 1 {
                for (i, (_, t)) in trainable.enumerated() {
                    guard let g = t.grad else { continue }
                    if let sum = sums[i] {
                        let a = sum.storage.pointer, b = g.storage.pointer
                        for e in 0..<sum.count { a[e] += b[e] }
                    } else {
                        // A copy: the engine may have handed the same gradient tensor to two leaves.
                        let copy = Tensor.zeros(g.shape)
                        copy.storage.pointer.update(from: g.storage.pointer, count: g.count)
                        sums[i] = copy
                    }
                    t.zeroGrad()
                }
            }
        }
        var lossSum = 0.0
        if parallel.isDistributed {
            // Each micro-batch travels as its gradient, a flag per tensor (whether it had one) and its loss's bits.
            let width = trainable.reduce(0) { $0 + $1.tensor.count }
            let gathered = try parallel.gather(kept, count: count, width: width + trainable.count + 2)
            let all = try (0..<count).map { j in
                guard let values = gathered[j] else {
                    throw DistributedError(message: "step \(step + 1): no rank ran micro-batch \(j + 1)")
                }
                return values
            }
            var offset = 0
            for (i, (_, t)) in trainable.enumerated() {
                var sum: Tensor?
                for values in all where values[width + i] == 1 {
                    values.withUnsafeBufferPointer { v in
                        if let sum {
                            let g = sum.storage.pointer
                            for e in 0..<t.count { g[e] += v[offset + e] }
                        } else {
                            let fresh = Tensor.zeros(t.shape), g = fresh.storage.pointer
                            for e in 0..<t.count { g[e] = v[offset + e] }
                            sum = fresh
                        }
                    }
                }
                t.grad = sum
                offset += t.count
            }
            for values in all { lossSum += Self.double(from: values[width + trainable.count], values[width + trainable.count + 1]) }
        } else {
            for j in 0..<count { lossSum += losses[j]! }
            if count > 1 { for (i, (_, t)) in trainable.enumerated() { t.grad = sums[i] } }
        }
        let norm = clipGradientNorm(session.trainable, maxNorm: r.maxGradNorm)
        return (lossSum / Double(count), positions, norm, nil)
    }

    /// A Double's bits as two Floats' bit patterns (a loss sent beside float32 gradients), and back.
    static func floats(carrying value: Double) -> [Float] {
        [Float(bitPattern: UInt32(truncatingIfNeeded: value.bitPattern >> 32)),
         Float(bitPattern: UInt32(truncatingIfNeeded: value.bitPattern))]
    }

    static func double(from high: Float, _ low: Float) -> Double {
        Double(bitPattern: UInt64(high.bitPattern) << 32 | UInt64(low.bitPattern))
    }

    func checkpoint(step: Int, learningRate: Double) throws -> String {
        guard parallel.isLeader else {
            return (runDirectory as NSString).appendingPathComponent("checkpoints/" + Checkpoint.directoryName(step: step))
        }
        let state = CheckpointState(step: step, cursor: loader.cursor, generators: session.adapter?.randomStates ?? [:],
                                    recipeHash: session.loaded.hash, learningRate: learningRate,
                                    dataFingerprint: dataFingerprint,
                                    privacy: session.privacy == nil ? nil : accountant)
        let path = try Checkpoint.write(session: session, state: state, runDirectory: runDirectory)
        try writePrivacyReport(step: step)
        return path
    }

    /// The final adapter (PEFT format) in RUN/adapter, and the merged model when asked (always for full
    /// fine-tuning, which has no adapter): RUN/merged, a Hugging Face folder, for a folder base; RUN/merged.gguf,
    /// with the base's metadata and tokenizer, for a GGUF base.
    func finish() throws {
        let r = session.recipe
        if let adapter = session.adapter {
            try PEFTFormat.save(adapter, model: session.model,
                                to: (runDirectory as NSString).appendingPathComponent("adapter"), baseModel: r.model)
        }
        let wantsMerged = r.exportMerged || session.adapter == nil
        guard wantsMerged else { return }
        let dtype: SafetensorsDType = r.exportType == .float16 ? .f16 : r.exportType == .bfloat16 ? .bf16 : .f32
        // An adapter that cannot be merged (a prefix) has its folder as the result.
        if let adapter = session.adapter, try !adapter.mergeAndUnload(from: session.model) { return }
        if PretrainedModel.isFile(r.model) {
            let type: GGUFOutputType = r.exportType == .float16 ? .f16 : r.exportType == .bfloat16 ? .bf16 : .f32
            _ = try GGUFExport.write(model: session.model, base: try GGUFFile(path: r.model),
                                     to: (runDirectory as NSString).appendingPathComponent("merged.gguf"), type: type)
            return
        }
        try Exporter.writeMergedFolder(model: session.model, baseFolder: r.model,
                                       to: (runDirectory as NSString).appendingPathComponent("merged"), dtype: dtype,
                                       dtypeName: r.exportType.rawValue)
    }

    func nonFinite(_ problem: String, step: Int) -> TrainingError {
        let last = Checkpoint.complete(runDirectory: runDirectory).last
        guard let last else {
            return TrainingError(message: "step \(step): \(problem); training stopped before any checkpoint was written. Lower optimizer.lr or check the data, then start the run again")
        }
        return TrainingError(message: "step \(step): \(problem); training stopped and the last complete checkpoint (step \(last.step)) is kept in \(last.path). Lower optimizer.lr or check the data, then resume with --resume \(runDirectory) --allow-recipe-change")
    }
}

/// Notices a run in which nothing trains: a gradient that has vanished (a millionth of the largest norm this run
/// has seen, or zero from the start) step after step, as a learning rate far too high leaves a saturated model.
struct VanishingGradientWatch {
    /// Consecutive steps of vanished gradient before the run is told.
    static let steps = 5
    private(set) var largest = 0.0
    private var vanished = 0

    /// The number of steps the gradient has vanished for, once: when it reaches `steps`, or at the last step of a
    /// shorter run in which every step's had.
    mutating func observe(norm: Double, stepsRun: Int, isLast: Bool) -> Int? {
        largest = max(largest, norm)
        vanished = norm <= 1e-6 * largest ? vanished + 1 : 0
        let shortRunAllVanished = vanished < Self.steps && vanished == stepsRun && isLast
        return vanished == Self.steps || shortRunAllVanished ? vanished : nil
    }
}
