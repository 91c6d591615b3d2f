import FinchFormats
import FinchNN
import FinchTensor

/// How a frozen base model's projections are held while adapters train over it (recipe key `quantize`,
/// `--quantize` of eval and generate).
public enum BaseQuantization: String, CaseIterable, Sendable {
    /// Every weight in float32.
    case none
    /// A GGUF file's own quantised blocks, as stored (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, K-quants); float tensors stay
    /// float32.
    case keep
    /// QLoRA's 4-bit NormalFloat, blocks of 64 with double quantisation, made at load from the float weights.
    case nf4
    /// ggml's 8-bit blocks of 32, made at load.
    case q8_0
    /// ggml's 4-bit blocks of 32, made at load.
    case q4_0
    /// ggml's 4-bit blocks of 32 with a minimum, made at load (the type of the quickstart's GGUF).
    case q4_1

    /// The ggml type a mode quantises to at load, if it is one.
    var ggmlType: GGUFTensorType? {
        switch self {
        case .q8_0: .q8_0
        case .q4_0: .q4_0
        case .q4_1: .q4_1
        default: nil
        }
    }
}

/// A frozen base held quantised: `QuantizedLinear` in place of each decoder-layer `Linear`, and for ggml's types
/// a `QuantizedEmbedding` in place of a LLaMA token table (which a tied head reads too). Norms, biases and an
/// untied head stay float32; so does the table under nf4, as QLoRA keeps it.
public enum QuantizedBase {
    /// Quantises every decoder-layer projection of `model` that is still float32 (nf4, q8_0, q4_0, q4_1), and
    /// with a ggml type a LLaMA token table, freeing each float weight; a matrix whose rows are not whole blocks of
    /// the format stays float32 (`storage(of:)` shows which). Only modules whose path `including` accepts are
    /// looked at (all by default). Returns how many were quantised.
    @discardableResult
    public static func quantize(_ model: any CausalLanguageModel, as mode: BaseQuantization,
                                including: (String) -> Bool = { _ in true }) throws -> Int {
        guard mode != .none, mode != .keep else { return 0 }
        var count = 0
        if let type = mode.ggmlType, case .llama = model.config, including("model.embed_tokens"),
           let table = model.namedModules().first(where: { $0.name == "model.embed_tokens" })?.module as? Embedding,
           let matrix = try ggmlMatrix(table.weight, as: type, name: "model.embed_tokens.weight") {
            try model.replaceModule(at: "model.embed_tokens", with: QuantizedEmbedding(matrix))
            count += 1
        }
        for (path, module) in model.namedModules() {
            guard let linear = module as? Linear, isDecoderProjection(path), including(path) else { continue }
            let made: QuantizedMatrix?
            if let type = mode.ggmlType {
                made = try ggmlMatrix(linear.weight, as: type, name: path + ".weight")
            } else {  // nf4
                made = linear.inputDimensions % NF4.blockSize == 0 ? try QuantizedMatrix.nf4(linear.weight.detached()) : nil
            }
            guard let matrix = made else { continue }
            try model.replaceModule(at: path, with: QuantizedLinear(matrix, bias: linear.bias))
            count += 1
        }
        return count
    }

    /// `weight` [rows, columns] quantised to ggml's `type` as gguf-py does, or nil when its rows are not whole
    /// blocks of the type.
    static func ggmlMatrix(_ weight: Tensor, as type: GGUFTensorType, name: String) throws -> QuantizedMatrix? {
        let (rows, columns) = (weight.shape[0], weight.shape[1])
        guard GGUFQuantization.canStore(rowLength: columns, as: type) else { return nil }
        let bytes = GGUFQuantization.quantize(UnsafeBufferPointer(weight.storage.buffer), as: type)
        return try ggufMatrix(rows: rows, columns: columns, type: type, bytes: bytes, name: name)
    }

    /// Throws, naming the first quantised layer, when `model` holds any: writing its parameters alone (`purpose`)
    /// would leave those weights out.
    public static func requireFloat(_ model: any CausalLanguageModel, for purpose: String) throws {
        if let (path, module) = model.namedModules().first(where: { $0.module is any QuantizedModule }),
           let q = (module as? any QuantizedModule)?.quantized {
            throw FormatError(file: path, "is held as \(q.format); \(purpose) need the base loaded in float32 (quantize: none)")
        }
    }

    /// A projection inside a decoder layer (`model.layers.3.self_attn.q_proj`), not the table or the head.
    static func isDecoderProjection(_ path: String) -> Bool { path.contains(".layers.") || path.contains(".h.") }

    /// A matrix over GGUF blocks of `type`, read by `GGUFDequantization`.
    static func ggufMatrix(rows: Int, columns: Int, type: GGUFTensorType, bytes: [UInt8],
                           name: String) throws -> QuantizedMatrix {
        let (blockValues, blockBytes) = type.block
        guard GGUFDequantization.supported.contains(type) else {
            throw FormatError(file: name, "is stored as \(type.name), which Finch cannot read yet")
        }
        return try QuantizedMatrix(rows: rows, columns: columns, format: type.name.lowercased(), blockValues: blockValues,
                                   blockBytes: blockBytes, data: bytes,
                                   integerLayout: IntegerBlockLayout(rawValue: type.name.lowercased())) { source, _, blocks, out in
            // The type is one `GGUFDequantization` reads and the sizes are whole blocks, so this cannot fail.
            try? GGUFDequantization.dequantize(UnsafeRawBufferPointer(start: source, count: blocks * blockBytes),
                                               type: type, into: UnsafeMutableBufferPointer(start: out, count: blocks * blockValues),
                                               what: name)
        }
    }

    /// What each kind of weight is held as, and the bytes it takes: for logs and `finch inspect`.
    public static func storage(of model: any CausalLanguageModel) -> [(format: String, tensors: Int, bytes: Int)] {
        var byFormat: [String: (tensors: Int, bytes: Int)] = [:]
        var seen = Set<ObjectIdentifier>()
        for (_, module) in model.namedModules() {
            if let q = module as? any QuantizedModule {
                byFormat[q.quantized.format, default: (0, 0)].tensors += 1
                byFormat[q.quantized.format, default: (0, 0)].bytes += q.quantized.byteCount
            }
        }
        for (_, tensor) in model.namedParameters() where seen.insert(ObjectIdentifier(tensor)).inserted {
            byFormat["f32", default: (0, 0)].tensors += 1
            byFormat["f32", default: (0, 0)].bytes += 4 * tensor.count
        }
        return byFormat.keys.sorted().map { (format: $0, tensors: byFormat[$0]!.tensors, bytes: byFormat[$0]!.bytes) }
    }
}
