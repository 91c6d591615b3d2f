import CBLAS
import Dispatch
import Foundation

/// Single-precision matrix products through OpenBLAS: the only file that imports CBLAS.
///
/// Row-major throughout: `C[m, n] = alpha · op(A)[m, k] · op(B)[k, n] + beta · C`, where `op` transposes
/// when asked, and `lda`, `ldb`, `ldc` are the row lengths of A, B and C as stored.
public enum GEMM {
    @inline(__always)
    public static func multiply(
        transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int,
        alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
        b: UnsafePointer<Float>, ldb: Int,
        beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        if m == 0 || n == 0 { return }
        if k == 0 {
            // BLAS leaves C scaled by beta; do the same without calling it with k = 0.
            for i in 0..<m { for j in 0..<n { c[i * ldc + j] = beta == 0 ? 0 : beta * c[i * ldc + j] } }
            return
        }
        let parts = Parallel.coreCount
        let split = split(m: m, n: n, k: k)
        if split != .none {
            let alongRows = split == .rows
            let total = alongRows ? m : n
            let step = (total + parts - 1) / parts
            let box = UncheckedSendable((a, b, c))
            DispatchQueue.concurrentPerform(iterations: parts) { part in
                let (a, b, c) = box.value
                let lo = part * step, hi = Swift.min(total, lo + step)
                guard lo < hi else { return }
                if alongRows {
                    sgemm(transposeA, transposeB, hi - lo, n, k, alpha, transposeA ? a + lo : a + lo * lda, lda,
                          b, ldb, beta, c + lo * ldc, ldc)
                } else {
                    sgemm(transposeA, transposeB, m, hi - lo, k, alpha, a, lda,
                          transposeB ? b + lo * ldb : b + lo, ldb, beta, c + lo, ldc)
                }
            }
            return
        }
        sgemm(transposeA, transposeB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
    }

    /// How `multiply` spreads a product over the cores: not at all when it is small, else by rows of C when
    /// there are enough, else by columns; each core takes an equal contiguous share (the last one the rest).
    /// Ops that make their own per-core products use it too, so that each element comes out of the same
    /// OpenBLAS call shape, and so bit for bit the same, as through `multiply`.
    enum Split { case none, rows, columns }

    static func split(m: Int, n: Int, k: Int) -> Split {
        let parts = Parallel.coreCount
        guard m * n * k >= 1 << 18 && (m >= 2 * parts || n >= 64 * parts) else { return .none }
        return m >= n || n < 64 * parts ? .rows : .columns
    }

    /// One single-threaded product (OpenBLAS runs on one thread; Finch owns the cores).
    @inline(__always)
    static func sgemm(_ transposeA: Bool, _ transposeB: Bool, _ m: Int, _ n: Int, _ k: Int, _ alpha: Float,
                      _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int,
                      _ beta: Float, _ c: UnsafeMutablePointer<Float>, _ ldc: Int) {
        _ = ownsThreads
        if m == 1 {
            // One row of C (decoding a token): a matrix-vector product, c = B · a when B is stored [n, k] and
            // Bᵀ · a when stored [k, n]. sgemm would first copy all of B into its packed layout, which costs
            // more than the product (on a 32,000-token head, 4× as much); sgemv reads B once.
            cblas_sgemv(CblasRowMajor, transposeB ? CblasNoTrans : CblasTrans, Int32(transposeB ? n : k),
                        Int32(transposeB ? k : n),
                        alpha, b, Int32(ldb), a, Int32(transposeA ? lda : 1), beta, c, 1)
            return
        }
        cblas_sgemm(
            CblasRowMajor,
            transposeA ? CblasTrans : CblasNoTrans,
            transposeB ? CblasTrans : CblasNoTrans,
            Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    /// OpenBLAS runs single-threaded and Finch splits large products across the cores itself, so GEMM and
    /// element-wise work share one set of threads instead of OpenBLAS's spinning beside Finch's.
    static let ownsThreads: Bool = {
        openblas_set_num_threads(1)
        return true
    }()

    /// One product by OpenBLAS alone on `threads` threads, without Finch's split: the reference
    /// `finch bench` measures the engine against.
    public static func multiplyWithOpenBLASThreads(
        _ threads: Int, transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int,
        a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        _ = ownsThreads
        let previous = openblas_get_num_threads()
        openblas_set_num_threads(Int32(threads))
        sgemm(transposeA, transposeB, m, n, k, 1, a, lda, b, ldb, 0, c, ldc)
        openblas_set_num_threads(previous)
    }

    /// How many threads OpenBLAS uses for one product (1: Finch owns the cores).
    public static var threadCount: Int {
        _ = ownsThreads
        return Int(openblas_get_num_threads())
    }
}
