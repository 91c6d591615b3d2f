import Synchronization

/// One aligned allocation of float32 values, shared by a tensor and its reshaped views.
///
/// Large buffers are handed back to a small pool when released, because a training step allocates
/// the same shapes every time and fresh pages from the kernel cost a fault each on first touch.
public final class TensorStorage: @unchecked Sendable {
    public let count: Int
    public let pointer: UnsafeMutablePointer<Float>

    /// Uninitialised storage: every caller writes all `count` values before anyone reads them.
    init(uninitializedCount count: Int) {
        self.count = count
        self.pointer = StoragePool.shared.take(count: count)
    }

    /// Storage with every value set to `value`.
    convenience init(count: Int, repeating value: Float) {
        self.init(uninitializedCount: count)
        if value == 0 {
            pointer.update(repeating: 0, count: count)
        } else {
            pointer.update(repeating: value, count: count)
        }
    }

    deinit {
        StoragePool.shared.give(pointer, count: count)
    }

    public var buffer: UnsafeMutableBufferPointer<Float> {
        UnsafeMutableBufferPointer(start: pointer, count: count)
    }
}

/// Free buffers keyed by exact element count, capped in total size.
final class StoragePool: Sendable {
    static let shared = StoragePool()

    /// Buffers smaller than this go straight to malloc; they are cheap to get.
    static let minimumPooledCount = 4096
    /// Bytes the pool may hold before it frees instead of keeping.
    static let capacityBytes = 1 << 30
    static let alignment = 64

    private struct State {
        var free: [Int: [UInt]] = [:]  // addresses, so the state is Sendable
        var heldBytes = 0
    }
    private let state = Mutex(State())

    func take(count: Int) -> UnsafeMutablePointer<Float> {
        let byteCount = max(count, 1) * MemoryLayout<Float>.stride
        if count >= Self.minimumPooledCount {
            let reused: UInt? = state.withLock { s in
                guard let p = s.free[count]?.popLast() else { return nil }
                s.heldBytes -= byteCount
                return p
            }
            if let reused, let p = UnsafeMutablePointer<Float>(bitPattern: reused) { return p }
        }
        let raw = UnsafeMutableRawPointer.allocate(byteCount: byteCount, alignment: Self.alignment)
        return raw.bindMemory(to: Float.self, capacity: max(count, 1))
    }

    func give(_ pointer: UnsafeMutablePointer<Float>, count: Int) {
        let raw = UnsafeMutableRawPointer(pointer)
        let byteCount = max(count, 1) * MemoryLayout<Float>.stride
        if count >= Self.minimumPooledCount {
            let kept = state.withLock { s -> Bool in
                guard s.heldBytes + byteCount <= Self.capacityBytes else { return false }
                s.free[count, default: []].append(UInt(bitPattern: raw))
                s.heldBytes += byteCount
                return true
            }
            if kept { return }
        }
        raw.deallocate()
    }
}
