/// ggml's storage types turned into float32, value for value as gguf-py's `quants.dequantize` gives them: each
/// block's scale (and minimum) read as float16 and widened, then `d · q` (`+ m`) in float32, in that order.
public enum GGUFDequantization {
    /// The types `dequantize` reads.
    public static let supported: [GGUFTensorType] = [.f32, .f16, .bf16, .q8_0, .q4_0, .q4_1, .q5_0, .q5_1]

    /// Writes the values of `source` (whole blocks of `type`) into `destination`.
    /// - Throws: for a type not yet read, or bytes that are not whole blocks for `destination`'s count; `what`
    ///   names the tensor in the message.
    public static func dequantize(_ source: UnsafeRawBufferPointer, type: GGUFTensorType,
                                  into destination: UnsafeMutableBufferPointer<Float>, what: String) throws {
        let (values, bytes) = type.block
        guard destination.count % values == 0, source.count == destination.count / values * bytes else {
            throw FormatError(file: what, "holds \(source.count) bytes, not \(destination.count) \(type.name) values")
        }
        let blocks = destination.count / values
        guard let out = destination.baseAddress else { return }
        switch type {
        case .f32:
            for i in 0..<destination.count { out[i] = Float(bitPattern: UInt32(littleEndian: source.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))) }
        case .f16:
            for i in 0..<destination.count { out[i] = half(source, 2 * i) }
        case .bf16:
            for i in 0..<destination.count {
                out[i] = Float(bitPattern: UInt32(UInt16(littleEndian: source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) << 16)
            }
        case .q8_0:
            for b in 0..<blocks {
                let base = b * bytes, d = half(source, base), y = out + b * values
                for j in 0..<32 { y[j] = Float(Int8(bitPattern: source[base + 2 + j])) * d }
            }
        case .q4_0:
            for b in 0..<blocks {
                let base = b * bytes, d = half(source, base), y = out + b * values
                for j in 0..<16 {
                    let q = source[base + 2 + j]
                    y[j] = d * Float(Int(q & 0x0F) - 8)
                    y[j + 16] = d * Float(Int(q >> 4) - 8)
                }
            }
        case .q4_1:
            for b in 0..<blocks {
                let base = b * bytes, d = half(source, base), m = half(source, base + 2), y = out + b * values
                for j in 0..<16 {
                    let q = source[base + 4 + j]
                    y[j] = d * Float(q & 0x0F) + m
                    y[j + 16] = d * Float(q >> 4) + m
                }
            }
        case .q5_0:
            for b in 0..<blocks {
                let base = b * bytes, d = half(source, base), y = out + b * values
                let high = UInt32(littleEndian: source.loadUnaligned(fromByteOffset: base + 2, as: UInt32.self))
                for j in 0..<16 {
                    let q = source[base + 6 + j]
                    let low = Int(q & 0x0F) | Int((high >> UInt32(j)) & 1) << 4
                    let upper = Int(q >> 4) | Int((high >> UInt32(j + 16)) & 1) << 4
                    y[j] = d * Float(low - 16)
                    y[j + 16] = d * Float(upper - 16)
                }
            }
        case .q5_1:
            for b in 0..<blocks {
                let base = b * bytes, d = half(source, base), m = half(source, base + 2), y = out + b * values
                let high = UInt32(littleEndian: source.loadUnaligned(fromByteOffset: base + 4, as: UInt32.self))
                for j in 0..<16 {
                    let q = source[base + 8 + j]
                    let low = Int(q & 0x0F) | Int((high >> UInt32(j)) & 1) << 4
                    let upper = Int(q >> 4) | Int((high >> UInt32(j + 16)) & 1) << 4
                    y[j] = d * Float(low) + m
                    y[j + 16] = d * Float(upper) + m
                }
            }
        default:
            let names = supported.map(\.name).joined(separator: ", ")
            throw FormatError(file: what, "is stored as \(type.name), which Finch cannot read yet (it reads \(names))")
        }
    }

    /// The float16 at `offset`, widened exactly.
    static func half(_ source: UnsafeRawBufferPointer, _ offset: Int) -> Float {
        Float(Float16(bitPattern: UInt16(littleEndian: source.loadUnaligned(fromByteOffset: offset, as: UInt16.self))))
    }
}
