import Foundation
import FinchFormats
import FinchModels

/// The storage types `finch export --format gguf --type …` offers.
public enum GGUFOutputType: String, CaseIterable, Sendable {
    case f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1
    /// Each tensor in its base tensor's type where Finch writes that type, else the next more precise one.
    case same

    var tensorType: GGUFTensorType? {
        switch self {
        case .f32: return .f32
        case .f16: return .f16
        case .bf16: return .bf16
        case .q8_0: return .q8_0
        case .q4_0: return .q4_0
        case .q4_1: return .q4_1
        case .q5_0: return .q5_0
        case .q5_1: return .q5_1
        case .same: return nil
        }
    }
}

/// Writes a model (an adapter merged into it, or fully fine-tuned) as a GGUF file llama.cpp runs.
public enum GGUFExport {
    /// The type Finch writes for a base tensor of `type`: itself where Finch quantises it, else the listed type of
    /// the next higher precision (a K-quant goes to the 32-block type with at least its bits per value).
    static func writableType(for type: GGUFTensorType) -> GGUFTensorType {
        if GGUFQuantization.supported.contains(type) { return type }
        switch type {
        case .q2_K, .q3_K: return .q4_0
        case .q4_K: return .q4_1
        case .q5_K: return .q5_1
        case .q6_K, .q8_K, .q8_1: return .q8_0
        default: return .f16
        }
    }

    /// llama.cpp's `general.file_type` for a file whose matrices are mostly `type`.
    static func fileType(_ type: GGUFTensorType) -> UInt32 {
        switch type {
        case .f32: return 0
        case .f16: return 1
        case .q4_0: return 2
        case .q4_1: return 3
        case .q8_0: return 7
        case .q5_0: return 8
        case .q5_1: return 9
        case .bf16: return 32
        default: return 0
        }
    }

    /// Writes `model` to `path` with the metadata of `base` (a GGUF file: everything but `general.file_type` is kept,
    /// tokenizer included). Vectors (norms, biases) stay float32 as llama.cpp keeps them; matrices take `type`, and
    /// one whose rows are not whole blocks of it takes F16. Returns one line per choice the caller did not spell
    /// out, and how much of the change to the base's matrices the written types keep (`keptChange`).
    public static func write(model: any CausalLanguageModel, base: GGUFFile, to path: String,
                             type: GGUFOutputType) throws -> [String] {
        var changed: [String: Int] = [:], unblocked: [String: Int] = [:]  // by "FROM as TO" / by type
        var matrixTypes: [GGUFTensorType: Int] = [:]
        var change = KeptChange()
        let embeddingType = base.tensor(named: "token_embd.weight")?.type ?? .f32
        var tensors: [GGUFWriter.Tensor] = []
        for (name, shape, values) in try GGUFModel.ggufValues(of: model) {
            var stored = GGUFTensorType.f32
            if shape.count == 2 {
                if let fixed = type.tensorType {
                    stored = fixed
                } else {
                    // A head untied from the embedding by the merge has no base tensor; it takes the table's type.
                    let baseType = base.tensor(named: name)?.type ?? embeddingType
                    stored = writableType(for: baseType)
                    if stored != baseType { changed["\(baseType.name) as \(stored.name)", default: 0] += 1 }
                }
                if !GGUFQuantization.canStore(rowLength: shape[1], as: stored) {
                    unblocked[stored.name, default: 0] += 1
                    stored = .f16
                }
                matrixTypes[stored, default: 0] += 1
            }
            let bytes = values.withUnsafeBufferPointer { GGUFQuantization.quantize($0, as: stored) }
            if let info = base.tensor(named: name), info.shape == shape {
                try change.add(base: try base.floats(info), intended: values, written: bytes, type: stored, name: name)
            }
            tensors.append(GGUFWriter.Tensor(name: name, shape: shape, type: stored, bytes: bytes))
        }
        var metadata = base.metadata.filter { $0.key != "general.file_type" }
        let mostly = matrixTypes.max { $0.value < $1.value || ($0.value == $1.value && $0.key.rawValue > $1.key.rawValue) }?.key ?? .f32
        metadata.append(("general.file_type", .uint32(fileType(mostly))))
        try GGUFWriter.write(metadata: metadata, tensors: tensors, to: path)
        var lines = changed.sorted { $0.key < $1.key }.map { "wrote \($0.value) \($0.key) matrices (Finch does not quantise to the base's type)" }
            + unblocked.sorted { $0.key < $1.key }.map { "wrote \($0.value) matrices as F16: their rows are not whole \($0.key) blocks of 32" }
        if let kept = change.fraction {
            let percent = String(format: "%.1f", 100 * kept)
            lines.append("the written weights keep \(percent) % of the change made to the base's weights"
                + (kept < 0.9 ? " (the rest is finer than the quantisation step: use a more precise --type, or --format gguf-lora to keep the adapter apart)" : ""))
        }
        return lines
    }

    /// How much of an intended change to the base's weights survives storage: the written change projected on the
    /// intended one, ⟨written − base, intended − base⟩ / ‖intended − base‖², summed over every matrix (1 when the
    /// storage keeps it all; 0 when the written weights round back to the base's).
    struct KeptChange {
        var projected = 0.0, squared = 0.0

        mutating func add(base: [Float], intended: [Float], written: [UInt8], type: GGUFTensorType, name: String) throws {
            var stored = [Float](repeating: 0, count: intended.count)
            try written.withUnsafeBytes { raw in
                try stored.withUnsafeMutableBufferPointer { try GGUFDequantization.dequantize(raw, type: type, into: $0, what: name) }
            }
            for i in intended.indices {
                let d = Double(intended[i]) - Double(base[i])
                projected += (Double(stored[i]) - Double(base[i])) * d
                squared += d * d
            }
        }

        /// nil when nothing was changed.
        var fraction: Double? { squared > 0 ? projected / squared : nil }
    }
}
