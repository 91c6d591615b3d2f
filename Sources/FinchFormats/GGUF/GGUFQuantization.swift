/// float32 values written as ggml blocks, byte for byte as gguf-py's `quants.quantize` writes them (its port of
/// ggml's reference quantisers): per block of 32, the scale (and minimum) computed in float32, rounded to float16
/// to be stored, and each value's code from the float32 scale, truncated after adding ½ (rounded half away from
/// zero for Q8_0).
public enum GGUFQuantization {
    /// The types `quantize` writes.
    public static let supported: [GGUFTensorType] = [.f32, .f16, .bf16, .q8_0, .q4_0, .q4_1, .q5_0, .q5_1]

    /// Whether a tensor whose rows hold `rowLength` values can be stored as `type` (block types need whole blocks
    /// in every row).
    public static func canStore(rowLength: Int, as type: GGUFTensorType) -> Bool {
        supported.contains(type) && rowLength % type.block.values == 0
    }

    /// The bytes of `values` as `type`; the count must be a whole number of blocks (see `canStore`).
    public static func quantize(_ values: UnsafeBufferPointer<Float>, as type: GGUFTensorType) -> [UInt8] {
        let (blockValues, blockBytes) = type.block
        precondition(supported.contains(type) && values.count % blockValues == 0,
                     "internal: \(values.count) values cannot be stored as \(type.name)")
        var out = [UInt8](repeating: 0, count: values.count / blockValues * blockBytes)
        out.withUnsafeMutableBytes { raw in
            func put16(_ bits: UInt16, _ at: Int) { raw.storeBytes(of: bits.littleEndian, toByteOffset: at, as: UInt16.self) }
            switch type {
            case .f32:
                for (i, v) in values.enumerated() { raw.storeBytes(of: v.bitPattern.littleEndian, toByteOffset: 4 * i, as: UInt32.self) }
            case .f16:
                for (i, v) in values.enumerated() { put16(Float16(v).bitPattern, 2 * i) }
            case .bf16:
                for (i, v) in values.enumerated() { put16(bfloat16(v), 2 * i) }
            default:
                for b in 0..<(values.count / blockValues) {
                    let x = UnsafeBufferPointer(rebasing: values[(b * blockValues)..<((b + 1) * blockValues)])
                    quantizeBlock(x, type, UnsafeMutableRawBufferPointer(rebasing: raw[(b * blockBytes)..<((b + 1) * blockBytes)]))
                }
            }
        }
        return out
    }

    /// gguf-py's float32 → bfloat16: NaN made quiet, everything else rounded to nearest even.
    static func bfloat16(_ v: Float) -> UInt16 {
        var n = v.bitPattern
        if n & 0x7FFF_FFFF > 0x7F80_0000 { n = (n & 0xFFFF_0000) | (64 << 16) }
        return UInt16(truncatingIfNeeded: (UInt64(n) + UInt64(0x7FFF + ((n >> 16) & 1))) >> 16)
    }

    private static func quantizeBlock(_ x: UnsafeBufferPointer<Float>, _ type: GGUFTensorType, _ out: UnsafeMutableRawBufferPointer) {
        func put16(_ v: Float, _ at: Int) { out.storeBytes(of: Float16(v).bitPattern.littleEndian, toByteOffset: at, as: UInt16.self) }
        func inverse(_ d: Float) -> Float { d == 0 ? 0 : 1 / d }
        /// The signed value of largest magnitude (the first one when several tie).
        func signedMaximum() -> Float {
            var best: Float = 0, magnitude: Float = -1
            for v in x where abs(v) > magnitude { magnitude = abs(v); best = v }
            return best
        }
        /// Truncation to an integer code, clamped as numpy's uint8 conversion and `clip` leave it.
        func code(_ v: Float, _ top: Int) -> UInt8 { UInt8(clamping: min(max(Int(v.rounded(.towardZero)), 0), top)) }
        switch type {
        case .q8_0:
            var amax: Float = 0
            for v in x { amax = max(amax, abs(v)) }
            let d = amax / 127, id = inverse(d)
            put16(d, 0)
            for j in 0..<32 { out[2 + j] = UInt8(bitPattern: Int8(clamping: Int((x[j] * id).rounded(.toNearestOrAwayFromZero)))) }
        case .q4_0, .q5_0:
            let levels: Float = type == .q4_0 ? 8 : 16, top = type == .q4_0 ? 15 : 31
            let d = signedMaximum() / -levels, id = inverse(d)
            put16(d, 0)
            var q = [UInt8](repeating: 0, count: 32)
            for j in 0..<32 { q[j] = code(x[j] * id + (levels + 0.5), top) }
            pack(q, into: out, at: 2, highBits: type == .q5_0)
        case .q4_1, .q5_1:
            var lo = x[0], hi = x[0]
            for v in x { lo = min(lo, v); hi = max(hi, v) }
            let top = type == .q4_1 ? 15 : 31
            let d = (hi - lo) / Float(top), id = inverse(d)
            put16(d, 0)
            put16(lo, 2)
            var q = [UInt8](repeating: 0, count: 32)
            for j in 0..<32 { q[j] = code((x[j] - lo) * id + 0.5, top) }
            pack(q, into: out, at: 4, highBits: type == .q5_1)
        default:
            preconditionFailure("internal: \(type.name) has no block quantiser")
        }
    }

    /// Low nibbles two to a byte (value j with value j + 16); for 5-bit codes, their fifth bits first as one
    /// little-endian 32-bit word.
    private static func pack(_ q: [UInt8], into out: UnsafeMutableRawBufferPointer, at offset: Int, highBits: Bool) {
        var start = offset
        if highBits {
            var word: UInt32 = 0
            for j in 0..<32 { word |= UInt32((q[j] >> 4) & 1) << UInt32(j) }
            out.storeBytes(of: word.littleEndian, toByteOffset: offset, as: UInt32.self)
            start += 4
        }
        for j in 0..<16 { out[start + j] = (q[j] & 0x0F) | ((q[j + 16] & 0x0F) << 4) }
    }
}
