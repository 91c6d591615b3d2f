import ArgumentParser
import Foundation
import FinchFormats
import FinchModels

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Show what a model folder or a safetensors file holds: architecture, parameter count, tensors.")

    @Argument(help: "A Hugging Face model folder or a .safetensors file.")
    var path: String

    @Flag(help: "Print one JSON object on stdout.")
    var json = false

    func run() throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw FormatError(file: path, "does not exist")
        }
        var report: [String: Any] = [:]
        var lines: [String] = []
        let entries: [SafetensorsEntry]
        if isDirectory.boolValue {
            let config = try ModelConfig.load(path: (path as NSString).appendingPathComponent("config.json"))
            let checkpoint = try SafetensorsCheckpoint(folder: path)
            entries = checkpoint.names.compactMap { checkpoint.entry(named: $0) }
            report["model_type"] = config.modelType
            lines.append("architecture: \(config.modelType)")
            lines.append(contentsOf: Self.describe(config))
            let tokenizerPath = (path as NSString).appendingPathComponent("tokenizer.json")
            if FileManager.default.fileExists(atPath: tokenizerPath) {
                let tokenizer = try Tokenizer(path: tokenizerPath)
                report["tokenizer_vocabulary"] = tokenizer.vocabularySize
                lines.append("tokenizer: \(tokenizer.vocabularySize) tokens")
            } else {
                lines.append("tokenizer: none (no tokenizer.json)")
            }
        } else {
            let file = try SafetensorsFile(path: path)
            entries = file.entries
            if !file.metadata.isEmpty {
                report["metadata"] = file.metadata
                lines.append("metadata: " + file.metadata.keys.sorted().map { "\($0)=\(file.metadata[$0]!)" }.joined(separator: ", "))
            }
        }
        let total = entries.reduce(0) { $0 + $1.elementCount }
        report["parameters"] = total
        report["tensors"] = entries.map { ["name": $0.name, "dtype": $0.dtype.rawValue, "shape": $0.shape] as [String: Any] }
        if json {
            try Output.json(report)
            return
        }
        lines.append("parameters: \(total.formatted()) in \(entries.count) tensors")
        for line in lines { print(line) }
        let width = entries.map(\.name.count).max() ?? 0
        for e in entries.sorted(by: { $0.name < $1.name }) {
            print("  \(e.name.padding(toLength: width, withPad: " ", startingAt: 0))  \(e.dtype.rawValue.padding(toLength: 4, withPad: " ", startingAt: 0))  \(e.shape)")
        }
    }

    static func describe(_ config: ModelConfig) -> [String] {
        switch config {
        case .llama(let c):
            return ["hidden \(c.hiddenSize), \(c.layerCount) layers, \(c.headCount) heads (\(c.keyValueHeadCount) key/value), head dim \(c.headDimension)",
                    "SwiGLU \(c.intermediateSize), vocabulary \(c.vocabularySize), rope theta \(c.ropeTheta), tied embeddings \(c.tieWordEmbeddings)"]
        case .gpt2(let c):
            return ["n_embd \(c.embeddingSize), \(c.layerCount) layers, \(c.headCount) heads, inner \(c.innerSize)",
                    "vocabulary \(c.vocabularySize), positions \(c.maxPositions), activation \(c.activation)"]
        }
    }
}
