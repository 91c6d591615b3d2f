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
/// values q = round(x / d), and d · Σq (what a block with an offset m adds: m · d · Σq). The values are kept as
/// 16-bit lanes, split once per row into the even-numbered values and the odd-numbered ones, because that is
/// how the products below find the weights' values in the bytes they load: each weight row reuses the split.
struct ActivationBlocks {
    let rows: Int, blocksPerRow: Int
    /// Per block: q₀, q₂, …, q₃₀, then q₁, q₃, …, q₃₁.
    let values: UnsafeMutablePointer<Int16>
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
                out[(j & 1) * 16 + j / 2] = Int16(truncatingIfNeeded: q)
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

    /// The block's split activations (even-numbered values, odd-numbered values), 16 lanes each.
    @inline(__always)
    private func split(_ block: Int) -> (SIMD16<Int16>, SIMD16<Int16>) {
        let x = UnsafeRawPointer(values + block * IntegerBlockLayout.blockValues)
        return (x.loadUnaligned(as: SIMD16<Int16>.self), x.loadUnaligned(fromByteOffset: 32, as: SIMD16<Int16>.self))
    }

    /// Q4_0 (q − 8) or Q4_1 (q, plus m times the activations' sum). The 16 packed bytes, seen as eight 16-bit
    /// lanes, hold values 2i and 2i + 1 in the low nibbles of lane i and 16 + 2i, 17 + 2i in the high ones: the
    /// lanes and the lanes shifted by four, side by side, give the even values under one mask and the odd under
    /// another, in the activations' order. Products of 4 and 8 bits fit 16 bits two at a time (2 · 15 · 127).
    /// One accumulator per block of a pair keeps the additions independent.
    @inline(__always)
    private func dotQ4(_ weights: UnsafeRawPointer, row: Int, offset: Bool) -> Float {
        let size = offset ? 20 : 18, packedAt = offset ? 4 : 2, centre: Int16 = offset ? 0 : 8
        let first = row * blocksPerRow
        @inline(__always) func block(_ b: Int) -> (SIMD8<Float>, Float) {
            let block = weights + b * size
            let packed = block.loadUnaligned(fromByteOffset: packedAt, as: SIMD8<UInt16>.self)
            let both = SIMD16<UInt16>(lowHalf: packed, highHalf: packed &>> 4)
            let even = unsafeBitCast(both & 0x000F, to: SIMD16<Int16>.self) &- centre
            let odd = unsafeBitCast((both &>> 8) & 0x000F, to: SIMD16<Int16>.self) &- centre
            let (xEven, xOdd) = split(first + b)
            let pairs = Self.widenedPairs(even &* xEven &+ odd &* xOdd)
            let scale = Self.half(block, 0) * scales[first + b]
            return (Self.float(pairs) * scale, offset ? Self.half(block, 2) * scaledSums[first + b] : 0)
        }
        var sums = (SIMD8<Float>(), SIMD8<Float>()), offsets = (Float(0), Float(0))
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

    /// Q8_0: the 32 signed bytes seen as sixteen 16-bit lanes give the even values by a shift up and back, the
    /// odd by a shift back; two products of signed bytes fit 16 bits (2 · 128 · 127).
    @inline(__always)
    private func dotQ8(_ weights: UnsafeRawPointer, row: Int) -> Float {
        let first = row * blocksPerRow
        @inline(__always) func block(_ b: Int) -> SIMD8<Float> {
            let block = weights + b * 34
            let w = block.loadUnaligned(fromByteOffset: 2, as: SIMD16<Int16>.self)
            let (xEven, xOdd) = split(first + b)
            let pairs = Self.widenedPairs(((w &<< 8) &>> 8) &* xEven &+ (w &>> 8) &* xOdd)
            return Self.float(pairs) * (Self.half(block, 0) * scales[first + b])
        }
        var sums = (SIMD8<Float>(), SIMD8<Float>())
        var b = 0
        while b + 1 < blocksPerRow {
            sums.0 += block(b)
            sums.1 += block(b + 1)
            b += 2
        }
        if b < blocksPerRow { sums.0 += block(b) }
        return (sums.0 + sums.1).sum()
    }

    /// Sixteen 16-bit lanes seen as eight 32-bit ones → the sum of each adjacent pair, in 32 bits.
    @inline(__always)
    static func widenedPairs(_ v: SIMD16<Int16>) -> SIMD8<Int32> {
        let w = unsafeBitCast(v, to: SIMD8<Int32>.self)
        return ((w &<< 16) &>> 16) &+ (w &>> 16)
    }

    /// Integers below 2²² in magnitude as floats, exactly: added to 1.5 · 2²³ they are the float's low mantissa
    /// bits (a lane conversion without the standard library's per-lane loop).
    @inline(__always)
    static func float(_ v: SIMD8<Int32>) -> SIMD8<Float> {
        let magic: Float = 12_582_912
        return unsafeBitCast(v &+ Int32(bitPattern: magic.bitPattern), to: SIMD8<Float>.self) - magic
    }

    @inline(__always)
    static func half(_ source: UnsafeRawPointer, _ offset: Int) -> Float {
        Float(Float16(bitPattern: UInt16(littleEndian: source.loadUnaligned(fromByteOffset: offset, as: UInt16.self))))
    }
}
