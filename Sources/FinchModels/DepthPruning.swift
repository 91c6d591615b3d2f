import Foundation
import FinchFormats

/// A model cut down to some of its decoder layers (depth pruning), written in the format it came in, for a student
/// to be distilled from the full model. The kept layers are renumbered in order; everything else (embeddings,
/// final norm, head, tokenizer) is kept as it is, and every tensor keeps its stored type (a GGUF's quantised
/// blocks are copied byte for byte).
public enum DepthPruning {
    /// Checks `keep` against a model of `layerCount` layers: at least one, ascending, each within the model.
    public static func check(_ keep: [Int], layerCount: Int) throws {
        guard !keep.isEmpty else { throw FormatError(file: "--keep-layers", "keeps no layer") }
        if let bad = keep.first(where: { $0 < 0 || $0 >= layerCount }) {
            throw FormatError(file: "--keep-layers", "layer \(bad) is not one of the model's \(layerCount) layers (0…\(layerCount - 1))")
        }
        if let i = keep.indices.dropFirst().first(where: { keep[$0] <= keep[$0 - 1] }) {
            throw FormatError(file: "--keep-layers", "layers must be listed once each, in ascending order: \(keep[i]) follows \(keep[i - 1])")
        }
    }

    /// The new name of a tensor of layer-numbered `name` (`model.layers.7.mlp.up_proj.weight`, `blk.7.ffn_up.weight`):
    /// the layer's place in `keep`, nil for a layer not kept; names outside the layers are kept as they are.
    static func renamed(_ name: String, keep: [Int: Int]) -> String?? {
        var parts = name.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard let at = parts.indices.dropFirst().first(where: {
            ["layers", "h", "blk"].contains(parts[$0 - 1]) && Int(parts[$0]) != nil
        }) else { return .some(name) }
        guard let place = keep[Int(parts[at])!] else { return .some(nil) }
        parts[at] = String(place)
        return .some(parts.joined(separator: "."))
    }

    /// Prunes the Hugging Face folder `folder` into `out`: config.json with the new layer count (and the per-layer
    /// lists `layer_types`, GPT-Neo's `attention_layers` and `attention_types`, cut the same way), model.safetensors
    /// with the kept layers renumbered, every other file (tokenizer, generation config, chat template) copied.
    /// Returns the layer count before pruning.
    @discardableResult
    public static func pruneFolder(_ folder: String, keep: [Int], to out: String) throws -> Int {
        let configPath = (folder as NSString).appendingPathComponent("config.json")
        guard let data = FileManager.default.contents(atPath: configPath),
              var config = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw FormatError(file: configPath, "cannot read it as a JSON object")
        }
        _ = try ModelConfig.load(path: configPath)  // a family Finch reads
        guard let countKey = ["num_hidden_layers", "n_layer", "num_layers"].first(where: { config[$0] is Int }),
              let layerCount = config[countKey] as? Int else {
            throw FormatError(file: configPath, "has no layer count (num_hidden_layers, n_layer or num_layers)")
        }
        try check(keep, layerCount: layerCount)
        config[countKey] = keep.count
        for key in ["layer_types", "attention_layers"] {
            guard let list = config[key] as? [Any] else { continue }
            guard list.count == layerCount else {
                throw FormatError(file: configPath, "\(key) has \(list.count) entries for \(countKey) \(layerCount)")
            }
            config[key] = keep.map { list[$0] }
        }
        if config["attention_types"] != nil, let layers = config["attention_layers"] as? [Any] {
            config["attention_types"] = [[layers, 1]]  // GPT-Neo rebuilds attention_layers from these
        }
        let checkpoint = try SafetensorsCheckpoint(folder: folder)
        let places = Dictionary(uniqueKeysWithValues: keep.enumerated().map { ($1, $0) })
        var items: [SafetensorsWriter.Item] = []
        let reader = TensorReader(checkpoint)
        for name in checkpoint.names {
            guard case .some(.some(let newName)) = renamed(name, keep: places), let entry = checkpoint.entry(named: name) else { continue }
            guard entry.dtype.isLoadable else {
                throw FormatError(file: checkpoint.path(of: name), "tensor '\(name)' is \(entry.dtype.rawValue); Finch copies F32, F16 and BF16 tensors")
            }
            items.append(SafetensorsWriter.Item(name: newName, shape: entry.shape, count: entry.elementCount, dtype: entry.dtype) { offset, out in
                reader.read(name, count: entry.elementCount, offset: offset, into: out)
            })
        }
        try Folder.create(out)
        let weights = (out as NSString).appendingPathComponent("model.safetensors")
        try SafetensorsWriter.write(items, metadata: ["format": "pt"], to: weights)
        if let error = reader.error {
            try? FileManager.default.removeItem(atPath: weights)
            throw error
        }
        let json = try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
        try AtomicFile.write(json + Data("\n".utf8), to: (out as NSString).appendingPathComponent("config.json"))
        for file in try FileManager.default.contentsOfDirectory(atPath: folder).sorted()
            where file != "config.json" && !(file.hasPrefix("model") && file.contains(".safetensors")) {
            let from = (folder as NSString).appendingPathComponent(file), to = (out as NSString).appendingPathComponent(file)
            var isFolder: ObjCBool = false
            guard FileManager.default.fileExists(atPath: from, isDirectory: &isFolder), !isFolder.boolValue else { continue }
            try? FileManager.default.removeItem(atPath: to)
            try FileManager.default.copyItem(atPath: from, toPath: to)
        }
        return layerCount
    }

    /// Prunes the GGUF file `path` into `out`: `ARCH.block_count` set to the kept count, the kept layers' tensors
    /// renumbered with their bytes as they are, every other tensor and key (the tokenizer's) kept. Returns the
    /// layer count before pruning.
    @discardableResult
    public static func pruneGGUF(_ path: String, keep: [Int], to out: String) throws -> Int {
        let file = try GGUFFile(path: path)
        _ = try GGUFModel.config(file)  // an architecture Finch reads
        let architecture = file["general.architecture"]?.string ?? ""
        let countKey = "\(architecture).block_count"
        guard let layerCount = file[countKey]?.integer else { throw FormatError(file: path, "missing \(countKey)") }
        try check(keep, layerCount: layerCount)
        let places = Dictionary(uniqueKeysWithValues: keep.enumerated().map { ($1, $0) })
        var tensors: [GGUFWriter.Tensor] = []
        for info in file.tensors {
            guard case .some(.some(let name)) = renamed(info.name, keep: places) else { continue }
            tensors.append(GGUFWriter.Tensor(name: name, shape: info.shape, type: info.type, bytes: [UInt8](file.rawBytes(info))))
        }
        let metadata = file.metadata.map { $0.key == countKey ? (key: countKey, value: GGUFValue.uint32(UInt32(keep.count))) : $0 }
        try GGUFWriter.write(metadata: metadata, tensors: tensors, to: out)
        return layerCount
    }
}

/// Reads a checkpoint's tensors for the writer, which asks for each in slices: each tensor is read once, kept while
/// its slices are written, and let go after the last. The first error is kept for the caller (the writer's reads
/// cannot throw).
private final class TensorReader {
    let checkpoint: SafetensorsCheckpoint
    private var name = "", values: [Float] = []
    private(set) var error: Error?

    init(_ checkpoint: SafetensorsCheckpoint) { self.checkpoint = checkpoint }

    func read(_ tensor: String, count: Int, offset: Int, into out: UnsafeMutableBufferPointer<Float>) {
        if tensor != name || values.count != count {
            name = tensor
            values = [Float](repeating: 0, count: count)
            do {
                try values.withUnsafeMutableBufferPointer { try checkpoint.readFloats(tensor, into: $0) }
            } catch {
                self.error = self.error ?? error
            }
        }
        for i in out.indices { out[i] = values[offset + i] }
        if offset + out.count == count { values = [] }
    }
}
