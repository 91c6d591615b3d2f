import Dispatch
import Synchronization
import Testing
@testable import FinchTensor

/// The worker pool behind `Parallel.perform`: every index runs exactly once, job after job, when jobs start
/// inside jobs, and when several threads start jobs at once (the pool takes one, Dispatch the others).
@Suite("worker pool")
struct WorkerPoolTests {
    /// Runs `iterations` indices through `Parallel.perform` and returns how often each ran.
    static func counts(_ iterations: Int) -> [Int] {
        let hits = PThreadLocked([Int](repeating: 0, count: iterations))
        Parallel.perform(iterations: iterations) { i in hits.withLock { $0[i] += 1 } }
        return hits.withLock { $0 }
    }

    @Test func everyIndexRunsOnceJobAfterJob() {
        for round in 0..<2_000 {
            let n = 1 + round % 7
            #expect(Self.counts(n) == [Int](repeating: 1, count: n), "round \(round)")
        }
    }

    @Test func aJobInsideAJobRuns() {
        let total = Atomic<Int>(0)
        Parallel.perform(iterations: 4) { _ in
            Parallel.perform(iterations: 5) { j in total.wrappingAdd(j, ordering: .relaxed) }
        }
        #expect(total.load(ordering: .relaxed) == 4 * (0 + 1 + 2 + 3 + 4))
    }

    @Test func severalCallersAtOnce() {
        let failures = Atomic<Int>(0)
        DispatchQueue.concurrentPerform(iterations: 4) { caller in
            for round in 0..<300 where Self.counts(2 + (caller + round) % 5) != [Int](repeating: 1, count: 2 + (caller + round) % 5) {
                failures.wrappingAdd(1, ordering: .relaxed)
            }
        }
        #expect(failures.load(ordering: .relaxed) == 0)
    }

    /// A job's results are visible to the caller when `perform` returns, and the caller's closure is not kept.
    @Test func resultsAreVisibleAndTheClosureIsReleased() {
        final class Marker {}
        weak var released: Marker?
        var out = [Int](repeating: 0, count: 64)
        do {
            let marker = Marker()
            released = marker
            out.withUnsafeMutableBufferPointer { buffer in
                let p = UncheckedSendable(buffer.baseAddress!)
                Parallel.perform(iterations: 64) { i in
                    withExtendedLifetime(marker) { p.value[i] = i * i }
                }
            }
        }
        #expect(out == (0..<64).map { $0 * $0 })
        #expect(released == nil)
    }
}
