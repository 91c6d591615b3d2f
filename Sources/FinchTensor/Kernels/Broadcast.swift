/// NumPy broadcasting: shapes are aligned at their last axis; a dimension of 1 (or a missing leading
/// one) stretches to match the other.
enum Broadcast {
    /// The broadcast result shape, or nil when the shapes are incompatible.
    static func shape(_ a: [Int], _ b: [Int]) -> [Int]? {
        let rank = max(a.count, b.count)
        var out = [Int](repeating: 1, count: rank)
        for i in 0..<rank {
            let da = i < rank - a.count ? 1 : a[i - (rank - a.count)]
            let db = i < rank - b.count ? 1 : b[i - (rank - b.count)]
            if da == db || db == 1 {
                out[i] = da
            } else if da == 1 {
                out[i] = db
            } else {
                return nil
            }
        }
        return out
    }

    /// Row-major strides of `shape` as seen from `outShape`: 0 along broadcast axes.
    static func strides(of shape: [Int], in outShape: [Int]) -> [Int] {
        let lead = outShape.count - shape.count
        var strides = [Int](repeating: 0, count: outShape.count)
        var step = 1
        for i in stride(from: shape.count - 1, through: 0, by: -1) {
            strides[lead + i] = shape[i] == 1 ? 0 : step
            step *= shape[i]
        }
        return strides
    }

    /// Axes of `from` to sum (keeping dims) so the result has `to`'s element layout, or nil when
    /// `to` does not broadcast to `from`.
    static func reducedAxes(from: [Int], to: [Int]) -> [Int]? {
        guard to.count <= from.count, shape(from, to) == from else { return nil }
        let lead = from.count - to.count
        var axes = Array(0..<lead)
        for i in 0..<to.count where to[i] == 1 && from[lead + i] != 1 {
            axes.append(lead + i)
        }
        return axes
    }

    /// Row-major strides of a contiguous shape.
    static func contiguousStrides(_ shape: [Int]) -> [Int] {
        var strides = [Int](repeating: 1, count: shape.count)
        var s = 1
        for i in stride(from: shape.count - 1, through: 0, by: -1) {
            strides[i] = s
            s *= shape[i]
        }
        return strides
    }
}
