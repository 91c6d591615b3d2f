/// A frozen weight matrix [rows, columns] kept in a block-quantised form: row r is `rowBytes` bytes that the
/// format's decoder turns into `columns` float32 values, block by block. Products with it (`Tensor.matmul(_:)`)
/// dequantise a panel of rows at a time into scratch and multiply it with OpenBLAS, so the matrix never exists
/// in float32 as a whole. The format is the caller's (a GGUF block type, NF4): this type knows only blocks of
/// `blockValues` values in `blockBytes` bytes, a row being whole blocks.
public final class QuantizedMatrix: @unchecked Sendable {
    /// Turns `blocks` consecutive blocks starting at byte `source` — block `firstBlock` of the matrix — into
    /// `blocks · blockValues` floats at `destination`.
    public typealias Decoder = @Sendable (_ source: UnsafeRawPointer, _ firstBlock: Int, _ blocks: Int,
                                          _ destination: UnsafeMutablePointer<Float>) -> Void

    public let rows: Int
    public let columns: Int
    /// The format's name, for logs and `finch inspect` ("q4_1", "nf4").
    public let format: String
    public let blockValues: Int
    public let blockBytes: Int
    /// Bytes besides the rows' blocks that the format keeps (NF4's scales), counted in `byteCount`.
    public let sideBytes: Int
    /// The blocks' layout when it is one the integer products read directly (`IntegerBlockLayout`).
    public let integerLayout: IntegerBlockLayout?
    let data: [UInt8]
    let decode: Decoder

    public init(rows: Int, columns: Int, format: String, blockValues: Int, blockBytes: Int, data: [UInt8],
                sideBytes: Int = 0, integerLayout: IntegerBlockLayout? = nil, decode: @escaping Decoder) throws {
        guard rows > 0, columns > 0, blockValues > 0, columns % blockValues == 0,
              data.count == rows * columns / blockValues * blockBytes else {
            throw TensorError.invalidArgument(op: "QuantizedMatrix", message: "[\(rows), \(columns)] in \(format) "
                + "needs rows of whole \(blockValues)-value blocks, \(rows * max(columns / max(blockValues, 1), 0) * blockBytes) bytes; got \(data.count)")
        }
        if let layout = integerLayout, blockValues != IntegerBlockLayout.blockValues || blockBytes != layout.blockBytes {
            throw TensorError.invalidArgument(op: "QuantizedMatrix", message: "\(format) blocks of \(blockValues) values in \(blockBytes) bytes "
                + "are not \(layout.rawValue)'s \(IntegerBlockLayout.blockValues) in \(layout.blockBytes)")
        }
        self.integerLayout = integerLayout
        self.rows = rows
        self.columns = columns
        self.format = format
        self.blockValues = blockValues
        self.blockBytes = blockBytes
        self.sideBytes = sideBytes
        self.data = data
        self.decode = decode
    }

    public var shape: [Int] { [rows, columns] }
    /// Bytes the matrix takes.
    public var byteCount: Int { data.count + sideBytes }
    var blocksPerRow: Int { columns / blockValues }

    /// Rows `range`, columns `columnBlocks` (in blocks), as float32 into `out` (rows `columnBlocks.count ·
    /// blockValues` long). Whole rows are consecutive blocks, so they are decoded in one call.
    func dequantize(rows range: Range<Int>, columnBlocks: Range<Int>, into out: UnsafeMutablePointer<Float>) {
        let width = columnBlocks.count * blockValues
        data.withUnsafeBytes { raw in
            if columnBlocks == 0..<blocksPerRow {
                let first = range.lowerBound * blocksPerRow
                decode(raw.baseAddress! + first * blockBytes, first, range.count * blocksPerRow, out)
                return
            }
            for r in range {
                let first = r * blocksPerRow + columnBlocks.lowerBound
                decode(raw.baseAddress! + first * blockBytes, first, columnBlocks.count,
                       out + (r - range.lowerBound) * width)
            }
        }
    }

    /// The whole matrix in float32 (for merging and export, not for products).
    public func dequantized() -> Tensor {
        let t = Tensor(uninitializedShape: [rows, columns])
        Parallel.forRows(rows, rowLength: columns) { r in
            dequantize(rows: r..<(r + 1), columnBlocks: 0..<blocksPerRow, into: t.storage.pointer + r * columns)
        }
        return t
    }

    /// y [m, rows] = x [m, columns] · deq(W)ᵀ, rows of y `stride` apart. The cores take contiguous shares of W's
    /// rows; each dequantises a panel of its rows into its own scratch and multiplies it on one thread, writing
    /// its columns of y.
    public func multiplyTransposed(_ x: UnsafePointer<Float>, rows m: Int, into y: UnsafeMutablePointer<Float>,
                                   stride: Int) {
        if let layout = integerLayout, m <= Self.integerRowLimit, Self.quantizedActivations {
            multiplyTransposedQuantizingActivations(x, rows: m, into: y, stride: stride, layout: layout)
            return
        }
        let k = columns, panelRows = Self.panelRows(width: k)
        Tensor.forEachShare(of: rows, granule: 1) { share in
            let scratch = UnsafeMutablePointer<Float>.allocate(capacity: panelRows * k)
            defer { scratch.deallocate() }
            for p in Swift.stride(from: share.lowerBound, to: share.upperBound, by: panelRows) {
                let panel = min(panelRows, share.upperBound - p)
                dequantize(rows: p..<(p + panel), columnBlocks: 0..<blocksPerRow, into: scratch)
                GEMM.sgemm(false, true, m, panel, k, 1, x, k, scratch, k, 0, y + p, stride)
            }
        }
    }

    /// Whether products with at most `integerRowLimit` rows of activations may quantise them to 8 bits and
    /// multiply the blocks in integers (`IntegerBlockLayout`); off unless a caller turns it on for its work.
    @TaskLocal static var quantizedActivations = false

    /// Runs `body` with products of few rows over ggml's legacy blocks done in integers on 8-bit activations
    /// (llama.cpp's way of decoding: less exact than x · deq(W)ᵀ, several times faster), or not.
    public static func withQuantizedActivations<R>(_ enabled: Bool, _ body: () throws -> R) rethrows -> R {
        try $quantizedActivations.withValue(enabled, operation: body)
    }

    /// Above this many rows, dequantising a panel once serves every row and OpenBLAS's product is the faster way.
    static let integerRowLimit = 8

    /// y = x · Wᵀ with x's rows quantised to 8-bit blocks: each core takes a contiguous share of W's rows and
    /// reads each of its weight rows once for all of x's rows.
    func multiplyTransposedQuantizingActivations(_ x: UnsafePointer<Float>, rows m: Int, into y: UnsafeMutablePointer<Float>,
                                                 stride: Int, layout: IntegerBlockLayout) {
        let activations = ActivationBlocks(x, rows: m, columns: columns)
        defer { activations.deallocate() }
        let rowBytes = blocksPerRow * blockBytes
        data.withUnsafeBytes { raw in
            let base = raw.baseAddress!
            Tensor.forEachShare(of: rows, granule: 1) { share in
                for r in share {
                    let weights = base + r * rowBytes
                    for i in 0..<m { y[i * stride + r] = activations.dot(layout, weights: weights, row: i) }
                }
            }
        }
    }

    /// dx [m, columns] = g [m, rows] · deq(W), rows of g `stride` apart (dx is overwritten). The cores take
    /// shares of W's columns (whole blocks); each dequantises panels of rows over its columns and accumulates
    /// its columns of dx panel after panel. The order of every sum is fixed by the core count alone, so a run
    /// repeats bit for bit.
    public func multiply(_ g: UnsafePointer<Float>, rows m: Int, stride: Int, into dx: UnsafeMutablePointer<Float>) {
        let (n, k) = (rows, columns)
        Tensor.forEachShare(of: blocksPerRow, granule: 1) { blocks in
            let width = blocks.count * blockValues, column = blocks.lowerBound * blockValues
            let panelRows = Self.panelRows(width: width)
            let scratch = UnsafeMutablePointer<Float>.allocate(capacity: panelRows * width)
            defer { scratch.deallocate() }
            for p in Swift.stride(from: 0, to: n, by: panelRows) {
                let panel = min(panelRows, n - p)
                dequantize(rows: p..<(p + panel), columnBlocks: blocks, into: scratch)
                GEMM.sgemm(false, false, m, width, panel, 1, g + p, stride, scratch, width, p == 0 ? 0 : 1,
                           dx + column, k)
            }
        }
    }

    /// The rows for token ids laid out as `shape` → [shape..., columns], as a frozen embedding table's lookup.
    public func rows(_ ids: [Int32], shape: [Int]) throws -> Tensor {
        guard shape.reduce(1, *) == ids.count else {
            throw TensorError.invalidArgument(op: "quantised row lookup", message: "\(ids.count) ids do not fill shape \(shape)")
        }
        if let bad = ids.first(where: { $0 < 0 || Int($0) >= rows }) {
            throw TensorError.invalidArgument(op: "quantised row lookup", message: "id \(bad) is outside 0..<\(rows)")
        }
        let out = Tensor(uninitializedShape: shape + [columns])
        let p = out.storage.pointer, k = columns
        Parallel.forRows(ids.count, rowLength: k) { i in
            let r = Int(ids[i])
            dequantize(rows: r..<(r + 1), columnBlocks: 0..<blocksPerRow, into: p + i * k)
        }
        return out
    }

    /// Rows dequantised at once by a product over `width` columns: a scratch of about 1 MB (a core's L2 on the
    /// machines Finch targets), so the panel is still in the cache when OpenBLAS packs it, and at least 64 rows,
    /// so each product is long enough to be efficient. OpenBLAS packs the other operand again for every panel:
    /// a big panel keeps that repeated work small beside the product (a head of 49,152 rows multiplies 1,024-row
    /// panels of 256 columns, 455-row panels of 576).
    static func panelRows(width: Int) -> Int { max(64, (1 << 18) / max(width, 1)) }
}

extension Tensor {
    /// x [..., K] · deq(W)ᵀ for W [N, K] quantised → [..., N], as a Linear layer's frozen weight. The gradient
    /// flows to x alone (dx = dy · deq(W), `QuantizedMatrix.multiply`); W gets none.
    public func matmul(quantized w: QuantizedMatrix) throws -> Tensor {
        guard rank >= 1, shape[rank - 1] == w.columns else {
            throw TensorError.shapeMismatch(op: "matmul (x vs quantised Wᵀ)", lhs: shape, rhs: w.shape)
        }
        let m = count / w.columns
        let y = Tensor(uninitializedShape: Array(shape.dropLast()) + [w.rows])
        w.multiplyTransposed(storage.pointer, rows: m, into: y.storage.pointer, stride: w.rows)
        guard Tensor.needsGradient(self) else { return y }
        let xShape = shape
        y.recordBackward("matmul (quantised)", inputs: [self]) { g in
            let dx = Tensor(uninitializedShape: xShape)
            w.multiply(g.storage.pointer, rows: m, stride: w.rows, into: dx.storage.pointer)
            return [dx]
        }
        return y
    }

    /// Calls `body` on each core's contiguous share of `0..<count` (at least one share; none empty).
    static func forEachShare(of count: Int, granule: Int, _ body: (Range<Int>) -> Void) {
        let parts = max(1, min(Parallel.coreCount, count))
        let step = (count + parts - 1) / parts
        Parallel.forChunks(count: parts, minimumChunk: 1) { chunk in
            for part in chunk {
                let lo = part * step, hi = min(count, lo + step)
                if lo < hi { body(lo..<hi) }
            }
        }
    }
}

extension QuantizedMatrix {
    /// `values` [rows, columns] quantised to NF4 (blocks of 64 along each row; `columns` a multiple of 64), with
    /// QLoRA's double quantisation of the block scales when asked.
    public static func nf4(_ values: Tensor, doubleQuantization: Bool = true) throws -> QuantizedMatrix {
        guard values.rank == 2, values.shape[1] % NF4.blockSize == 0 else {
            throw TensorError.invalidArgument(op: "NF4", message: "a matrix with rows of whole \(NF4.blockSize)-value blocks is needed, got shape \(values.shape)")
        }
        let q = try NF4(quantizing: UnsafeBufferPointer(values.storage.buffer), doubleQuantization: doubleQuantization)
        let bytesPerBlock = NF4.blockSize / 2
        return try QuantizedMatrix(rows: values.shape[0], columns: values.shape[1], format: "nf4",
                                   blockValues: NF4.blockSize, blockBytes: bytesPerBlock, data: q.packed,
                                   sideBytes: q.byteCount - q.packed.count) { _, first, blocks, out in
            q.dequantize((first * NF4.blockSize)..<((first + blocks) * NF4.blockSize), into: out)
        }
    }
}
