import ArgumentParser
import Foundation
import FinchAdapters
import FinchFormats
import FinchModels

struct PruneCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prune",
        abstract: "Write a model with a subset of its decoder layers (depth pruning), to distil the full model into.",
        discussion: """
            finch prune --model M --keep-layers 0-7,22-29 --out OUT keeps those layers, renumbered in order, with the
            embeddings, final norm, head and tokenizer as they are. A Hugging Face folder gives a folder (config.json's
            layer count and per-layer lists cut to match), a GGUF file a GGUF file (its quantised blocks copied byte
            for byte). Train it with a recipe whose distill.teacher is M.
            """)

    @Option(help: "The model to prune: a Hugging Face folder or a GGUF file.")
    var model: String

    @Option(name: .customLong("keep-layers"), help: "The layers to keep, counted from 0: a list with ranges, e.g. 0-7,22-29 or 0,2,4.")
    var keepLayers: String

    @Option(help: "The folder (for a folder) or file (for a GGUF file) to write; one that exists is refused unless --force.")
    var out: String

    @Flag(help: "Replace an --out that already exists.")
    var force = false

    func run() throws {
        let keep = try Self.parseLayers(keepLayers)
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: model, isDirectory: &isFolder) else {
            throw FormatError(file: model, "does not exist")
        }
        let before: Int
        if isFolder.boolValue {
            try Exporter.checkOutputFolder(out, baseFolder: model, replacing: force)
            before = try DepthPruning.pruneFolder(model, keep: keep, to: out)
        } else {
            try Exporter.checkOutputFile(out, base: model, replacing: force)
            before = try DepthPruning.pruneGGUF(model, keep: keep, to: out)
        }
        // Read back as any command will read it.
        let pruned = try PretrainedModel.load(out)
        print("kept \(keep.count) of \(before) layers (\(keep.map(String.init).joined(separator: ","))): wrote \(out), \(pruned.model.parameterCount) parameters")
    }

    /// "0-7,22-29" → [0, …, 7, 22, …, 29].
    static func parseLayers(_ text: String) throws -> [Int] {
        var layers: [Int] = []
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let ends = part.split(separator: "-", omittingEmptySubsequences: false).map { Int($0.trimmingCharacters(in: .whitespaces)) }
            switch ends.count {
            case 1 where ends[0] != nil: layers.append(ends[0]!)
            case 2 where ends[0] != nil && ends[1] != nil && ends[0]! <= ends[1]!: layers += Array(ends[0]!...ends[1]!)
            default: throw OptionError("--keep-layers: '\(part)' is not a layer number or a range like 0-7")
            }
        }
        return layers
    }
}
