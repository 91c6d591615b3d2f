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
    let data: [UInt8]
    let decode: Decoder

    public init(rows: Int, columns: Int, format: String, blockValues: Int, blockBytes: Int, data: [UInt8],
                sideBytes: Int = 0, decode: @escaping Decoder) throws {
        guard rows > 0, columns > 0, blockValues > 0, columns % blockValues == 0,
              data.count == rows * columns / blockValues * blockBytes else {
            throw TensorError.invalidArgument(op: "QuantizedMatrix", message: "[\(rows), \(columns)] in \(format) "
                + "needs rows of whole \(blockValues)-value blocks, \(rows * max(columns / max(blockValues, 1), 0) * blockBytes) bytes; got \(data.count)")
        }
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
    /// blockValues` long).
    func dequantize(rows range: Range<Int>, columnBlocks: Range<Int>, into out: UnsafeMutablePointer<Float>) {
        let width = columnBlocks.count * blockValues
        data.withUnsafeBytes { raw in
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

    /// Rows dequantised at once by a product: enough for an efficient GEMM, few enough that the scratch stays in
    /// the cache (128 rows of 1,536 columns: 768 KB).
    static let panelRows = 128
}

extension Tensor {
    /// x [..., K] · deq(W)ᵀ for W [N, K] quantised → [..., N], as a Linear layer's frozen weight. The gradient
    /// flows to x alone (dx = dy · deq(W)); W gets none.
    ///
    /// Forward: the cores take contiguous shares of W's rows; each dequantises a panel of its rows into its own
    /// scratch and multiplies it on one thread, writing its columns of y. Backward: the cores take shares of
    /// W's columns (whole blocks); each dequantises panels of rows over its columns and accumulates its columns of
    /// dx panel after panel. The order of every sum is fixed by the core count alone, so a run repeats bit for bit.
    public func matmul(quantized w: QuantizedMatrix) throws -> Tensor {
        guard rank >= 1, shape[rank - 1] == w.columns else {
            throw TensorError.shapeMismatch(op: "matmul (x vs quantised Wᵀ)", lhs: shape, rhs: w.shape)
        }
        let m = count / w.columns, n = w.rows, k = w.columns
        let y = Tensor(uninitializedShape: Array(shape.dropLast()) + [n])
        let x = self
        Tensor.forEachShare(of: n, granule: 1) { share in
            let scratch = UnsafeMutablePointer<Float>.allocate(capacity: QuantizedMatrix.panelRows * k)
            defer { scratch.deallocate() }
            for p in stride(from: share.lowerBound, to: share.upperBound, by: QuantizedMatrix.panelRows) {
                let rows = min(QuantizedMatrix.panelRows, share.upperBound - p)
                w.dequantize(rows: p..<(p + rows), columnBlocks: 0..<w.blocksPerRow, into: scratch)
                GEMM.sgemm(false, true, m, rows, k, 1, x.storage.pointer, k, scratch, k, 0, y.storage.pointer + p, n)
            }
        }
        guard Tensor.needsGradient(self) else { return y }
        let xShape = shape
        y.recordBackward("matmul (quantised)", inputs: [self]) { g in
            let dx = Tensor(uninitializedShape: xShape)
            Tensor.forEachShare(of: w.blocksPerRow, granule: 1) { blocks in
                let width = blocks.count * w.blockValues, column = blocks.lowerBound * w.blockValues
                let scratch = UnsafeMutablePointer<Float>.allocate(capacity: QuantizedMatrix.panelRows * width)
                defer { scratch.deallocate() }
                for p in stride(from: 0, to: n, by: QuantizedMatrix.panelRows) {
                    let rows = min(QuantizedMatrix.panelRows, n - p)
                    w.dequantize(rows: p..<(p + rows), columnBlocks: blocks, into: scratch)
                    GEMM.sgemm(false, false, m, width, rows, 1, g.storage.pointer + p, n, scratch, width,
                               p == 0 ? 0 : 1, dx.storage.pointer + column, k)
                }
            }
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
