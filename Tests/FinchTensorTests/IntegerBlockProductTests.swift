import Testing
@testable import FinchTensor

/// Products over ggml's legacy blocks with 8-bit activations: equal (to float rounding) to the same sum written
/// out in Double from the blocks and the activations' own quantisation, close to x · deq(W)ᵀ, and used only
/// where asked.
@Suite("integer block products")
struct IntegerBlockProductTests {
    /// Random blocks of `layout`: scales of about 0.01, offsets of about −0.08, every nibble or byte value.
    static func randomBlocks(_ layout: IntegerBlockLayout, rows: Int, columns: Int, seed: UInt64) -> [UInt8] {
        var generator = RandomGenerator(seed: seed)
        var bytes: [UInt8] = []
        for _ in 0..<(rows * columns / 32) {
            var block = [UInt8](repeating: 0, count: layout.blockBytes)
            func put(_ v: Float, _ at: Int) {
                let bits = Float16(v).bitPattern
                block[at] = UInt8(bits & 0xFF)
                block[at + 1] = UInt8(bits >> 8)
            }
            put(0.02 * generator.nextUniform(), 0)
            let start: Int
            switch layout {
            case .q4_0: start = 2
            case .q4_1: put(-0.16 * generator.nextUniform(), 2); start = 4
            case .q8_0: start = 2
            }
            for j in start..<layout.blockBytes { block[j] = UInt8(truncatingIfNeeded: generator.next()) }
            bytes += block
        }
        return bytes
    }

    /// A block's 32 values as float32, from ggml's definition of each layout.
    static func decode(_ layout: IntegerBlockLayout, _ block: UnsafeRawPointer, into out: UnsafeMutablePointer<Float>) {
        let d = ActivationBlocks.half(block, 0)
        for j in 0..<16 {
            switch layout {
            case .q4_0:
                let q = block.load(fromByteOffset: 2 + j, as: UInt8.self)
                out[j] = d * Float(Int(q & 0x0F) - 8)
                out[j + 16] = d * Float(Int(q >> 4) - 8)
            case .q4_1:
                let q = block.load(fromByteOffset: 4 + j, as: UInt8.self), m = ActivationBlocks.half(block, 2)
                out[j] = d * Float(q & 0x0F) + m
                out[j + 16] = d * Float(q >> 4) + m
            case .q8_0:
                out[j] = d * Float(block.load(fromByteOffset: 2 + j, as: Int8.self))
                out[j + 16] = d * Float(block.load(fromByteOffset: 18 + j, as: Int8.self))
            }
        }
    }

    static func matrix(_ layout: IntegerBlockLayout, rows: Int, columns: Int, seed: UInt64) throws -> QuantizedMatrix {
        try QuantizedMatrix(rows: rows, columns: columns, format: layout.rawValue, blockValues: 32,
                            blockBytes: layout.blockBytes, data: randomBlocks(layout, rows: rows, columns: columns, seed: seed),
                            integerLayout: layout) { source, _, blocks, out in
            for b in 0..<blocks { decode(layout, source + b * layout.blockBytes, into: out + b * 32) }
        }
    }

    @Test(arguments: IntegerBlockLayout.allCases)
    func integerProductsAreTheBlockSumsAndCloseToFloat(_ layout: IntegerBlockLayout) throws {
        let (rows, columns) = (37, 96)
        let w = try Self.matrix(layout, rows: rows, columns: columns, seed: 7)
        let dense = w.dequantized()
        for m in [1, 3, 8] {
            let x = QuantizedMatrixTests.random([m, columns], seed: UInt64(m))
            x.storage.buffer[5] = 0
            let exact = try x.matmul(quantized: w)
            let integer = try QuantizedMatrix.withQuantizedActivations(true) { try x.matmul(quantized: w) }
            // The activations' own quantisation, then the sum in Double from the dequantised weights.
            let a = ActivationBlocks(x.storage.pointer, rows: m, columns: columns)
            defer { a.deallocate() }
            for i in 0..<m {
                for r in 0..<rows {
                    var sum = 0.0
                    for c in 0..<columns {
                        let j = c % 32, xq = Double(a.scales[i * 3 + c / 32]) * Double(a.values[i * columns + c - j + (j & 1) * 16 + j / 2])
                        sum += xq * Double(dense.storage.buffer[r * columns + c])
                    }
                    let got = integer.storage.buffer[i * rows + r]
                    #expect(abs(Double(got) - sum) <= 1e-5 * max(1, abs(sum)), "row \(r) of x \(i): \(got) vs \(sum)")
                }
            }
            // Against float32 activations: within the 8-bit rounding of x.
            #expect(QuantizedMatrixTests.maxRelative(integer, exact) <= 0.02)
        }
    }

    /// Off by default, and above the row limit the float product runs even when asked.
    @Test func onlyWhereAskedAndOnlyForFewRows() throws {
        let w = try Self.matrix(.q4_1, rows: 20, columns: 64, seed: 1)
        let x = QuantizedMatrixTests.random([9, 64], seed: 2)
        let dense = try x.matmul(w.dequantized(), transposeOther: true)
        #expect(try x.matmul(quantized: w).scalars == (try QuantizedMatrix.withQuantizedActivations(true) { try x.matmul(quantized: w) }).scalars)
        #expect(QuantizedMatrixTests.maxRelative(try x.matmul(quantized: w), dense) <= 1e-5)
        let one = try x.slice(axis: 0, 0..<1)
        #expect(try one.matmul(quantized: w).scalars != (try QuantizedMatrix.withQuantizedActivations(true) { try one.matmul(quantized: w) }).scalars)
        #expect(throws: TensorError.self) {
            try QuantizedMatrix(rows: 1, columns: 32, format: "q4_1", blockValues: 32, blockBytes: 18, data: [UInt8](repeating: 0, count: 18),
                                integerLayout: .q4_1) { _, _, _, _ in }
        }
    }
}
