import Dispatch
import Foundation

/// Splits element-wise and reduction work across the cores.
///
/// GEMM is not run through here: OpenBLAS keeps its own threads. Work below `minimumChunk` elements per
/// core runs on the calling thread, because waking another thread costs more than it saves.
public enum Parallel {
    public static let coreCount = max(1, ProcessInfo.processInfo.activeProcessorCount)

    /// Calls `body` on disjoint sub-ranges covering `0..<count`, concurrently when the work is large.
    @inline(__always)
    public static func forChunks(count: Int, minimumChunk: Int = 32_768, _ body: (Range<Int>) -> Void) {
        let chunks = min(coreCount, count / max(minimumChunk, 1))
        if chunks <= 1 {
            body(0..<count)
            return
        }
        let per = (count + chunks - 1) / chunks
        perform(iterations: chunks) { c in
            let start = c * per
            let end = min(count, start + per)
            if start < end { body(start..<end) }
        }
    }

    /// The threads that run `perform`'s jobs beside the caller (one fewer than the cores).
    static let pool = WorkerPool(threads: coreCount - 1)

    /// Calls `body(i)` for every i in `0..<iterations`, concurrently on all cores: on the worker pool, or through
    /// Dispatch when the pool is busy (a job started inside a job, or by two threads at once).
    public static func perform(iterations: Int, _ body: (Int) -> Void) {
        if iterations <= 1 || coreCount == 1 {
            for i in 0..<iterations { body(i) }
            return
        }
        if pool.perform(iterations: iterations, body) { return }
        withoutActuallyEscaping(body) { body in
            let box = UncheckedSendable(body)
            DispatchQueue.concurrentPerform(iterations: iterations) { box.value($0) }
        }
    }

    /// Calls `body(row)` for every row in `0..<rows`, grouping rows so each task holds about
    /// `minimumChunk` elements of `rowLength`.
    @inline(__always)
    public static func forRows(_ rows: Int, rowLength: Int, minimumChunk: Int = 32_768, _ body: (Int) -> Void) {
        let rowsPerChunk = max(1, minimumChunk / max(rowLength, 1))
        forChunks(count: rows, minimumChunk: rowsPerChunk) { r in
            for row in r { body(row) }
        }
    }
}

/// Lets a value cross into `concurrentPerform`'s closure when the caller guarantees the tasks touch
/// disjoint memory.
struct UncheckedSendable<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
