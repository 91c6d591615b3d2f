import ArgumentParser
import Foundation
import FinchAdapters
import FinchFormats
import FinchModels
import FinchTraining

struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Merge a LoRA adapter into its base model and write a Hugging Face folder.",
        discussion: """
            finch export RUN_DIR [--out DIR] merges a run's final adapter into the recipe's base model \
            (default --out: RUN_DIR/merged); finch export --model M --adapter A --out DIR merges any PEFT adapter.

            The folder holds config.json, model.safetensors in the requested dtype, and the base folder's \
            tokenizer files. A prefix-tuning adapter has no weights to merge into: export says so and writes \
            the adapter itself (PEFT format) to --out instead.
            """)

    @Argument(help: "A run directory (uses its recipe's model and its adapter/ folder).")
    var runDirectory: String?

    @Option(help: "The base Hugging Face model folder.")
    var model: String?

    @Option(help: "The PEFT adapter folder to merge.")
    var adapter: String?

    @Option(help: "The folder to write (created; one that already holds files is refused unless --force).")
    var out: String?

    @Flag(help: "Write into an --out folder that already holds files, replacing the ones export writes.")
    var force = false

    @Option(help: "Weight dtype: float32, float16 or bfloat16.")
    var dtype: String = "float32"

    func run() throws {
        let dtypes: [String: SafetensorsDType] = ["float32": .f32, "float16": .f16, "bfloat16": .bf16]
        guard let safetensorsType = dtypes[dtype] else {
            throw OptionError("--dtype must be float32, float16 or bfloat16, got '\(dtype)'")
        }
        let (model, adapter, out) = try sources()
        try Exporter.checkOutputFolder(out, baseFolder: model, replacing: force)
        let folder = try HuggingFaceFolder.load(model)
        let applied = try PEFTFormat.load(adapter, into: folder.model)
        if try applied.mergeAndUnload(from: folder.model) {
            try Exporter.writeMergedFolder(model: folder.model, baseFolder: model, to: out, dtype: safetensorsType,
                                           dtypeName: dtype)
            print("merged \(applied.adaptedPaths.count) \(applied.name) layers into \(out) (\(dtype))")
        } else {
            try PEFTFormat.save(applied, model: folder.model, to: out, baseModel: model)
            Output.standardError("a \(applied.name) adapter adds to the forward pass at run time and cannot be merged into the weights; wrote the adapter to \(out) instead (use it with --adapter)")
        }
    }

    /// (base model, adapter, output) from a run directory or from the options.
    func sources() throws -> (String, String, String) {
        if let run = runDirectory {
            guard model == nil, adapter == nil else { throw ValidationError("give a run directory or --model and --adapter, not both") }
            let recipePath = (run as NSString).appendingPathComponent("recipe.yaml")
            guard FileManager.default.fileExists(atPath: recipePath) else {
                throw RecipeError(file: run, "is not a Finch run directory (no recipe.yaml); for a PEFT adapter folder, give --model, --adapter and --out")
            }
            let recipe = try RecipeLoader.load(path: recipePath).recipe
            let adapterFolder = (run as NSString).appendingPathComponent("adapter")
            guard FileManager.default.fileExists(atPath: adapterFolder) else {
                throw ValidationError("\(run) has no adapter/ folder: the run has not finished (or it was a full fine-tune, whose weights are in \(run)/merged)")
            }
            return (recipe.model, adapterFolder, out ?? (run as NSString).appendingPathComponent("merged"))
        }
        guard let model, let adapter, let out else {
            throw ValidationError("give a run directory, or --model, --adapter and --out")
        }
        return (model, adapter, out)
    }
}
