import ArgumentParser
import Foundation
import FinchTensor

@main
struct Finch: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "finch",
        abstract: "Fine-tune small language models on the CPU.",
        subcommands: [TrainCommand.self, ValidateCommand.self, EvalCommand.self, ExportCommand.self, TokenizerCommand.self, GenerateCommand.self, TokenizeCommand.self, LogitsCommand.self, InspectCommand.self, BenchCommand.self, PruneCommand.self, CompareCommand.self])

    static func main() {
        if let value = Parallel.invalidThreadSetting {
            FileHandle.standardError.write(Data("Error: FINCH_THREADS: expected a positive number of threads, got '\(value)'\n".utf8))
            Foundation.exit(2)
        }
        main(nil)
    }
}
