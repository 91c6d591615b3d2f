/// Kernels over one row of n contiguous floats, eight lanes at a time with a scalar tail: the building blocks of
/// softmax, the fused head's loss, attention's probabilities and the normalisations.
extension Tensor {
    @inline(__always)
    static func softmaxRow(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
        let m = rowMax(x, n)
        if m == -.infinity {  // a fully masked row attends nowhere
            y.update(repeating: 0, count: n)
            return
        }
        scale(y, n, by: 1 / expShiftedSum(x, y, n, m))
    }

    /// y[0..<n] *= f, eight lanes at a time.
    @inline(__always)
    static func scale(_ y: UnsafeMutablePointer<Float>, _ n: Int, by f: Float) {
        var j = 0
        while j + 8 <= n {
            UnsafeMutableRawPointer(y + j).storeBytes(of: UnsafeRawPointer(y + j).loadUnaligned(as: SIMD8<Float>.self) * f, as: SIMD8<Float>.self)
            j += 8
        }
        while j < n { y[j] *= f; j += 1 }
    }

    /// Σ a ⊙ b over n values, eight partial sums at a time.
    @inline(__always)
    static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
        var s8 = SIMD8<Float>()
        var j = 0
        while j + 8 <= n {
            s8 += UnsafeRawPointer(a + j).loadUnaligned(as: SIMD8<Float>.self) * UnsafeRawPointer(b + j).loadUnaligned(as: SIMD8<Float>.self)
            j += 8
        }
        var s = s8.sum()
        while j < n { s += a[j] * b[j]; j += 1 }
        return s
    }

    /// The largest of n values, eight lanes at a time.
    @inline(__always)
    static func rowMax(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
        var m8 = SIMD8<Float>(repeating: -.infinity)
        var j = 0
        while j + 8 <= n {
            m8 = Math.max8(m8, UnsafeRawPointer(x + j).loadUnaligned(as: SIMD8<Float>.self))
            j += 8
        }
        // Halves, not the standard library's lane-by-lane `max()` (a chain of scalar compares that cost as much as a
        // 64-value row's loop); a maximum is the same whatever the order.
        let m4 = Math.max4(m8.lowHalf, m8.highHalf), m2 = Math.max2(m4.lowHalf, m4.highHalf)
        var m = Swift.max(m2[0], m2[1])
        while j < n { m = Swift.max(m, x[j]); j += 1 }
        return m
    }

    /// Writes e^(x − m) to y (y may be x) and returns their sum.
    @inline(__always)
    static func expShiftedSum(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int,
                              _ m: Float) -> Float {
        var s8 = SIMD8<Float>()
        var j = 0
        while j + 8 <= n {
            let e = Math.exp8(UnsafeRawPointer(x + j).loadUnaligned(as: SIMD8<Float>.self) - m)
            UnsafeMutableRawPointer(y + j).storeBytes(of: e, as: SIMD8<Float>.self)
            s8 += e
            j += 8
        }
        var s = s8.sum()
        while j < n {
            let e = Math.exp(x[j] - m)
            y[j] = e
            s += e
            j += 1
        }
        return s
    }

    @inline(__always)
    static func logSumExp(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
        let m = rowMax(x, n)
        if m == -.infinity { return m }
        var s8 = SIMD8<Float>()
        var j = 0
        while j + 8 <= n {
            s8 += Math.exp8(UnsafeRawPointer(x + j).loadUnaligned(as: SIMD8<Float>.self) - m)
            j += 8
        }
        var s = s8.sum()
        while j < n { s += Math.exp(x[j] - m); j += 1 }
        return m + Math.log(s)
    }
}
