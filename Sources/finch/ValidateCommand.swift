import ArgumentParser
import FinchTraining

struct ValidateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "validate",
        abstract: "Check a recipe without training: keys, types, files, model, adapter targets and data.")

    @Argument(help: "The recipe (YAML), then key.path=value overrides.")
    var arguments: [String] = []

    @Flag(help: "Print every recipe key with its type, default and meaning (a Markdown table) and exit.")
    var keys = false

    func run() throws {
        if keys {
            print("| key | type | default | what it does |")
            print("| --- | --- | --- | --- |")
            let defaults = Recipe()
            for field in RecipeSchema.fields {
                let value = field.required ? "(required)" : field.read(defaults).map { "`\($0)`" } ?? "(not set)"
                print("| `\(field.key)` | \(field.kind.expected) | \(value) | \(field.summary) |")
            }
            return
        }
        guard let recipe = arguments.first else { throw ValidationError("give a recipe file") }
        let loaded = try RecipeLoader.load(path: recipe, overrides: Array(arguments.dropFirst()))
        let session = try TrainingSession(loaded)
        let r = session.recipe
        print("\(recipe): OK")
        print("model \(r.model) (\(session.model.config.modelType)), adapter \(r.adapter.kind.rawValue)")
        print(session.parameterSummary)
        print("training data: \(session.trainData.sequences.count) sequences of \(r.sequenceLength) tokens (\(session.trainData.format.rawValue))"
            + (session.validationData.map { "; validation: \($0.sequences.count)" } ?? ""))
        print("\(session.totalSteps) steps of \(r.batchSize * r.gradientAccumulation) sequences\(session.privacy == nil ? "" : " on average"); run directory \(r.outputDirectory)")
        if let privacy = session.privacy { print(privacy.summary(steps: session.totalSteps)) }
    }
}
