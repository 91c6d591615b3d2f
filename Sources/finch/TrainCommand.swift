import ArgumentParser
import Foundation
import FinchTraining

struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Run a training recipe, or continue a run from its newest complete checkpoint.",
        discussion: """
            finch train RECIPE.yaml [key.path=value ...]
            finch train --resume RUN_DIR [key.path=value ...] [--allow-recipe-change] [--allow-data-change]
            """)

    @Argument(help: "The recipe (YAML), then key.path=value overrides.")
    var arguments: [String] = []

    @Option(help: "Continue the run in this directory from its newest complete checkpoint.")
    var resume: String?

    @Flag(help: "Resume even though the recipe differs from the one the checkpoint was written with.")
    var allowRecipeChange = false

    @Flag(help: "Resume even though the training data no longer tokenizes to the sequences the checkpoint was trained on.")
    var allowDataChange = false

    func run() throws {
        guard MPICommunicator.isLaunchedByMPI else { return try train(.single) }
        // Under mpirun: every rank trains its share; an error on one ends them all, each saying why.
        let communicator = try MPICommunicator()
        RankStopMessage.prepare(rank: communicator.rank, run: resume)
        do {
            try train(DataParallel(communicator: communicator))
            communicator.finalize()
        } catch {
            Output.standardError("finch: rank \(communicator.rank) of \(communicator.size): \(error)")
            communicator.abort(code: 1)
        }
    }

    func train(_ parallel: DataParallel) throws {
        let trainer: Trainer
        if let resume {
            trainer = try Trainer.resume(runDirectory: resume, overrides: arguments,
                                         allowRecipeChange: allowRecipeChange,
                                         allowDataChange: allowDataChange, parallel: parallel)
        } else {
            guard let recipe = arguments.first else {
                throw ValidationError("give a recipe file (finch train RECIPE.yaml) or --resume RUN_DIR")
            }
            trainer = try Trainer.start(try RecipeLoader.load(path: recipe, overrides: Array(arguments.dropFirst())),
                                        parallel: parallel)
        }
        if parallel.isDistributed { RankStopMessage.prepare(rank: parallel.rank, run: trainer.runDirectory) }
        let display = ProgressDisplay(mode: trainer.session.recipe.progress, logEvery: trainer.session.recipe.logEvery)
        if parallel.isLeader && parallel.isDistributed {
            print("data parallel: \(parallel.size) processes, micro-batch j of each step on rank j mod \(parallel.size)")
        }
        try trainer.run { if parallel.isLeader { display.show($0) } }
    }
}

/// A progress bar on a terminal, plain lines otherwise.
final class ProgressDisplay {
    let bar: Bool
    let logEvery: Int
    private var total = 0

    init(mode: Recipe.Progress, logEvery: Int) {
        switch mode {
        case .bar: bar = true
        case .plain: bar = false
        case .auto: bar = isatty(STDERR_FILENO) != 0
        }
        self.logEvery = logEvery
    }

    func show(_ event: TrainingEvent) {
        switch event {
        case let .started(summary, totalSteps, startStep):
            total = totalSteps
            print(summary)
            if startStep > 0 { print("resuming at step \(startStep) of \(totalSteps)") }
        case .step(let r):
            var line = String(format: "step %ld/%ld  loss %@  lr %.2e  grad %.3f  %.0f tok/s  eta %@",
                              r.step, r.totalSteps, r.loss.isFinite ? String(format: "%.4f", r.loss) : "-  (no example drawn)",
                              r.learningRate, r.gradientNorm, r.tokensPerSecond, Self.clock(r.secondsRemaining))
            if let epsilon = r.epsilon {
                line += "  ε " + (epsilon.isFinite ? String(format: "%.3f", epsilon) : "unbounded")
                if let examples = r.examples { line += "  batch \(examples)" }
                if let clipped = r.clippedShare, clipped.isFinite { line += String(format: "  clipped %.0f%%", 100 * clipped) }
            }
            if bar {
                let width = 24
                let filled = Int(Double(width) * Double(r.step) / Double(max(1, r.totalSteps)))
                let text = "\r[" + String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled) + "] " + line
                FileHandle.standardError.write(Data(text.utf8))
                if r.step == r.totalSteps { FileHandle.standardError.write(Data("\n".utf8)) }
            } else if r.step % logEvery == 0 || r.step == r.totalSteps {
                print(line)
                fflush(nil)
            }
        case let .evaluation(step, loss):
            if bar { FileHandle.standardError.write(Data("\n".utf8)) }
            print(String(format: "step %ld  validation loss %.4f  perplexity %.2f", step, loss, Foundation.exp(loss)))
            fflush(nil)
        case let .checkpoint(step, path):
            if !bar { print("step \(step)  checkpoint \(path)") }
        case .warning(let text):
            if bar { FileHandle.standardError.write(Data("\n".utf8)) }
            Output.standardError("warning: " + text)
        case .finished(let run):
            print("run directory: \(run)")
        }
    }

    static func clock(_ seconds: Double) -> String {
        guard seconds.isFinite, abs(seconds) < 1e12 else { return "?" }
        let s = Int(seconds.rounded())
        return s >= 3600 ? String(format: "%ld:%02ld:%02ld", s / 3600, s / 60 % 60,
                                  s % 60) : String(format: "%ld:%02ld", s / 60, s % 60)
    }
}

/// What a rank of an mpirun says when mpirun stops it because another rank ended (SIGTERM): which rank it was, and
/// where the run's last complete checkpoint is.
enum RankStopMessage {
    nonisolated(unsafe) static var message: UnsafeMutablePointer<CChar>?
    nonisolated(unsafe) static var length = 0

    static func prepare(rank: Int, run: String?) {
        let text = "finch: rank \(rank): stopped because another process of this mpirun ended"
            + (run.map { "; the last complete checkpoint in \($0)/checkpoints resumes it (finch train --resume \($0))" } ?? "") + "\n"
        let bytes = Array(text.utf8CString)
        let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: bytes.count)
        buffer.initialize(from: bytes, count: bytes.count)
        let previous = message
        message = buffer
        length = bytes.count - 1
        previous?.deallocate()
        signal(SIGTERM) { _ in
            // Only async-signal-safe calls here: write(2) and _exit.
            if let message = RankStopMessage.message { _ = write(STDERR_FILENO, message, RankStopMessage.length) }
            _exit(1)
        }
    }
}
