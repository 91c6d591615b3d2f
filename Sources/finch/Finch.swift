import ArgumentParser

@main
struct Finch: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "finch",
        abstract: "Fine-tune small language models on the CPU.",
        subcommands: [EvalCommand.self, ExportCommand.self, GenerateCommand.self, TokenizeCommand.self, InspectCommand.self, BenchCommand.self])
}
