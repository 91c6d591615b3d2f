/// ggml's storage types turned into float32, value for value as gguf-py's `quants.dequantize` gives them: each
/// block's scale (and minimum) read as float16 and widened, then `d · q` (`+ m`) in float32, in that order.
public enum GGUFDequantization {
    /// The types `dequantize` reads.
    public static let supported: [GGUFTensorType] = [.f32, .f16, .bf16, .q8_0, .q4_0, .q4_1, .q5_0, .q5_1,
                                                     .q2_K, .q3_K, .q4_K, .q5_K, .q6_K]

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
        case .f32: DTypeConversion.toFloat32(source, dtype: .f32, into: destination)
        case .f16: DTypeConversion.toFloat32(source, dtype: .f16, into: destination)
        case .bf16: DTypeConversion.toFloat32(source, dtype: .bf16, into: destination)
        case .q8_0, .q4_0, .q4_1, .q5_0, .q5_1:
            dequantizeBlocks(source.baseAddress!, type: type, blocks: blocks, into: out)
        case .q2_K, .q3_K, .q4_K, .q5_K, .q6_K:
            for b in 0..<blocks {
                let block = UnsafeRawBufferPointer(rebasing: source[(b * bytes)..<((b + 1) * bytes)])
                let y = out + b * values
                switch type {
                case .q2_K: q2K(block, y)
                case .q3_K: q3K(block, y)
                case .q4_K: q45K(block, y, highBits: nil)
                case .q5_K: q45K(block, y, highBits: 16)
                default: q6K(block, y)
                }
            }
        default:
            let names = supported.map(\.name).joined(separator: ", ")
            throw FormatError(file: what, "is stored as \(type.name), which Finch cannot read yet (it reads \(names))")
        }
    }

    /// The values of `blocks` whole blocks of a legacy type (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1) at `source` into
    /// `out`, the sizes checked by `dequantize`. Each type's loop is its own function over raw pointers so that
    /// it vectorises. Other types do nothing.
    static func dequantizeBlocks(_ source: UnsafeRawPointer, type: GGUFTensorType, blocks: Int,
                                        into out: UnsafeMutablePointer<Float>) {
        switch type {
        case .q8_0: q8_0(source, blocks, out)
        case .q4_0: q4_0(source, blocks, out)
        case .q4_1: q4_1(source, blocks, out)
        case .q5_0: q5(source, blocks, out, hasMinimum: false)
        case .q5_1: q5(source, blocks, out, hasMinimum: true)
        default: break
        }
    }

    /// Q8_0: d, then 32 signed bytes; d · q.
    @inline(never)
    static func q8_0(_ source: UnsafeRawPointer, _ blocks: Int, _ out: UnsafeMutablePointer<Float>) {
        for b in 0..<blocks {
            let block = source + b * 34, d = half(block, 0), y = out + b * 32
            let q = (block + 2).assumingMemoryBound(to: Int8.self)
            for j in 0..<32 { y[j] = Float(q[j]) * d }
        }
    }

    /// Q4_0: d, then 16 bytes of two 4-bit values (low nibbles the first 16); d · (q − 8).
    @inline(never)
    static func q4_0(_ source: UnsafeRawPointer, _ blocks: Int, _ out: UnsafeMutablePointer<Float>) {
        for b in 0..<blocks {
            let block = source + b * 18, d = half(block, 0), y = out + b * 32
            let q = (block + 2).assumingMemoryBound(to: UInt8.self)
            for j in 0..<16 {
                y[j] = d * Float(Int32(q[j] & 0x0F) - 8)
                y[j + 16] = d * Float(Int32(q[j] >> 4) - 8)
            }
        }
    }

    /// Q4_1: d, m, then 16 bytes of two 4-bit values; d · q + m.
    @inline(never)
    static func q4_1(_ source: UnsafeRawPointer, _ blocks: Int, _ out: UnsafeMutablePointer<Float>) {
        for b in 0..<blocks {
            let block = source + b * 20, d = half(block, 0), m = half(block, 2), y = out + b * 32
            let q = (block + 4).assumingMemoryBound(to: UInt8.self)
            for j in 0..<16 {
                y[j] = d * Float(q[j] & 0x0F) + m
                y[j + 16] = d * Float(q[j] >> 4) + m
            }
        }
    }

    /// Q5_0 and Q5_1: d (and m), 32 high bits, then 16 bytes of low nibbles; d · (q − 16), or d · q + m.
    @inline(never)
    static func q5(_ source: UnsafeRawPointer, _ blocks: Int, _ out: UnsafeMutablePointer<Float>, hasMinimum: Bool) {
        let size = hasMinimum ? 24 : 22, bitsAt = hasMinimum ? 4 : 2
        for b in 0..<blocks {
            let block = source + b * size, d = half(block, 0), y = out + b * 32
            let m = hasMinimum ? half(block, 2) : 0
            let high = UInt32(littleEndian: block.loadUnaligned(fromByteOffset: bitsAt, as: UInt32.self))
            let q = (block + bitsAt + 4).assumingMemoryBound(to: UInt8.self)
            for j in 0..<16 {
                let low = Int32(q[j] & 0x0F) | Int32((high >> UInt32(j)) & 1) << 4
                let upper = Int32(q[j] >> 4) | Int32((high >> UInt32(j + 16)) & 1) << 4
                if hasMinimum {
                    y[j] = d * Float(low) + m
                    y[j + 16] = d * Float(upper) + m
                } else {
                    y[j] = d * Float(low - 16)
                    y[j + 16] = d * Float(upper - 16)
                }
            }
        }
    }

    static func half(_ source: UnsafeRawPointer, _ offset: Int) -> Float {
        Float(Float16(bitPattern: UInt16(littleEndian: source.loadUnaligned(fromByteOffset: offset, as: UInt16.self))))
    }

    // K-quants: super-blocks of 256 values in sub-blocks of 16 or 32, each with its own scale (and minimum)
    // quantised against the super-block's float16 scale. Value v of a super-block comes from the bytes and bit
    // positions gguf-py's reshapes give it.

    /// Q2_K: 16 scale bytes (low nibble scale, high nibble minimum), 64 bytes of 2-bit values, d, dmin.
    static func q2K(_ block: UnsafeRawBufferPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(block, 80), dmin = half(block, 82)
        for v in 0..<256 {
            let k = v / 16, scale = block[k]
            let group = v / 128, shift = (v % 128) / 32, i = v % 32
            let q = (block[16 + group * 32 + i] >> UInt8(2 * shift)) & 3
            y[v] = (d * Float(scale & 0x0F)) * Float(q) - dmin * Float(scale >> 4)
        }
    }

    /// Q3_K: 32 bytes of high bits (set means no offset), 64 bytes of 2-bit values, 12 bytes of 6-bit scales, d.
    static func q3K(_ block: UnsafeRawBufferPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(block, 108)
        var scales = [Float](repeating: 0, count: 16)
        for k in 0..<16 {
            let low = (block[96 + k % 8] >> UInt8(4 * (k / 8))) & 0x0F
            let high = (block[104 + k % 4] >> UInt8(2 * (k / 4))) & 0x03
            scales[k] = d * Float(Int(low | high << 4) - 32)
        }
        for v in 0..<256 {
            let group = v / 128, shift = (v % 128) / 32, i = v % 32
            let low = Int((block[32 + group * 32 + i] >> UInt8(2 * shift)) & 3)
            let high = Int((block[i] >> UInt8(v / 32)) & 1)
            y[v] = scales[v / 16] * Float(low - ((high ^ 1) << 2))
        }
    }

    /// Q4_K and Q5_K: d, dmin, 12 bytes of 6-bit scales and minimums for 8 sub-blocks of 32, (Q5_K: 32 bytes of
    /// fifth bits,) 128 bytes of 4-bit values.
    static func q45K(_ block: UnsafeRawBufferPointer, _ y: UnsafeMutablePointer<Float>, highBits: Int?) {
        let d = half(block, 0), dmin = half(block, 2)
        let s = { (i: Int) in block[4 + i] }
        let quants = 16 + (highBits == nil ? 0 : 32)
        for j in 0..<8 {
            let scale = j < 4 ? s(j) & 0x3F : (s(8 + j - 4) & 0x0F) | ((s(j - 4) >> 2) & 0x30)
            let minimum = j < 4 ? s(4 + j) & 0x3F : (s(8 + j - 4) >> 4) | ((s(4 + j - 4) >> 2) & 0x30)
            let dj = d * Float(scale), mj = dmin * Float(minimum)
            for i in 0..<32 {
                var q = Int((block[quants + (j / 2) * 32 + i] >> UInt8(4 * (j % 2))) & 0x0F)
                if highBits != nil { q |= Int((block[16 + i] >> UInt8(j)) & 1) << 4 }
                y[j * 32 + i] = dj * Float(q) - mj
            }
        }
    }

    /// Q6_K: 128 bytes of low 4 bits, 64 bytes of high 2 bits, 16 signed 8-bit scales (one per 16 values), d.
    static func q6K(_ block: UnsafeRawBufferPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(block, 208)
        for v in 0..<256 {
            let group = v / 128
            let low = (block[group * 64 + v % 64] >> UInt8(4 * ((v % 128) / 64))) & 0x0F
            let high = (block[128 + group * 32 + v % 32] >> UInt8(2 * ((v % 128) / 32))) & 0x03
            let scale = d * Float(Int8(bitPattern: block[192 + v / 16]))
            y[v] = scale * Float(Int(low | high << 4) - 32)
        }
    }

    /// The float16 at `offset`, widened exactly.
    static func half(_ source: UnsafeRawBufferPointer, _ offset: Int) -> Float { half(source.baseAddress!, offset) }
}
