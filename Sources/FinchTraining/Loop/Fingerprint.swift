import Foundation

/// A 64-bit FNV-1a hash: stable across runs and machines (Swift's `Hasher` is seeded per process), for what a
/// checkpoint must recognise on resume (the resolved recipe, the training data).
struct Fingerprint {
    private(set) var value: UInt64 = 0xcbf2_9ce4_8422_2325

    mutating func add(_ byte: UInt8) {
        value = (value ^ UInt64(byte)) &* 0x100_0000_01b3
    }

    /// The integer's eight bytes, least significant first.
    mutating func add(_ integer: Int64) {
        var v = UInt64(bitPattern: integer)
        for _ in 0..<8 {
            add(UInt8(v & 0xff))
            v >>= 8
        }
    }

    var hex: String { String(format: "%016llx", value) }
}
