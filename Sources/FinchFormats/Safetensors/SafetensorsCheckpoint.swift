import Foundation

/// The weights of a Hugging Face model folder: `model.safetensors`, or the shards listed by
/// `model.safetensors.index.json`, seen as one set of named tensors.
public final class SafetensorsCheckpoint: @unchecked Sendable {
    public let folder: String
    private var files: [String: SafetensorsFile] = [:]
    /// Tensor name → the file that holds it.
    private let location: [String: SafetensorsFile]

    public init(folder: String) throws {
        self.folder = folder
        let single = (folder as NSString).appendingPathComponent("model.safetensors")
        let indexPath = (folder as NSString).appendingPathComponent("model.safetensors.index.json")
        let fm = FileManager.default
        if fm.fileExists(atPath: single) {
            let file = try SafetensorsFile(path: single)
            location = Dictionary(uniqueKeysWithValues: file.entries.map { ($0.name, file) })
        } else if fm.fileExists(atPath: indexPath) {
            guard let map = try JSONValue.load(path: indexPath)["weight_map"]?.object,
                  map.values.allSatisfy({ $0.string != nil })
            else {
                throw FormatError(file: indexPath,
                                  "expected a JSON object with a \"weight_map\" of tensor name → shard file")
            }
            let weightMap = map.mapValues { $0.string! }
            var opened: [String: SafetensorsFile] = [:]
            var location: [String: SafetensorsFile] = [:]
            for shard in Set(weightMap.values).sorted() {
                guard !shard.contains("/") else {
                    throw FormatError(file: indexPath, "shard '\(shard)' must be a file name inside the folder")
                }
                opened[shard] = try SafetensorsFile(path: (folder as NSString).appendingPathComponent(shard))
            }
            for (name, shard) in weightMap {
                guard let file = opened[shard], file.entry(named: name) != nil else {
                    throw FormatError(file: indexPath,
                                      "tensor '\(name)' is listed in shard '\(shard)' but is not in it")
                }
                location[name] = file
            }
            files = opened
            self.location = location
        } else {
            throw FormatError(file: folder, "no model.safetensors or model.safetensors.index.json in the folder")
        }
    }

    public var names: [String] { location.keys.sorted() }

    public func entry(named name: String) -> SafetensorsEntry? { location[name]?.entry(named: name) }

    public func readFloats(_ name: String, into destination: UnsafeMutableBufferPointer<Float>) throws {
        guard let file = location[name] else {
            throw FormatError(file: folder, "missing tensor '\(name)'")
        }
        try file.readFloats(name, into: destination)
    }

    /// As `readFloats`, refusing a tensor that holds NaN or infinite values.
    public func readFiniteFloats(_ name: String, into destination: UnsafeMutableBufferPointer<Float>) throws {
        guard let file = location[name] else {
            throw FormatError(file: folder, "missing tensor '\(name)'")
        }
        try file.readFiniteFloats(name, into: destination)
    }

    /// The file a tensor lives in (for messages).
    public func path(of name: String) -> String { location[name]?.path ?? folder }
}
