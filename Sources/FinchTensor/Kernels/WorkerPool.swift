import Foundation
import Synchronization

/// Threads that stay awake between jobs for a short while, so that the many small jobs of decoding (a product
/// of one row of activations takes tens of microseconds) do not each pay for waking a sleeping thread, which
/// costs as much as the job itself on a virtual machine. A job is `body(0..<iterations)`, one index at a time,
/// spread over the caller and the pool's threads; the caller returns when every index has run.
///
/// One job runs at a time. A caller that finds the pool busy (a job inside a job, or two threads at once) is
/// told so and uses Dispatch instead. A worker with nothing to do spins for `spinTime`, then sleeps until the
/// next job: long enough to bridge the gap between one layer's products and the next, short enough not to hold
/// a core that OpenBLAS's own threads want during training.
final class WorkerPool: @unchecked Sendable {
    /// One job: its indices are taken one by one from `next` by whoever runs it.
    private final class Job: @unchecked Sendable {
        let body: (Int) -> Void
        let iterations: Int
        let next = Atomic<Int>(0)
        let unfinished: Atomic<Int>

        init(body: @escaping (Int) -> Void, iterations: Int) {
            self.body = body
            self.iterations = iterations
            unfinished = Atomic(iterations)
        }

        func runIndices() {
            while true {
                let i = next.wrappingAdd(1, ordering: .relaxed).oldValue
                guard i < iterations else { return }
                body(i)
                unfinished.wrappingSubtract(1, ordering: .releasing)
            }
        }
    }

    static let spinTime: UInt64 = 200_000  // nanoseconds

    private let busy = Atomic<Bool>(false)
    /// Bumped when a job is published; workers wait for it to change.
    private let generation = Atomic<Int>(0)
    private let sleepers = Atomic<Int>(0)
    /// Workers holding a reference to the current job: the caller's closure must not outlive `perform`.
    private let holders = Atomic<Int>(0)
    private let condition = NSCondition()
    private var current: Job?

    init(threads: Int) {
        for _ in 0..<threads {
            let thread = Thread { [unowned self] in self.work() }
            thread.stackSize = 1 << 20
            thread.start()
        }
    }

    /// Runs `body` for each index in `0..<iterations` on the caller and the pool, or returns false at once
    /// (nothing run) when the pool is busy with another job.
    func perform(iterations: Int, _ body: (Int) -> Void) -> Bool {
        guard busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else { return false }
        defer { busy.store(false, ordering: .releasing) }
        withoutActuallyEscaping(body) { body in
            let job = Job(body: body, iterations: iterations)
            condition.lock()
            current = job
            condition.unlock()
            generation.wrappingAdd(1, ordering: .sequentiallyConsistent)
            if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
                condition.lock()
                condition.broadcast()
                condition.unlock()
            }
            job.runIndices()
            while job.unfinished.load(ordering: .acquiring) > 0 {}
            condition.lock()
            current = nil
            condition.unlock()
            while holders.load(ordering: .acquiring) > 0 {}
        }
        return true
    }

    private func work() {
        var seen = 0
        while true {
            let start = DispatchTime.now().uptimeNanoseconds
            var spins = 0
            while generation.load(ordering: .sequentiallyConsistent) == seen {
                spins += 1
                if spins & 1023 == 0, DispatchTime.now().uptimeNanoseconds - start > Self.spinTime {
                    condition.lock()
                    sleepers.wrappingAdd(1, ordering: .sequentiallyConsistent)
                    while generation.load(ordering: .sequentiallyConsistent) == seen { condition.wait() }
                    sleepers.wrappingSubtract(1, ordering: .sequentiallyConsistent)
                    condition.unlock()
                }
            }
            seen = generation.load(ordering: .sequentiallyConsistent)
            if runCurrentJob() { holders.wrappingSubtract(1, ordering: .releasing) }
        }
    }

    /// Takes the current job, if any, and runs indices of it; the reference is dropped on return, before the
    /// caller counts this worker out of the job's holders.
    private func runCurrentJob() -> Bool {
        condition.lock()
        let job = current
        if job != nil { holders.wrappingAdd(1, ordering: .relaxed) }
        condition.unlock()
        guard let job else { return false }
        job.runIndices()
        return true
    }
}
