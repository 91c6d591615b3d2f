import Testing
@testable import FinchTensor

@Suite("cblas_sgemm wrapper against the naive loop")
struct GEMMTests {
    static let shapes = [(1, 1, 1), (3, 5, 7), (129, 65, 33), (64, 1, 17)]
    static let transposes = [(false, false), (false, true), (true, false), (true, true)]

    @Test(arguments: shapes)
    func matchesReference(_ shape: (Int, Int, Int)) {
        let (m, n, k) = shape
        for (tA, tB) in Self.transposes {
            for (alpha, beta) in [(Float(1), Float(0)), (Float(0.5), Float(1.5))] {
                let a = Inputs.normal([m * k], seed: 11).scalars
                let b = Inputs.normal([k * n], seed: 12).scalars
                let c0 = Inputs.normal([m * n], seed: 13).scalars
                var fast = c0, slow = c0
                let lda = tA ? m : k, ldb = tB ? k : n
                GEMM.multiply(transposeA: tA, transposeB: tB, m: m, n: n, k: k, alpha: alpha,
                              a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: &fast, ldc: n)
                GEMM.multiplyReference(transposeA: tA, transposeB: tB, m: m, n: n, k: k, alpha: alpha,
                                       a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: &slow, ldc: n)
                let worst = zip(fast, slow).map { abs($0 - $1) }.max() ?? 0
                #expect(worst < 1e-4, "m \(m) n \(n) k \(k) tA \(tA) tB \(tB) alpha \(alpha) beta \(beta): \(worst)")
            }
        }
    }

    /// One row of C (decoding a token) goes to sgemv: every layout, strides past the minimum, a product split
    /// across the cores by columns, and C full of NaN where beta = 0 says it is not read.
    @Test func oneRowProductsMatchReference() {
        for (n, k) in [(5, 7), (300, 70), (1000, 300)] {
            for (tA, tB) in Self.transposes {
                for (alpha, beta) in [(Float(1), Float(0)), (Float(0.5), Float(1.5))] {
                    let lda = tA ? 3 : k + 2, ldb = tB ? k + 1 : n + 3, ldc = n
                    let a = Inputs.normal([tA ? k * lda : lda], seed: 21).scalars
                    let b = Inputs.normal([tB ? n * ldb : k * ldb], seed: 22).scalars
                    let c0 = beta == 0 ? [Float](repeating: .nan, count: n) : Inputs.normal([n], seed: 23).scalars
                    var fast = c0, slow = c0.map { $0.isNaN ? 0 : $0 }
                    GEMM.multiply(transposeA: tA, transposeB: tB, m: 1, n: n, k: k, alpha: alpha,
                                  a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: &fast, ldc: ldc)
                    GEMM.multiplyReference(transposeA: tA, transposeB: tB, m: 1, n: n, k: k, alpha: alpha,
                                           a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: &slow, ldc: ldc)
                    let worst = zip(fast, slow).map { abs($0 - $1) }.max() ?? 0
                    #expect(fast.allSatisfy(\.isFinite) && worst < 1e-4,
                            "n \(n) k \(k) tA \(tA) tB \(tB) alpha \(alpha) beta \(beta): \(worst)")
                }
            }
        }
    }

    @Test func matmulOpMatchesReferenceOnBatches() throws {
        // [2, 3, 4, 5] · [2, 3, 5, 6] against per-batch naive products.
        let a = Inputs.normal([2, 3, 4, 5], seed: 3), b = Inputs.normal([2, 3, 5, 6], seed: 4)
        let y = try a.matmul(b)
        #expect(y.shape == [2, 3, 4, 6])
        var expected = [Float](repeating: 0, count: 2 * 3 * 4 * 6)
        let ap = a.scalars, bp = b.scalars
        for batch in 0..<6 {
            ap.withUnsafeBufferPointer { A in
                bp.withUnsafeBufferPointer { B in
                    expected.withUnsafeMutableBufferPointer { C in
                        GEMM.multiplyReference(transposeA: false, transposeB: false, m: 4, n: 6, k: 5,
                                               a: A.baseAddress! + batch * 20, lda: 5, b: B.baseAddress! + batch * 30, ldb: 6,
                                               c: C.baseAddress! + batch * 24, ldc: 6)
                    }
                }
            }
        }
        expectClose(y.scalars, expected, tolerance: 1e-5)
    }
}
