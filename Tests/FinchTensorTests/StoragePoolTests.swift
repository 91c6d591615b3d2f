import Testing
@testable import FinchTensor

/// The buffer pool: reuse of equal sizes, and live + kept bytes never above the most ever live.
@Suite("storage pool")
struct StoragePoolTests {
    let megabyte = 1 << 18  // floats

    /// Zeros come from fresh pages unwritten, or from a kept buffer cleared: either way they read as zero.
    @Test func zerosAreFreshPagesOrAClearedBuffer() {
        let pool = StoragePool()
        let (fresh, zeroed) = pool.take(count: megabyte, wantZeros: true)
        #expect(zeroed)
        #expect((0..<megabyte).allSatisfy { fresh[$0] == 0 })
        fresh[5] = 3
        pool.give(fresh, count: megabyte)
        let (kept, keptZeroed) = pool.take(count: megabyte, wantZeros: true)
        #expect(kept == fresh && !keptZeroed, "a kept buffer is reused and must be cleared by the caller")
        pool.give(kept, count: megabyte)
        let t = Tensor.zeros([megabyte])
        #expect(t.scalars.allSatisfy { $0 == 0 })
    }

    @Test func aReleasedBufferIsReusedForTheSameSize() {
        let pool = StoragePool()
        let a = pool.take(count: megabyte, wantZeros: false).pointer
        a[megabyte - 1] = 7
        pool.give(a, count: megabyte)
        #expect(pool.usage.held == 4 * megabyte)
        let b = pool.take(count: megabyte, wantZeros: false).pointer
        #expect(b == a)
        #expect(pool.usage.held == 0)
        pool.give(b, count: megabyte)
    }

    @Test func aMissUnmapsKeptBuffersInsteadOfGrowingPastThePeak() {
        let pool = StoragePool(slackBytes: 0)
        // Peak: three 1 MB buffers live at once.
        let first = (0..<3).map { _ in pool.take(count: megabyte, wantZeros: false).pointer }
        for p in first { pool.give(p, count: megabyte) }
        #expect(pool.usage.held == 12 * megabyte)
        #expect(pool.usage.highWater == 12 * megabyte)
        // A 2 MB request nobody released before: one kept 1 MB buffer would push live + kept past 3 MB,
        // so the pool gives up enough kept buffers first (a smallest size that covers the excess).
        let big = pool.take(count: 2 * megabyte, wantZeros: false).pointer
        big[2 * megabyte - 1] = 1  // the new buffer is writable to its end
        let u = pool.usage
        #expect(u.live == 8 * megabyte)
        #expect(u.live + u.held <= u.highWater)
        #expect(u.held == 4 * megabyte)
        // Growing past the old peak raises it; nothing is kept that would not fit under it.
        let more = (0..<2).map { _ in pool.take(count: megabyte, wantZeros: false).pointer }
        #expect(pool.usage.highWater == 16 * megabyte)
        pool.give(big, count: 2 * megabyte)
        for p in more { pool.give(p, count: megabyte) }
        #expect(pool.usage.live == 0)
        #expect(pool.usage.held <= pool.usage.highWater)
    }

    /// After a reset the bound is what is live then: weights built and then replaced (a quantised base) no
    /// longer let the pool keep every buffer a step frees.
    @Test func aResetBoundsThePoolByWhatIsLiveNow() {
        let pool = StoragePool(slackBytes: 0)
        let weights = (0..<4).map { _ in pool.take(count: megabyte, wantZeros: true).pointer }
        let kept = pool.take(count: megabyte, wantZeros: false).pointer
        for p in weights { pool.give(p, count: megabyte) }
        #expect(pool.usage.highWater == 20 * megabyte && pool.usage.held == 16 * megabyte)
        pool.resetHighWater()
        #expect(pool.usage.highWater == 4 * megabyte && pool.usage.held == 0 && pool.usage.live == 4 * megabyte)
        // A step's two buffers: the second is past the new bound, so giving both back keeps only what fits.
        let a = pool.take(count: megabyte, wantZeros: false).pointer, b = pool.take(count: megabyte, wantZeros: false).pointer
        pool.give(a, count: megabyte)
        pool.give(b, count: megabyte)
        #expect(pool.usage.highWater == 12 * megabyte)
        pool.give(kept, count: megabyte)
    }

    @Test func theSlackIsKeptBeyondThePeak() {
        let pool = StoragePool(slackBytes: 4 * megabyte)  // bytes: one 1 MB buffer
        let first = (0..<3).map { _ in pool.take(count: megabyte, wantZeros: false).pointer }
        for p in first { pool.give(p, count: megabyte) }
        let big = pool.take(count: 2 * megabyte, wantZeros: false).pointer
        // live 2 MB + kept may reach the 3 MB peak plus the 1 MB slack: two of the three 1 MB buffers stay.
        #expect(pool.usage.held == 8 * megabyte)
        pool.give(big, count: 2 * megabyte)
    }

    @Test func smallBuffersBypassThePool() {
        let pool = StoragePool()
        let p = pool.take(count: 100, wantZeros: false).pointer
        p[99] = 1
        pool.give(p, count: 100)
        #expect(pool.usage.live == 0 && pool.usage.held == 0)
    }

    @Test func aPassThroughPoolKeepsNothing() {
        // What the shared pool is under a sanitizer: malloc's buffers, each freed when given back.
        let pool = StoragePool(passThrough: true)
        let a = pool.take(count: megabyte, wantZeros: false).pointer
        a[megabyte - 1] = 7
        #expect(pool.usage.live == 0 && pool.usage.highWater == 0)
        pool.give(a, count: megabyte)
        #expect(pool.usage.held == 0)
    }

    @Test func aMissTakesALargerKeptBufferWhenLiveBytesStayUnderThePeak() {
        let pool = StoragePool(slackBytes: 0)
        let activations = (0..<2).map { _ in pool.take(count: megabyte, wantZeros: false).pointer }  // the peak: 2 MB asked for
        pool.give(activations[1], count: megabyte)
        // A gradient of 0.75 MB while one activation is still live: the kept 1 MB buffer serves it (no new pages).
        let gradient = pool.take(count: 3 * megabyte / 4, wantZeros: false).pointer
        #expect(gradient == activations[1])
        #expect(pool.usage.live == 8 * megabyte && pool.usage.held == 0)
        pool.give(gradient, count: 3 * megabyte / 4)
        pool.give(activations[0], count: megabyte)
        // It went back as the 1 MB buffer it is, so the next "forward pass" finds both again.
        #expect(pool.usage.held == 8 * megabyte)
        let again = (0..<2).map { _ in pool.take(count: megabyte, wantZeros: false).pointer }
        #expect(Set(again) == Set(activations))
        for p in again { pool.give(p, count: megabyte) }
    }

    @Test func aLargerBufferIsNotTakenWhenItWouldPassThePeakOrWasteTooMuch() {
        let pool = StoragePool(slackBytes: 64 * megabyte)
        let kept = pool.take(count: megabyte, wantZeros: false).pointer
        pool.give(kept, count: megabyte)
        let live = pool.take(count: 2 * megabyte, wantZeros: false).pointer  // peak asked for: 2 MB, live 2 MB
        // 2.5 MB asked for now, live would be 3 MB in buffers: past the peak, so fresh pages instead.
        let half = pool.take(count: megabyte / 2, wantZeros: false).pointer
        #expect(half != kept)
        // A request under half the kept size never takes it.
        pool.give(live, count: 2 * megabyte)
        let tiny = pool.take(count: megabyte / 8, wantZeros: false).pointer
        #expect(tiny != kept)
        #expect(pool.usage.held == 4 * megabyte + 8 * megabyte)
        pool.give(half, count: megabyte / 2)
        pool.give(tiny, count: megabyte / 8)
    }

    @Test func repeatedStepsDoNotRaiseThePeak() {
        // Forward: two activations; backward: a smaller gradient while one is freed; then both freed.
        let pool = StoragePool(slackBytes: 0)
        var peaks: [Int] = [], resident: [Int] = []
        for _ in 0..<4 {
            let a = pool.take(count: megabyte, wantZeros: false).pointer, b = pool.take(count: megabyte, wantZeros: false).pointer
            pool.give(b, count: megabyte)
            let g = pool.take(count: megabyte / 2, wantZeros: false).pointer
            pool.give(a, count: megabyte)
            pool.give(g, count: megabyte / 2)
            peaks.append(pool.usage.highWater)
            resident.append(pool.usage.held)
        }
        #expect(Set(peaks) == [8 * megabyte])
        #expect(Set(resident) == [8 * megabyte])
    }
}
