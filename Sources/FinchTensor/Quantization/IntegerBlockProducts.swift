/// ggml's legacy block layouts (blocks of 32 values, an f16 scale first) whose products with a few rows of
/// activations can skip float32 weights altogether: the activations are quantised to 8 bits per value in blocks of
/// 32 too, and each pair of blocks is an integer dot product times two scales. This is how llama.cpp decodes;
/// it reads each weight byte once per token instead of writing and reading four float bytes.
///
/// The result differs from x · deq(W)ᵀ by the activations' rounding (one part in 254 of a block's largest
/// value at most), so it is used only where asked (`QuantizedMatrix.withQuantizedActivations`), for decoding.
public enum IntegerBlockLayout: String, Sendable, CaseIterable {
    /// d, 16 bytes of 4-bit q (low nibbles the first 16 values): d · (q − 8).
    case q4_0
    /// d, m, 16 bytes of 4-bit q: d · q + m.
    case q4_1
    /// d, 32 signed bytes: d · q.
    case q8_0

    public static let blockValues = 32

    public var blockBytes: Int {
        switch self {
        case .q4_0: 18
        case .q4_1: 20
        case .q8_0: 34
        }
    }
}

/// Rows of float activations quantised as ggml's Q8_1: per block of 32 values a scale d = max|x| / 127, the
/// values q = round(x / d) as signed bytes, and d · Σq (what a block with an offset m adds: m · d · Σq).
struct ActivationBlocks {
    let rows: Int, blocksPerRow: Int
    let values: UnsafeMutablePointer<Int8>
    let scales: UnsafeMutablePointer<Float>
    let scaledSums: UnsafeMutablePointer<Float>

    init(_ x: UnsafePointer<Float>, rows: Int, columns: Int) {
        self.rows = rows
        blocksPerRow = columns / IntegerBlockLayout.blockValues
        let blocks = rows * blocksPerRow
        values = .allocate(capacity: blocks * IntegerBlockLayout.blockValues)
        scales = .allocate(capacity: blocks)
        scaledSums = .allocate(capacity: blocks)
        for b in 0..<blocks {
            let source = x + b * IntegerBlockLayout.blockValues
            var largest: Float = 0
            for j in 0..<IntegerBlockLayout.blockValues { largest = max(largest, abs(source[j])) }
            let d = largest / 127, inverse: Float = largest > 0 ? 127 / largest : 0
            let out = values + b * IntegerBlockLayout.blockValues
            var total: Int32 = 0
            for j in 0..<IntegerBlockLayout.blockValues {
                let q = Int32((source[j] * inverse).rounded(.toNearestOrEven))
                out[j] = Int8(truncatingIfNeeded: q)
                total &+= q
            }
            scales[b] = d
            scaledSums[b] = d * Float(total)
        }
    }

    func deallocate() {
        values.deallocate()
        scales.deallocate()
        scaledSums.deallocate()
    }

    /// Σ over the row's blocks of (weight block · activation block) for one weight row in `layout`.
    @inline(__always)
    func dot(_ layout: IntegerBlockLayout, weights: UnsafeRawPointer, row: Int) -> Float {
        switch layout {
        case .q4_0: dotQ4(weights, row: row, offset: false)
        case .q4_1: dotQ4(weights, row: row, offset: true)
        case .q8_0: dotQ8(weights, row: row)
        }
    }

    /// Q4_0 (q − 8) or Q4_1 (q, plus m times the activations' sum). Eight 16-bit lanes hold each value pair:
    /// the even and odd bytes of a block are split by shifts (no lane conversions, which the standard library
    /// does not vectorise), multiplied and summed in 16 bits (at most 4 · 15 · 127 per lane), widened to 32 and
    /// turned into floats exactly; one accumulator per block of a pair keeps the additions independent.
    @inline(__always)
    private func dotQ4(_ weights: UnsafeRawPointer, row: Int, offset: Bool) -> Float {
        let size = offset ? 20 : 18, packedAt = offset ? 4 : 2, centre: Int16 = offset ? 0 : 8
        let first = row * blocksPerRow
        var sums = (SIMD4<Float>(), SIMD4<Float>()), offsets = (Float(0), Float(0))
        @inline(__always) func block(_ b: Int) -> (SIMD4<Float>, Float) {
            let block = weights + b * size
            let packed = block.loadUnaligned(fromByteOffset: packedAt, as: SIMD8<UInt16>.self)
            let nibble = SIMD8<UInt16>(repeating: 0x0F)
            let low0 = SIMD8<Int16>(truncatingIfNeeded: packed & nibble) &- centre
            let low1 = SIMD8<Int16>(truncatingIfNeeded: (packed &>> 8) & nibble) &- centre
            let high0 = SIMD8<Int16>(truncatingIfNeeded: (packed &>> 4) & nibble) &- centre
            let high1 = SIMD8<Int16>(truncatingIfNeeded: packed &>> 12) &- centre
            let x = UnsafeRawPointer(values + (first + b) * IntegerBlockLayout.blockValues)
            let (x0, x1) = Self.bytePairs(x.loadUnaligned(as: SIMD8<Int16>.self))
            let (x2, x3) = Self.bytePairs(x.loadUnaligned(fromByteOffset: 16, as: SIMD8<Int16>.self))
            let products = low0 &* x0 &+ low1 &* x1 &+ high0 &* x2 &+ high1 &* x3
            let scale = Self.half(block, 0) * scales[first + b]
            return (Self.float(Self.widenedPairs(products)) * scale,
                    offset ? Self.half(block, 2) * scaledSums[first + b] : 0)
        }
        var b = 0
        while b + 1 < blocksPerRow {
            let (s0, o0) = block(b), (s1, o1) = block(b + 1)
            sums.0 += s0
            sums.1 += s1
            offsets.0 += o0
            offsets.1 += o1
            b += 2
        }
        if b < blocksPerRow {
            let (s0, o0) = block(b)
            sums.0 += s0
            offsets.0 += o0
        }
        return (sums.0 + sums.1).sum() + (offsets.0 + offsets.1)
    }

    /// Q8_0: signed bytes times signed bytes; a lane's two products fit 16 bits (2 · 128 · 127), so each half
    /// block is widened before the halves are added.
    @inline(__always)
    private func dotQ8(_ weights: UnsafeRawPointer, row: Int) -> Float {
        let first = row * blocksPerRow
        var sums = (SIMD4<Float>(), SIMD4<Float>())
        @inline(__always) func block(_ b: Int) -> SIMD4<Float> {
            let block = weights + b * 34
            let x = UnsafeRawPointer(values + (first + b) * IntegerBlockLayout.blockValues)
            let (w0, w1) = Self.bytePairs(block.loadUnaligned(fromByteOffset: 2, as: SIMD8<Int16>.self))
            let (w2, w3) = Self.bytePairs(block.loadUnaligned(fromByteOffset: 18, as: SIMD8<Int16>.self))
            let (x0, x1) = Self.bytePairs(x.loadUnaligned(as: SIMD8<Int16>.self))
            let (x2, x3) = Self.bytePairs(x.loadUnaligned(fromByteOffset: 16, as: SIMD8<Int16>.self))
            let pairs = Self.widenedPairs(w0 &* x0 &+ w1 &* x1) &+ Self.widenedPairs(w2 &* x2 &+ w3 &* x3)
            return Self.float(pairs) * (Self.half(block, 0) * scales[first + b])
        }
        var b = 0
        while b + 1 < blocksPerRow {
            sums.0 += block(b)
            sums.1 += block(b + 1)
            b += 2
        }
        if b < blocksPerRow { sums.0 += block(b) }
        return (sums.0 + sums.1).sum()
    }

    /// Sixteen signed bytes seen as eight 16-bit lanes → (the even bytes, the odd bytes), sign-extended.
    @inline(__always)
    static func bytePairs(_ v: SIMD8<Int16>) -> (SIMD8<Int16>, SIMD8<Int16>) { ((v &<< 8) &>> 8, v &>> 8) }

    /// Eight 16-bit lanes seen as four 32-bit ones → the sum of each adjacent pair, in 32 bits.
    @inline(__always)
    static func widenedPairs(_ v: SIMD8<Int16>) -> SIMD4<Int32> {
        let w = unsafeBitCast(v, to: SIMD4<Int32>.self)
        return ((w &<< 16) &>> 16) &+ (w &>> 16)
    }

    /// Integers below 2²² in magnitude as floats, exactly: added to 1.5 · 2²³ they are the float's low mantissa
    /// bits (a lane conversion without the standard library's per-lane loop).
    @inline(__always)
    static func float(_ v: SIMD4<Int32>) -> SIMD4<Float> {
        let magic: Float = 12_582_912
        return unsafeBitCast(v &+ Int32(bitPattern: magic.bitPattern), to: SIMD4<Float>.self) - magic
    }

    @inline(__always)
    static func half(_ source: UnsafeRawPointer, _ offset: Int) -> Float {
        Float(Float16(bitPattern: UInt16(littleEndian: source.loadUnaligned(fromByteOffset: offset, as: UInt16.self))))
    }
}
