import ArgumentParser
import Foundation
import FinchAdapters
import FinchFormats
import FinchModels
import FinchTraining

struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Merge an adapter into its base model and write it (Hugging Face folder or GGUF), or write a LoRA adapter for llama.cpp.",
        discussion: """
            finch export RUN_DIR merges a run's final adapter into the recipe's base model; finch export --model M \
            --adapter A --out OUT does the same for any PEFT adapter folder. Without --adapter, --model M is written \
            as it is (with --format gguf: converted to another --type, as llama.cpp's llama-quantize does).

            --format hf (for a Hugging Face base): a folder with config.json, model.safetensors in --dtype and the \
            base's tokenizer files (default --out: RUN_DIR/merged).
            --format gguf (for a GGUF base): one GGUF file with the base's metadata and tokenizer, matrices stored \
            as --type (default same: each in its base tensor's type; default --out: RUN_DIR/merged.gguf).
            --format gguf-lora (for a GGUF base): the LoRA adapter alone as llama.cpp's --lora reads it, so the \
            quantised base runs unchanged (default --out: RUN_DIR/adapter.gguf).

            A prefix-tuning adapter has no weights to merge into: with --format hf, export says so and writes the \
            adapter itself (PEFT format) instead; llama.cpp has no prefix tuning, so the GGUF formats refuse it.
            """)

    enum Format: String, ExpressibleByArgument, CaseIterable {
        case hf, gguf, ggufLora = "gguf-lora"
    }

    @Argument(help: "A run directory (uses its recipe's model and its adapter/ folder).")
    var runDirectory: String?

    @Option(help: "The base model: a Hugging Face folder or a GGUF file.")
    var model: String?

    @Option(help: "The PEFT adapter folder to merge (none: the model is written unchanged, in the --format and --type asked).")
    var adapter: String?

    @Option(help: "What to write: hf, gguf or gguf-lora.")
    var format: Format = .hf

    @Option(help: "The folder (hf) or file (gguf, gguf-lora) to write; one that already holds files is refused unless --force.")
    var out: String?

    @Flag(help: "Replace what export writes in an --out that already exists.")
    var force = false

    @Option(help: "With --format hf: weight dtype float32, float16 or bfloat16.")
    var dtype: String = "float32"

    @Option(help: "With --format gguf: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1 or same (each matrix in its base tensor's type).")
    var type: String = "q8_0"

    func run() throws {
        let dtypes: [String: SafetensorsDType] = ["float32": .f32, "float16": .f16, "bfloat16": .bf16]
        guard let safetensorsType = dtypes[dtype] else {
            throw OptionError("--dtype must be float32, float16 or bfloat16, got '\(dtype)'")
        }
        guard let outputType = GGUFOutputType(rawValue: type) else {
            throw OptionError("--type must be one of \(GGUFOutputType.allCases.map(\.rawValue).joined(separator: ", ")), got '\(type)'")
        }
        let (modelPath, adapterPath, out) = try sources()
        if adapterPath == nil && format == .ggufLora { throw OptionError("--format gguf-lora writes an adapter: give --adapter") }
        let base = try PretrainedModel.load(modelPath)
        switch (format, base.source) {
        case (.hf, .huggingFace):
            try Exporter.checkOutputFolder(out, baseFolder: modelPath, replacing: force)
        case (.gguf, .gguf), (.ggufLora, .gguf):
            try Exporter.checkOutputFile(out, base: modelPath, replacing: force)
        case (.hf, .gguf):
            throw OptionError("\(modelPath) is a GGUF file: export it with --format gguf (the merged model) or --format gguf-lora (the adapter for llama.cpp)")
        case (.gguf, .huggingFace), (.ggufLora, .huggingFace):
            throw OptionError("--format \(format.rawValue) needs a GGUF base (its metadata and tokenizer go into the file); \(modelPath) is a Hugging Face folder. Use --format hf, or convert the base with llama.cpp's convert_hf_to_gguf.py first")
        }
        guard let adapterPath else {
            try write(base, from: modelPath, to: out, dtype: safetensorsType, type: outputType)
            print("wrote \(modelPath) to \(out) (\(format == .hf ? dtype : "GGUF, --type \(outputType.rawValue)"))")
            return
        }
        let applied = try PEFTFormat.load(adapterPath, into: base.model)
        if format == .ggufLora {
            guard case .lora(let lora) = applied, let file = base.ggufFile else {
                throw OptionError("--format gguf-lora writes LoRA adapters; \(adapterPath) holds a \(applied.name) adapter, which llama.cpp cannot apply")
            }
            try GGUFLoRAFormat.write(lora, model: base.model, architecture: file["general.architecture"]?.string ?? "llama", to: out)
            print("wrote the LoRA adapter on \(lora.layers.count) layers to \(out) (run it over \(modelPath) with llama.cpp's --lora)")
            return
        }
        guard try applied.mergeAndUnload(from: base.model) else {
            guard format == .hf else {
                throw OptionError("a \(applied.name) adapter adds to the forward pass at run time and cannot be merged into the weights; llama.cpp has no way to run it, so there is no GGUF to write")
            }
            try PEFTFormat.save(applied, model: base.model, to: out, baseModel: modelPath)
            Output.standardError("a \(applied.name) adapter adds to the forward pass at run time and cannot be merged into the weights; wrote the adapter to \(out) instead (use it with --adapter)")
            return
        }
        try write(base, from: modelPath, to: out, dtype: safetensorsType, type: outputType)
        print("merged \(applied.adaptedPaths.count) \(applied.name) layers into \(out) (\(format == .hf ? dtype : "GGUF, --type \(outputType.rawValue)"))")
    }

    /// The model (an adapter merged in, or none) in the base's own kind of files.
    func write(_ base: PretrainedModel, from modelPath: String, to out: String, dtype: SafetensorsDType,
               type: GGUFOutputType) throws {
        switch base.source {
        case .huggingFace:
            try Exporter.writeMergedFolder(model: base.model, baseFolder: modelPath, to: out, dtype: dtype, dtypeName: self.dtype)
        case .gguf(let file):
            for line in try GGUFExport.write(model: base.model, base: file, to: out, type: type) { Output.standardError(line) }
        }
    }

    /// (base model, adapter, output) from a run directory or from the options.
    func sources() throws -> (String, String?, String) {
        if let run = runDirectory {
            guard model == nil, adapter == nil else { throw ValidationError("give a run directory or --model and --adapter, not both") }
            let recipePath = (run as NSString).appendingPathComponent("recipe.yaml")
            guard FileManager.default.fileExists(atPath: recipePath) else {
                throw RecipeError(file: run, "is not a Finch run directory (no recipe.yaml); for a PEFT adapter folder, give --model, --adapter and --out")
            }
            let recipe = try RecipeLoader.load(path: recipePath).recipe
            let adapterFolder = (run as NSString).appendingPathComponent("adapter")
            guard FileManager.default.fileExists(atPath: adapterFolder) else {
                throw ValidationError("\(run) has no adapter/ folder: the run has not finished (or it was a full fine-tune, whose weights are in \(run)/merged or \(run)/merged.gguf)")
            }
            let name = ["hf": "merged", "gguf": "merged.gguf", "gguf-lora": "adapter.gguf"][format.rawValue]!
            return (recipe.model, adapterFolder, out ?? (run as NSString).appendingPathComponent(name))
        }
        guard let model, let out else {
            throw ValidationError("give a run directory, or --model and --out (and --adapter to merge one)")
        }
        return (model, adapter, out)
    }
}
