import ArgumentParser
import Foundation
import FinchFormats
import FinchModels
import FinchNN
import FinchTraining

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Show what a model folder, adapter folder, checkpoint, run directory, safetensors or GGUF file holds.")

    @Argument(help: "A Hugging Face model folder, a PEFT adapter folder, a checkpoint (RUN/checkpoints/step-N), a run directory, or a .safetensors or .gguf file.")
    var path: String

    @Flag(help: "Print one JSON object on stdout.")
    var json = false

    @Option(help: "For a model: load it as training and evaluation would with this --quantize (none, keep, nf4, q8_0, q4_0, q4_1) and list what each weight is held as and the bytes it takes.")
    var quantize: String?

    func run() throws {
        if let quantize { return try inspectHeld(quantize) }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw FormatError(file: path, "does not exist")
        }
        if !isDirectory.boolValue, path.lowercased().hasSuffix(".gguf") { return try inspectGGUF() }
        var report: [String: Any] = [:]
        var lines: [String] = []
        let entries: [SafetensorsEntry]
        let inFolder = { (name: String) in (path as NSString).appendingPathComponent(name) }
        let has = { (name: String) in FileManager.default.fileExists(atPath: inFolder(name)) }
        if isDirectory.boolValue, has("adapter_config.json") {
            let file = try SafetensorsFile(path: inFolder("adapter_model.safetensors"))
            entries = file.entries
            let config = try JSONValue.load(path: inFolder("adapter_config.json"))
            let type = config["peft_type"]?.string ?? "?"
            report["peft_type"] = type
            lines.append("adapter: PEFT \(type), base \(config["base_model_name_or_path"]?.string ?? "not named")")
            if type == "LORA" {
                let targets = config["target_modules"]?.string ?? (config["target_modules"]?.array ?? []).compactMap(\.string).joined(separator: ", ")
                let rank = config["r"]?.int ?? 0, alpha = config["lora_alpha"]?.number ?? 0
                report["r"] = rank
                report["lora_alpha"] = alpha
                report["target_modules"] = targets
                lines.append("rank \(rank), alpha \(Output.fixed(alpha, 2))\(config["use_rslora"]?.bool == true ? " (rsLoRA)" : ""), targets: \(targets)")
            } else if let tokens = config["num_virtual_tokens"]?.int {
                report["num_virtual_tokens"] = tokens
                lines.append("\(tokens) virtual tokens")
            }
        } else if isDirectory.boolValue, has("state.json") {
            guard let data = FileManager.default.contents(atPath: inFolder("state.json")),
                  let state = try? JSONDecoder().decode(CheckpointState.self, from: data) else {
                throw FormatError(file: inFolder("state.json"), "cannot be read as a Finch checkpoint state")
            }
            let complete = has(Checkpoint.completeMarker)
            entries = try SafetensorsFile(path: inFolder("trainable.safetensors")).entries
            let moments = try SafetensorsFile(path: inFolder("optimizer.safetensors")).entries.count
            report["step"] = state.step
            report["complete"] = complete
            report["epoch"] = state.cursor.epoch
            report["position"] = state.cursor.position
            report["learning_rate"] = state.learningRate
            lines.append("checkpoint: step \(state.step)\(complete ? "" : " (incomplete: no \(Checkpoint.completeMarker) marker; --resume skips it)")")
            lines.append("data: epoch \(state.cursor.epoch), next sequence \(state.cursor.position); learning rate \(String(format: "%.3e", state.learningRate))")
            lines.append("AdamW: \(moments) moment tensors; recipe hash \(state.recipeHash)\(state.dataFingerprint.map { ", data fingerprint \($0)" } ?? "")")
        } else if isDirectory.boolValue, has("recipe.yaml") || has("checkpoints") {
            let checkpoints = Checkpoint.complete(runDirectory: path)
            if !has("recipe.yaml") {
                lines.append("recipe.yaml is missing: finch train --resume needs the run's resolved recipe there")
            }
            report["checkpoints"] = checkpoints.map(\.step)
            let newest = checkpoints.last
            entries = try newest.map { try SafetensorsFile(path: "\($0.path)/trainable.safetensors").entries } ?? []
            lines.append("run directory: \(checkpoints.count) complete checkpoint\(checkpoints.count == 1 ? "" : "s")"
                + (checkpoints.isEmpty ? "" : " (steps \(checkpoints.map { String($0.step) }.joined(separator: ", ")))"))
            lines.append(newest.map { "newest: \($0.path) (finch train --resume \(path) continues there); its trainable tensors:" }
                         ?? "nothing to resume from yet")
        } else if isDirectory.boolValue {
            guard has("config.json") else {
                throw FormatError(file: path, "is not a model folder, PEFT adapter folder, checkpoint or run directory "
                    + "(it has no config.json, adapter_config.json, state.json, recipe.yaml or checkpoints/)")
            }
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

    /// A GGUF file: version, alignment, every metadata key with its value (long arrays shortened), tensors by type.
    func inspectGGUF() throws {
        let file = try GGUFFile(path: path)
        let total = file.tensors.reduce(0) { $0 + $1.elementCount }
        var types: [String: Int] = [:]
        var typeBytes: [String: Int] = [:]
        for t in file.tensors {
            types[t.type.name, default: 0] += 1
            typeBytes[t.type.name, default: 0] += t.dataRange.count
        }
        if json {
            try Output.json([
                "format": "gguf", "version": file.version, "alignment": file.alignment, "parameters": total,
                "metadata": Dictionary(uniqueKeysWithValues: file.metadata.map { ($0.key, $0.value.shown(limit: 8)) }),
                "tensors": file.tensors.map { ["name": $0.name, "type": $0.type.name, "shape": $0.shape, "bytes": $0.dataRange.count] as [String: Any] },
            ])
            return
        }
        print("GGUF version \(file.version), alignment \(file.alignment), \(file.metadata.count) metadata keys")
        for (key, value) in file.metadata { print("  \(key): \(value.shown(limit: 8))") }
        let byType = types.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key) \(Self.megabytes(typeBytes[$0.key]!))" }
            .joined(separator: ", ")
        print("parameters: \(total.formatted()) in \(file.tensors.count) tensors (\(byType))")
        let width = file.tensors.map(\.name.count).max() ?? 0
        for t in file.tensors {
            print("  \(t.name.padding(toLength: width, withPad: " ", startingAt: 0))  \(t.type.name.padding(toLength: 5, withPad: " ", startingAt: 0))  \(String(describing: t.shape).padding(toLength: 14, withPad: " ", startingAt: 0))  \(t.dataRange.count.formatted()) bytes")
        }
    }

    static func megabytes(_ bytes: Int) -> String { String(format: "%.1f MB", Double(bytes) / 1_000_000) }

    /// The model loaded as `finch train` (recipe key `quantize`), `eval` and `generate` (`--quantize`) hold it:
    /// each weight's storage and bytes, and the totals by storage.
    func inspectHeld(_ mode: String) throws {
        let quantization = try BaseQuantization(option: mode)
        let model = try PretrainedModel.load(path, quantization: quantization).model
        var rows: [(name: String, storage: String, shape: [Int], bytes: Int)] = []
        for (path, module) in model.namedModules() {
            if let q = (module as? any QuantizedModule)?.quantized {
                rows.append((path + ".weight", q.format, q.shape, q.byteCount))
            }
        }
        for (name, tensor) in model.namedParameters() { rows.append((name, "f32", tensor.shape, 4 * tensor.count)) }
        rows.sort { $0.name < $1.name }
        let totals = QuantizedBase.storage(of: model)
        if json {
            try Output.json([
                "quantize": mode,
                "weights": rows.map { ["name": $0.name, "storage": $0.storage, "shape": $0.shape, "bytes": $0.bytes] as [String: Any] },
                "totals": totals.map { ["storage": $0.format, "tensors": $0.tensors, "bytes": $0.bytes] as [String: Any] },
            ])
            return
        }
        print("held with --quantize \(mode): " + totals.map { "\($0.format) \($0.tensors) tensors \(Self.megabytes($0.bytes))" }.joined(separator: ", ")
              + "; \(Self.megabytes(totals.reduce(0) { $0 + $1.bytes })) in all")
        let width = rows.map(\.name.count).max() ?? 0
        for r in rows {
            print("  \(r.name.padding(toLength: width, withPad: " ", startingAt: 0))  \(r.storage.padding(toLength: 5, withPad: " ", startingAt: 0))  \(String(describing: r.shape).padding(toLength: 14, withPad: " ", startingAt: 0))  \(r.bytes.formatted()) bytes")
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
        case .gptNeoX(let c):
            return ["hidden \(c.hiddenSize), \(c.layerCount) layers, \(c.headCount) heads, MLP \(c.intermediateSize), \(c.rotaryDimensions) of \(c.headDimension) dimensions a head rotary (theta \(c.ropeTheta))",
                    "vocabulary \(c.vocabularySize), positions \(c.maxPositionEmbeddings), \(c.useParallelResidual ? "parallel" : "sequential") residual, activation \(c.activation), tied embeddings \(c.tieWordEmbeddings)"]
        case .gptNeo(let c):
            return ["hidden \(c.hiddenSize), \(c.layerCount) layers (\(c.localLayers.filter { $0 }.count) local, window \(c.windowSize)), \(c.headCount) heads, MLP \(c.intermediateSize)",
                    "vocabulary \(c.vocabularySize), positions \(c.maxPositionEmbeddings), activation \(c.activation)"]
        }
    }
}
