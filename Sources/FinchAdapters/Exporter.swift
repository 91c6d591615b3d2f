import Foundation
import FinchFormats
import FinchModels

/// Writes a model as a Hugging Face folder beside the files of the folder it came from.
public enum Exporter {
    /// Files copied unchanged from the base folder when present.
    static let tokenizerFiles = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                 "generation_config.json"]

    /// config.json (the base's, with its dtype field updated), model.safetensors, and the tokenizer files.
    public static func writeMergedFolder(model: any CausalLanguageModel, baseFolder: String, to out: String,
                                         dtype: SafetensorsDType, dtypeName: String) throws {
        let fm = FileManager.default
        // Into the base's own folder, the export would replace the weights and tokenizer it was made from.
        if isSameFile(out, baseFolder) {
            throw FormatError(file: out, "is the base model's folder (\(baseFolder)); the merged model would be written over the weights it is made from. Give another output folder")
        }
        for (name, tensor) in model.namedParameters() where !tensor.isFinite {
            throw AdapterError("merged tensor '\(name)' is not finite; nothing was written")
        }
        let items = try HuggingFaceFolder.checkpointItems(of: model, dtype: dtype)
        try Folder.create(out)
        try SafetensorsWriter.write(items, metadata: ["format": "pt"],
                                    to: (out as NSString).appendingPathComponent("model.safetensors"))
        let configPath = (baseFolder as NSString).appendingPathComponent("config.json")
        guard let data = fm.contents(atPath: configPath),
              var config = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw FormatError(file: configPath, "cannot read the base config")
        }
        config["dtype"] = dtypeName
        // An adapted embedding unties the head (it keeps the base table), and both tables are written.
        if case .llama(let c) = model.config, !c.tieWordEmbeddings, config["tie_word_embeddings"] as? Bool == true {
            config["tie_word_embeddings"] = false
        }
        if config["torch_dtype"] != nil { config["torch_dtype"] = dtypeName }
        let out_ = try JSONSerialization.data(withJSONObject: config,
                                              options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        try AtomicFile.write(out_ + Data("\n".utf8), to: (out as NSString).appendingPathComponent("config.json"))
        for file in tokenizerFiles {
            let source = (baseFolder as NSString).appendingPathComponent(file)
            let destination = (out as NSString).appendingPathComponent(file)
            guard fm.fileExists(atPath: source) else { continue }
            guard let contents = fm.contents(atPath: source) else { throw FormatError(file: source, "cannot be read") }
            try AtomicFile.write(contents, to: destination)  // a file already there is replaced only once the copy is whole
        }
    }

    /// Refuses an output folder that would lose something: the base model's own folder (the export reads its
    /// weights and tokenizer), a path that is a file, or, unless `replacing`, a folder that already holds files
    /// (another model, or someone's work).
    public static func checkOutputFolder(_ out: String, baseFolder: String, replacing: Bool) throws {
        if isSameFile(out, baseFolder) {
            throw FormatError(file: out, "is the base model's folder (\(baseFolder)); the merged model would be written over the weights it is made from. Give another output folder")
        }
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: out, isDirectory: &isFolder) else { return }
        guard isFolder.boolValue else { throw FormatError(file: out, "is a file, not a folder; choose another output folder") }
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: out)) ?? []).sorted()
        guard !replacing, !names.isEmpty else { return }
        let shown = names.prefix(3).joined(separator: ", ") + (names.count > 3 ? " and \(names.count - 3) more" : "")
        throw FormatError(file: out, "already holds files (\(shown)); pass --force to replace what export writes there, or choose another output folder")
    }

    /// Whether two paths name one existing file or folder (through symbolic links, `..` or another spelling).
    static func isSameFile(_ a: String, _ b: String) -> Bool {
        var first = stat(), second = stat()
        guard stat(a, &first) == 0, stat(b, &second) == 0 else { return false }
        return first.st_dev == second.st_dev && first.st_ino == second.st_ino
    }
}

extension Exporter {
    /// Refuses an output file that would lose something: the base model's own file, a folder, or, unless
    /// `replacing`, a file that already exists.
    public static func checkOutputFile(_ out: String, base: String, replacing: Bool) throws {
        if isSameFile(out, base) {
            throw FormatError(file: out, "is the base model's file; the result would be written over the weights it is made from. Give another output file")
        }
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: out, isDirectory: &isFolder) else { return }
        if isFolder.boolValue { throw FormatError(file: out, "is a folder; give the path of the file to write") }
        if !replacing { throw FormatError(file: out, "already exists; pass --force to replace it, or choose another output file") }
    }
}
