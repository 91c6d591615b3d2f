/// NF4, the 4-bit NormalFloat of QLoRA (Dettmers et al., 2023), as bitsandbytes stores it (`quantize_4bit` with
/// `quant_type="nf4"`, blocks of 64):
///
/// - each block of 64 values keeps its largest magnitude, `absmax`; each value becomes the index of the NF4 value
///   nearest to `value / absmax` (the boundaries are the midpoints of neighbouring NF4 values, a value on a
///   midpoint going to the lower one), two indices to a byte, the first in the high four bits;
/// - with double quantisation the `absmax` values are stored too: less their mean (`offset`), in blocks of 256,
///   each value the index (8 bits) of the nearest value of the signed dynamic map after division by the block's
///   largest magnitude (a tie going to the lower index);
/// - dequantisation is `nf4[index] · absmax`, where `absmax = dynamic8[code] · scale + offset` with double
///   quantisation.
///
/// What bitsandbytes computes in float32, this computes in float32 in the same order: the results are equal bit
/// for bit, except for `offset`, the mean of the `absmax` values, which torch sums in an order that depends on
/// the CPU's vector width; here it is the float32 nearest the exact mean.
public struct NF4: Sendable, Equatable {
    public static let blockSize = 64
    public static let statisticsBlockSize = 256

    /// How the block scales are stored.
    public enum Scales: Sendable, Equatable {
        /// One float32 `absmax` per block of 64.
        case plain([Float])
        /// QLoRA's double quantisation: an 8-bit code per block of 64, a float32 scale per block of 256 codes, and
        /// the mean that was taken off.
        case double(codes: [UInt8], scales: [Float], offset: Float)
    }

    /// Number of values.
    public let count: Int
    /// Two 4-bit indices a byte, the first value in the high bits (an odd count is padded with the index of 0.0).
    public let packed: [UInt8]
    public let scales: Scales

    public init(count: Int, packed: [UInt8], scales: Scales) {
        self.count = count
        self.packed = packed
        self.scales = scales
    }

    /// Quantises `values` (all finite); `doubleQuantization` stores the block scales in 8 bits as QLoRA does.
    public init(quantizing values: UnsafeBufferPointer<Float>, doubleQuantization: Bool) throws {
        if let bad = values.firstIndex(where: { !$0.isFinite }) {
            throw TensorError.invalidArgument(op: "NF4", message: "value \(bad) is \(values[bad]); only finite values can be quantised")
        }
        let n = values.count, block = Self.blockSize
        let blocks = (n + block - 1) / block
        var absmax = [Float](repeating: 0, count: blocks)
        var indices = [UInt8](repeating: 0, count: n + n % 2)
        // Index 7 is 0.0: what an odd count's padding value (0) becomes.
        if n % 2 == 1 { indices[n] = 7 }
        let bounds = (0..<15).map { (QuantizationTables.nf4[$0] + QuantizationTables.nf4[$0 + 1]) / 2 }
        for b in 0..<blocks {
            let lo = b * block, hi = min(n, lo + block)
            var m: Float = 0
            for i in lo..<hi { m = max(m, abs(values[i])) }
            absmax[b] = m
            let divisor = max(m, 1e-38)
            // bitsandbytes multiplies a whole block by the reciprocal, and divides a final partial one.
            let reciprocal = 1 / divisor
            for i in lo..<hi {
                let scaled = min(max(hi - lo == block ? values[i] * reciprocal : values[i] / divisor, -1), 1)
                var q = 0
                while q < 15 && bounds[q] < scaled { q += 1 }
                indices[i] = UInt8(q)
            }
        }
        count = n
        packed = stride(from: 0, to: indices.count, by: 2).map { indices[$0] << 4 | indices[$0 + 1] }
        if doubleQuantization {
            let offset = Self.mean(absmax)
            let (codes, scales) = Self.quantizeStatistics(absmax, offset: offset)
            self.scales = .double(codes: codes, scales: scales, offset: offset)
        } else {
            self.scales = .plain(absmax)
        }
    }

    /// The float32 nearest the mean of `values` (summed in double).
    static func mean(_ values: [Float]) -> Float {
        Float(values.reduce(0.0) { $0 + Double($1) } / Double(max(values.count, 1)))
    }

    /// Double quantisation of the block scales: `absmax − offset` in blocks of 256, each value the nearest entry of
    /// the dynamic map after division by its block's largest magnitude.
    static func quantizeStatistics(_ absmax: [Float], offset: Float) -> (codes: [UInt8], scales: [Float]) {
        let map = QuantizationTables.dynamic8
        let block = statisticsBlockSize
        var codes = [UInt8](repeating: 0, count: absmax.count)
        var scales: [Float] = []
        for lo in stride(from: 0, to: absmax.count, by: block) {
            let hi = min(absmax.count, lo + block)
            let centred = absmax[lo..<hi].map { $0 - offset }
            var m = -Float.greatestFiniteMagnitude
            for v in centred { m = max(m, abs(v)) }
            scales.append(m)
            for (j, v) in centred.enumerated() {
                let normed = v / m
                // The last entry not above the value (the first when all are), then its right neighbour if that is
                // strictly nearer.
                var left = 0, right = map.count - 1
                if normed >= map[right] {
                    left = right
                } else {
                    while right - left > 1 {
                        let mid = (left + right) / 2
                        if map[mid] <= normed { left = mid } else { right = mid }
                    }
                }
                if left < map.count - 1, abs(normed - map[left + 1]) < abs(normed - map[left]) { left += 1 }
                codes[lo + j] = UInt8(left)
            }
        }
        return (codes, scales)
    }

    /// Block `b`'s scale as dequantisation uses it.
    @inline(__always)
    func absmax(_ b: Int) -> Float {
        switch scales {
        case .plain(let absmax): return absmax[b]
        case .double(let codes, let scales, let offset):
            return QuantizationTables.dynamic8[Int(codes[b])] * scales[b / Self.statisticsBlockSize] + offset
        }
    }

    /// Writes values `range` (whole blocks of 64, or running to the end) into `out`.
    public func dequantize(_ range: Range<Int>, into out: UnsafeMutablePointer<Float>) {
        let table = QuantizationTables.nf4
        if range.lowerBound % Self.blockSize == 0, range.upperBound % Self.blockSize == 0 {
            // Whole blocks (what products ask for): the scale once per block, two values per byte, no index
            // arithmetic per value. The same products as below, so the same bits.
            table.withUnsafeBufferPointer { codes in
                packed.withUnsafeBufferPointer { bytes in
                    for b in (range.lowerBound / Self.blockSize)..<(range.upperBound / Self.blockSize) {
                        let scale = absmax(b), y = out + (b * Self.blockSize - range.lowerBound)
                        let q = bytes.baseAddress! + b * Self.blockSize / 2
                        for j in 0..<(Self.blockSize / 2) {
                            y[2 * j] = codes[Int(q[j] >> 4)] * scale
                            y[2 * j + 1] = codes[Int(q[j] & 0x0F)] * scale
                        }
                    }
                }
            }
            return
        }
        var b = -1, scale: Float = 0
        for i in range {
            if i / Self.blockSize != b {
                b = i / Self.blockSize
                scale = absmax(b)
            }
            let byte = packed[i / 2]
            out[i - range.lowerBound] = table[Int(i % 2 == 0 ? byte >> 4 : byte & 0x0F)] * scale
        }
    }

    /// All the values.
    public func dequantized() -> [Float] {
        [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            if let base = buffer.baseAddress { dequantize(0..<count, into: base) }
            initialized = count
        }
    }

    /// Bytes the quantised form takes: the packed indices and the scales.
    public var byteCount: Int {
        switch scales {
        case .plain(let absmax): return packed.count + 4 * absmax.count
        case .double(let codes, let scales, _): return packed.count + codes.count + 4 * scales.count + 4
        }
    }
}
