import ArgumentParser
import FinchTraining

struct ValidateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "validate",
        abstract: "Check a recipe without training: keys, types, files, model, adapter targets and data.")

    @Argument(help: "The recipe (YAML), then key.path=value overrides.")
    var arguments: [String]

    func run() throws {
        guard let recipe = arguments.first else { throw ValidationError("give a recipe file") }
        let loaded = try RecipeLoader.load(path: recipe, overrides: Array(arguments.dropFirst()))
        let session = try TrainingSession(loaded)
        let r = session.recipe
        print("\(recipe): OK")
        print("model \(r.model) (\(session.model.config.modelType)), adapter \(r.adapterType.rawValue)")
        print(session.parameterSummary)
        print("training data: \(session.trainData.sequences.count) sequences of \(r.sequenceLength) tokens (\(session.trainData.format.rawValue))"
            + (session.validationData.map { "; validation: \($0.sequences.count)" } ?? ""))
        print("\(session.totalSteps) steps of \(r.batchSize * r.gradientAccumulation) sequences; run directory \(r.outputDirectory)")
    }
}
