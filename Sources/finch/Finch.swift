import ArgumentParser

@main
struct Finch: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "finch",
        abstract: "Fine-tune small language models on the CPU.",
        subcommands: [TrainCommand.self, ValidateCommand.self, EvalCommand.self, ExportCommand.self, TokenizerCommand.self, GenerateCommand.self, TokenizeCommand.self, LogitsCommand.self, InspectCommand.self, BenchCommand.self, PruneCommand.self, CompareCommand.self])
}
