import Foundation

/// Measurements behind `finch bench`: raw `cblas_sgemm` against the engine's Linear forward+backward on
/// the same shapes, and the bandwidth of the fused softmax and RMSNorm kernels.
///
/// Each measurement reports the median iteration after a warm-up, so a passing spike does not count.
public enum KernelBenchmark {
    public struct LinearResult: Sendable, Codable {
        /// x [rows, columns] · Wᵀ with W [columns, columns]; forward plus both backward products.
        public let rows: Int
        public let columns: Int
        public let flopsPerStep: Double
        public let sgemmSeconds: Double
        public let engineSeconds: Double
        public var sgemmGFLOPS: Double { flopsPerStep / sgemmSeconds / 1e9 }
        public var engineGFLOPS: Double { flopsPerStep / engineSeconds / 1e9 }
        public var ratio: Double { sgemmSeconds / engineSeconds }
    }

    public struct BandwidthResult: Sendable, Codable {
        public let kernel: String
        public let rows: Int
        public let columns: Int
        /// Bytes the forward and backward must read and write at least.
        public let bytes: Double
        public let seconds: Double
        public var gigabytesPerSecond: Double { bytes / seconds / 1e9 }
    }

    /// y = x Wᵀ (forward), dx = dy W, dW = dyᵀ x: 3 · 2 · rows · columns² FLOPs. The raw side is
    /// `cblas_sgemm` threaded by OpenBLAS over all cores; the engine side is Finch's own path.
    public static func linear(rows: Int, columns: Int, minimumSeconds: Double = 0.5) throws -> LinearResult {
        var generator = RandomGenerator(seed: 1)
        let x = Tensor.randomNormal([rows, columns], generator: &generator).requiringGrad()
        let w = Tensor.randomNormal([columns, columns], standardDeviation: 0.05, generator: &generator).requiringGrad()
        let dy = Tensor.randomNormal([rows, columns], generator: &generator)
        let y = Tensor.zeros([rows, columns]), dx = Tensor.zeros([rows, columns]), dw = Tensor.zeros([columns, columns])
        let (m, n) = (rows, columns)

        let threads = Parallel.coreCount
        func rawStep() {
            GEMM.multiplyWithOpenBLASThreads(threads, transposeA: false, transposeB: true, m: m, n: n, k: n,
                                             a: x.storage.pointer, lda: n, b: w.storage.pointer, ldb: n, c: y.storage.pointer, ldc: n)
            GEMM.multiplyWithOpenBLASThreads(threads, transposeA: false, transposeB: false, m: m, n: n, k: n,
                                             a: dy.storage.pointer, lda: n, b: w.storage.pointer, ldb: n, c: dx.storage.pointer, ldc: n)
            GEMM.multiplyWithOpenBLASThreads(threads, transposeA: true, transposeB: false, m: n, n: n, k: m,
                                             a: dy.storage.pointer, lda: n, b: x.storage.pointer, ldb: n, c: dw.storage.pointer, ldc: n)
        }
        func engineStep() throws {
            x.zeroGrad()
            w.zeroGrad()
            try x.matmul(w, transposeOther: true).backward(seed: dy)
        }
        // Engine first, then raw: OpenBLAS's own threads spin for a while after each threaded call and
        // would steal the cores from Finch's if the two were interleaved. A pause afterwards lets them park.
        let engine = try measure(minimumSeconds: minimumSeconds, engineStep)
        let raw = try measure(minimumSeconds: minimumSeconds, rawStep)
        Thread.sleep(forTimeInterval: 0.3)
        return LinearResult(rows: rows, columns: columns, flopsPerStep: 6 * Double(rows) * Double(columns * columns),
                            sgemmSeconds: raw, engineSeconds: engine)
    }

    /// Softmax forward+backward over rows of `columns`: reads x, writes y; reads g and y, writes dx.
    public static func softmax(rows: Int, columns: Int, minimumSeconds: Double = 0.3) throws -> BandwidthResult {
        var generator = RandomGenerator(seed: 2)
        let x = Tensor.randomNormal([rows, columns], generator: &generator).requiringGrad()
        let g = Tensor.randomNormal([rows, columns], generator: &generator)
        let seconds = try measure(minimumSeconds: minimumSeconds) {
            x.zeroGrad()
            try x.softmax().backward(seed: g)
        }
        return BandwidthResult(kernel: "softmax", rows: rows, columns: columns,
                               bytes: 5 * 4 * Double(rows * columns), seconds: seconds)
    }

    /// RMSNorm forward+backward: reads x, writes y; reads g and x, writes dx; reads g and x for dw.
    public static func rmsNorm(rows: Int, columns: Int, minimumSeconds: Double = 0.3) throws -> BandwidthResult {
        var generator = RandomGenerator(seed: 3)
        let x = Tensor.randomNormal([rows, columns], generator: &generator).requiringGrad()
        let w = Tensor.randomNormal([columns], generator: &generator).requiringGrad()
        let g = Tensor.randomNormal([rows, columns], generator: &generator)
        let seconds = try measure(minimumSeconds: minimumSeconds) {
            x.zeroGrad()
            w.zeroGrad()
            try x.rmsNorm(weight: w, epsilon: 1e-5).backward(seed: g)
        }
        return BandwidthResult(kernel: "rmsNorm", rows: rows, columns: columns,
                               bytes: 7 * 4 * Double(rows * columns), seconds: seconds)
    }

    /// Median seconds of `a` and of `b`, run alternately after one warm-up each.
    static func alternate(minimumSeconds: Double, _ a: () throws -> Void, _ b: () throws -> Void) throws -> (Double, Double) {
        try a()
        try b()
        var ta: [Double] = [], tb: [Double] = []
        let clock = ContinuousClock()
        let start = clock.now
        while ta.count < 5 || seconds(clock.now - start) < minimumSeconds {
            ta.append(seconds(try clock.measure(a)))
            tb.append(seconds(try clock.measure(b)))
        }
        return (median(ta), median(tb))
    }

    static func measure(minimumSeconds: Double, _ body: () throws -> Void) throws -> Double {
        try alternate(minimumSeconds: minimumSeconds, body, {}).0
    }

    static func seconds(_ d: Duration) -> Double {
        Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
    }

    static func median(_ values: [Double]) -> Double {
        let s = values.sorted()
        return s[s.count / 2]
    }
}
