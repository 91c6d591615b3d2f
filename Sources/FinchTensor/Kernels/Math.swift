#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// The C library's float32 functions under one name, so ops do not import the platform module.
enum Math {
    /// eˣ without a library call, so loops over it vectorise: Cephes' range reduction x = n·ln2 + r,
    /// a degree-6 polynomial for eʳ, and 2ⁿ built from its bit pattern. Within 2 ulp of `expf` over the
    /// float range; 0 below −87.3 (so a −∞ mask gives exactly 0), +∞ above 88.7.
    @inline(__always) static func exp(_ x: Float) -> Float {
        let c = Swift.min(Swift.max(x, -87.3), 88.7)
        // Adding 1.5·2²³ rounds to the nearest integer n and leaves n in the low mantissa bits.
        let t = c * 1.44269504088896341 + 12_582_912
        let n = t - 12_582_912
        let r = c - n * 0.693359375 + n * 2.12194440e-4
        var p: Float = 1.9875691500e-4
        p = p * r + 1.3981999507e-3
        p = p * r + 8.3334519073e-3
        p = p * r + 4.1665795894e-2
        p = p * r + 1.6666665459e-1
        p = p * r + 5.0000001201e-1
        let y = p * r * r + r + 1
        // 2ⁿ as 2^(n>>1) · 2^(n − n>>1), so n = 128 (x near 88.7) does not overflow the exponent field.
        let bits = Int32(bitPattern: t.bitPattern &- 0x4B40_0000)
        let half = bits >> 1
        let e = y * Float(bitPattern: UInt32(bitPattern: (half &+ 127) << 23))
            * Float(bitPattern: UInt32(bitPattern: (bits &- half &+ 127) << 23))
        return x < -87.3 ? 0 : (x > 88.7 ? .infinity : e)
    }

    /// Lane-wise maximum and minimum. The standard library's `pointwiseMax`/`clamped` are not inlined
    /// here (a call per eight lanes showed up at 3 % of a W3 training step); a compare and a select are.
    @inline(__always) static func max8(_ a: SIMD8<Float>,
                                       _ b: SIMD8<Float>) -> SIMD8<Float> { a.replacing(with: b, where: b .> a) }
    @inline(__always) static func min8(_ a: SIMD8<Float>,
                                       _ b: SIMD8<Float>) -> SIMD8<Float> { a.replacing(with: b, where: b .< a) }
    @inline(__always) static func max4(_ a: SIMD4<Float>,
                                       _ b: SIMD4<Float>) -> SIMD4<Float> { a.replacing(with: b, where: b .> a) }
    @inline(__always) static func max2(_ a: SIMD2<Float>,
                                       _ b: SIMD2<Float>) -> SIMD2<Float> { a.replacing(with: b, where: b .> a) }

    /// `exp` on eight lanes at once (the same arithmetic, lane by lane). Transparent rather than
    /// `@inline(__always)`: with the latter the optimiser still left nine out-of-line calls (5 % of a W2 step).
    @_transparent static func exp8(_ x: SIMD8<Float>) -> SIMD8<Float> {
        let c = max8(min8(x, SIMD8(repeating: 88.7)), SIMD8(repeating: -87.3))
        let t = c * 1.44269504088896341 + 12_582_912
        let n = t - 12_582_912
        let r = c - n * 0.693359375 + n * 2.12194440e-4
        var p = SIMD8<Float>(repeating: 1.9875691500e-4)
        p = p * r + 1.3981999507e-3
        p = p * r + 8.3334519073e-3
        p = p * r + 4.1665795894e-2
        p = p * r + 1.6666665459e-1
        p = p * r + 5.0000001201e-1
        let y = p * r * r + r + 1
        let bits = unsafeBitCast(t, to: SIMD8<Int32>.self) &- 0x4B40_0000
        let half = bits &>> 1
        let s1 = unsafeBitCast((half &+ 127) &<< 23, to: SIMD8<Float>.self)
        let s2 = unsafeBitCast((bits &- half &+ 127) &<< 23, to: SIMD8<Float>.self)
        var e = y * s1 * s2
        e.replace(with: 0, where: x .< -87.3)
        e.replace(with: .infinity, where: x .> 88.7)
        e.replace(with: .nan, where: x .!= x)  // the clamp would turn NaN into a number; keep it NaN
        return e
    }

    /// The C library's expf (for reference checks).
    @inline(__always) static func libraryExp(_ x: Float) -> Float { expf(x) }
    @inline(__always) static func log(_ x: Float) -> Float { logf(x) }
    @inline(__always) static func tanh(_ x: Float) -> Float { tanhf(x) }
    @inline(__always) static func erf(_ x: Float) -> Float { erff(x) }
    @inline(__always) static func pow(_ x: Float, _ y: Float) -> Float { powf(x, y) }
    @inline(__always) static func cos(_ x: Float) -> Float { cosf(x) }
    @inline(__always) static func sin(_ x: Float) -> Float { sinf(x) }
}
