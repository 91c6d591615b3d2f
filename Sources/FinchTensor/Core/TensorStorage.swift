#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One aligned allocation of float32 values, shared by a tensor and its reshaped views.
///
/// Large buffers are handed back to a small pool when released, because a training step allocates
/// the same shapes every time and fresh pages from the kernel cost a fault each on first touch.
public final class TensorStorage: @unchecked Sendable {
    public let count: Int
    public let pointer: UnsafeMutablePointer<Float>
    /// The storage whose first `count` values this one is (`Tensor.leadingView`), kept alive by it.
    let base: TensorStorage?

    /// Uninitialised storage: every caller writes all `count` values before anyone reads them.
    init(uninitializedCount count: Int) {
        self.count = count
        self.pointer = StoragePool.shared.take(count: count, wantZeros: false).pointer
        self.base = nil
    }

    /// The first `count` values of `base`, not a copy.
    init(leadingValuesOf base: TensorStorage, count: Int) {
        precondition(count <= base.count, "a view cannot be longer than its storage")
        self.count = count
        self.pointer = base.pointer
        self.base = base
    }

    /// Whether the only reference to `storage` is the caller's and its memory is its own (not a view's), so
    /// the caller may write over it.
    static func isExclusive(_ storage: inout TensorStorage) -> Bool {
        isKnownUniquelyReferenced(&storage) && storage.base == nil
    }

    /// Storage with every value set to `value`. Zeros in fresh pages from the kernel are left unwritten: the
    /// kernel's pages are zero already, and untouched ones take no memory (a model built before its weights are
    /// loaded, or whose weights are replaced by quantised ones, never holds the float32 zeros).
    init(count: Int, repeating value: Float) {
        let (pointer, zeroed) = StoragePool.shared.take(count: count, wantZeros: value == 0)
        self.count = count
        self.pointer = pointer
        self.base = nil
        if !zeroed { pointer.update(repeating: value, count: count) }
    }

    deinit {
        if base == nil { StoragePool.shared.give(pointer, count: count) }
    }

    public var buffer: UnsafeMutableBufferPointer<Float> {
        UnsafeMutableBufferPointer(start: pointer, count: count)
    }
}

extension TensorStorage {
    /// Gives back every buffer the pool keeps and bounds it anew by what is live now (`StoragePool.resetHighWater`):
    /// call once a model's weights have been replaced by smaller ones.
    public static func resetPool() { StoragePool.shared.resetHighWater() }
}

/// Free buffers keyed by exact element count.
///
/// Large buffers come straight from the kernel (`mmap`) so that giving one up returns its pages at once.
/// The pool keeps released buffers for reuse, but never lets live plus kept bytes grow past the most that
/// was ever live (plus a small slack): a miss first unmaps kept buffers of other sizes. A training step allocates the same
/// shapes every time, so after the first step nearly every request is a hit, and the resident size stays
/// close to the step's true peak instead of the peak plus whatever sizes happened to be idle then.
final class StoragePool: Sendable {
    /// Under a sanitizer every buffer is malloc's own (see `passThrough`).
    static let shared = StoragePool(passThrough: SanitizerRuntime.isLoaded)

    /// Buffers smaller than this go to malloc; they are cheap to get and too small to matter.
    static let minimumPooledCount = 4096
    /// Bytes the pool may hold before it frees instead of keeping.
    static let capacityBytes = 1 << 30
    static let alignment = 64
    /// How far live + kept may exceed the high-water mark: buffers above the mark are given back to the system
    /// (and faulted in again when asked for), except this much, kept to spare the faults of the next step.
    let slackBytes: Int
    /// A miss may take a kept buffer up to this many times the size asked for instead of mapping fresh pages,
    /// when that keeps the bytes actually live within the high-water mark. It lets a step's gradients reuse its
    /// activations' buffers (and the other way round), whose sizes differ; a larger factor spares more faults
    /// but leaves more of each buffer unused while it is held.
    static let maximumWaste = 2.0

    /// Every buffer comes from malloc and goes back to it at once, nothing kept or mapped: so that
    /// AddressSanitizer sees a kernel writing past a buffer or into one given back, and ThreadSanitizer sees
    /// each buffer's hand-over from one thread to the next, which reuse of pooled memory hides from both.
    let passThrough: Bool

    init(slackBytes: Int = 16 << 20, passThrough: Bool = false) {
        self.slackBytes = slackBytes
        self.passThrough = passThrough
    }

    private struct State {
        var free: [Int: [UInt]] = [:]  // byte count → addresses, so the state is Sendable
        var heldBytes = 0
        /// Bytes of the live buffers, counting a larger buffer's whole size.
        var liveBytes = 0
        /// Bytes the live buffers were asked for.
        var requestedBytes = 0
        /// The most bytes ever asked for at once. Measured in requests, not buffer sizes, so that a larger
        /// buffer serving a smaller request cannot raise the bound from one step to the next.
        var highWater = 0
        /// Buffers malloc provided because mmap failed.
        var fromMalloc: Set<UInt> = []
        /// Buffers handed out for a smaller request than their size: address → their size in bytes.
        var oversized: [UInt: Int] = [:]

        /// A kept buffer for a request of `byteCount`: one of exactly that size, else the smallest kept one up to
        /// `maximumWaste` times larger if live bytes stay within the high-water mark; its size and address.
        mutating func reuse(_ byteCount: Int) -> (size: Int, address: UInt)? {
            if let p = free[byteCount]?.popLast() { return (byteCount, p) }
            let limit = min(Double(highWater - liveBytes), StoragePool.maximumWaste * Double(byteCount))
            guard let size = free.keys.filter({ $0 > byteCount && Double($0) <= limit && !(free[$0]?.isEmpty ?? true) }).min(),
                  let p = free[size]?.popLast() else { return nil }
            oversized[p] = size
            return (size, p)
        }

        /// Removes kept buffers until live + held fits under the high-water mark (plus the slack); returns them
        /// for unmapping.
        mutating func evictOverHighWater(slack: Int) -> [(UInt, Int)] {
            var excess = liveBytes + heldBytes - highWater - slack
            var victims: [(UInt, Int)] = []
            while excess > 0, heldBytes > 0 {
                // The smallest size that covers the excess alone, else the largest kept.
                let sizes = free.keys.filter { !(free[$0]?.isEmpty ?? true) }
                guard let size = sizes.filter({ $0 >= excess }).min() ?? sizes.max(),
                      let address = free[size]?.popLast() else { break }
                heldBytes -= size
                excess -= size
                victims.append((address, size))
            }
            return victims
        }
    }
    private let state = PThreadLocked(State())

    /// (live, kept, high-water) bytes of pooled buffers, for tests.
    var usage: (live: Int, held: Int, highWater: Int) { state.withLock { ($0.liveBytes, $0.heldBytes, $0.highWater) } }

    /// A buffer for `count` floats (a kept one when there is one), and whether it is known to hold zeros: fresh
    /// pages from the kernel are, when `wantZeros` asks; a kept buffer holds whatever it held.
    func take(count: Int, wantZeros: Bool) -> (pointer: UnsafeMutablePointer<Float>, zeroed: Bool) {
        let byteCount = max(count, 1) * MemoryLayout<Float>.stride
        guard count >= Self.minimumPooledCount, !passThrough else {
            let raw = UnsafeMutableRawPointer.allocate(byteCount: byteCount, alignment: Self.alignment)
            return (raw.bindMemory(to: Float.self, capacity: max(count, 1)), false)
        }
        let (reused, victims): (UInt?, [(UInt, Int)]) = state.withLock { s in
            s.requestedBytes += byteCount
            s.highWater = max(s.highWater, s.requestedBytes)
            if let (size, p) = s.reuse(byteCount) {
                s.heldBytes -= size
                s.liveBytes += size
                return (p, [])
            }
            s.liveBytes += byteCount
            return (nil, s.evictOverHighWater(slack: slackBytes))
        }
        for (address, size) in victims { release(address, byteCount: size) }
        if let reused, let p = UnsafeMutablePointer<Float>(bitPattern: reused) { return (p, false) }
        if let mapped = mapFresh(byteCount) { return (mapped.bindMemory(to: Float.self, capacity: count), wantZeros) }
        let raw = UnsafeMutableRawPointer.allocate(byteCount: byteCount, alignment: Self.alignment)
        state.withLock { _ = $0.fromMalloc.insert(UInt(bitPattern: raw)) }
        return (raw.bindMemory(to: Float.self, capacity: count), false)
    }

    /// Fresh zero pages from the kernel, or nil when it has none to give.
    private func mapFresh(_ byteCount: Int) -> UnsafeMutableRawPointer? {
        guard let mapped = mmap(nil, byteCount, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
              mapped != UnsafeMutableRawPointer(bitPattern: -1) else { return nil }
        return mapped
    }

    /// Forgets the most ever live and unmaps every kept buffer, so that the bound starts again from what is
    /// live now. For after a model's float weights were built and then replaced by smaller ones (a quantised
    /// base): their bytes would otherwise stay the bound, and the pool would keep every buffer a step frees.
    func resetHighWater() {
        let victims: [(UInt, Int)] = state.withLock { s in
            s.highWater = s.requestedBytes
            let kept = s.free.flatMap { size, addresses in addresses.map { ($0, size) } }
            s.free = [:]
            s.heldBytes = 0
            return kept
        }
        for (address, size) in victims { release(address, byteCount: size) }
    }

    func give(_ pointer: UnsafeMutablePointer<Float>, count: Int) {
        let raw = UnsafeMutableRawPointer(pointer)
        let byteCount = max(count, 1) * MemoryLayout<Float>.stride
        guard count >= Self.minimumPooledCount, !passThrough else {
            raw.deallocate()
            return
        }
        let (kept, size) = state.withLock { s -> (Bool, Int) in
            let size = s.oversized.removeValue(forKey: UInt(bitPattern: raw)) ?? byteCount
            s.liveBytes -= size
            s.requestedBytes -= byteCount
            guard s.heldBytes + size <= Self.capacityBytes else { return (false, size) }
            s.free[size, default: []].append(UInt(bitPattern: raw))
            s.heldBytes += size
            return (true, size)
        }
        if !kept { release(UInt(bitPattern: raw), byteCount: size) }
    }

    private func release(_ address: UInt, byteCount: Int) {
        guard let raw = UnsafeMutableRawPointer(bitPattern: address) else { return }
        let wasMalloc = state.withLock { $0.fromMalloc.remove(address) != nil }
        if wasMalloc { raw.deallocate() } else { munmap(raw, byteCount) }
    }
}

/// A value behind a pthread mutex. Not `Synchronization.Mutex`: on Linux that one locks with futexes
/// ThreadSanitizer does not follow, so it reports every access made under the lock as a race.
final class PThreadLocked<Value>: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private var value: Value

    init(_ value: Value) {
        self.value = value
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    func withLock<R>(_ body: (inout Value) throws -> R) rethrows -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}

/// Whether the process runs under AddressSanitizer or ThreadSanitizer (`swift build --sanitize=…`): their
/// runtimes define these entry points; nothing else does.
enum SanitizerRuntime {
    static let isLoaded: Bool = ["__asan_init", "__tsan_init"].contains { name in
        #if canImport(Darwin)
        let everyImage = UnsafeMutableRawPointer(bitPattern: -2)  // RTLD_DEFAULT
        #else
        let everyImage: UnsafeMutableRawPointer? = nil  // RTLD_DEFAULT
        #endif
        return dlsym(everyImage, name) != nil
    }
}
