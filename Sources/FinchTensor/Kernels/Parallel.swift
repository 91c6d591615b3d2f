import Dispatch
import Foundation

/// Splits element-wise and reduction work across the cores.
///
/// GEMM is not run through here: OpenBLAS keeps its own threads. Work below `minimumChunk` elements per
/// core runs on the calling thread, because waking another thread costs more than it saves.
public enum Parallel {
    /// The threads Finch computes on: FINCH_THREADS when set, otherwise every core, shared out evenly among the
    /// processes an `mpirun` starts on this machine (Open MPI's OMPI_COMM_WORLD_LOCAL_SIZE), so that two ranks on
    /// two cores take one each. Results are bitwise the same for the same number of threads; another number may
    /// round differently.
    public static let coreCount: Int = {
        let environment = ProcessInfo.processInfo.environment
        if let threads = environment["FINCH_THREADS"].flatMap({ Int($0) }), threads > 0 { return threads }
        let cores = max(1, ProcessInfo.processInfo.activeProcessorCount)
        guard let local = environment["OMPI_COMM_WORLD_LOCAL_SIZE"].flatMap({ Int($0) }), local > 1 else { return cores }
        return max(1, cores / local)
    }()

    /// FINCH_THREADS when it is set to something other than a positive integer (the command line refuses it).
    public static var invalidThreadSetting: String? {
        guard let value = ProcessInfo.processInfo.environment["FINCH_THREADS"] else { return nil }
        return Int(value).map { $0 > 0 } == true ? nil : value
    }

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
