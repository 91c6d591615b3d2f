import Foundation
import FinchTensor

/// The statistics `finch compare` and `finch eval` report: intervals for one model's exact match, and paired tests
/// of the difference between two models scored on the same examples.
public enum PairedStatistics {
    /// The normal quantile of a two-sided 95 % interval.
    public static let z95 = 1.959963984540054

    /// Wilson's score interval for `successes` of `n` (as statsmodels' `proportion_confint(method="wilson")`).
    public static func wilson(successes: Int, of n: Int, z: Double = z95) -> (low: Double, high: Double) {
        guard n > 0 else { return (0, 1) }
        let p = Double(successes) / Double(n), nn = Double(n), z2 = z * z
        let center = (p + z2 / (2 * nn)) / (1 + z2 / nn)
        let half = z / (1 + z2 / nn) * (p * (1 - p) / nn + z2 / (4 * nn * nn)).squareRoot()
        // At none or all the interval ends at 0 or 1 exactly (rounding would leave it a hair inside).
        return (successes == 0 ? 0 : max(0, center - half), successes == n ? 1 : min(1, center + half))
    }

    /// McNemar's exact test on paired right/wrong outcomes: `onlyA` examples only A gets right, `onlyB` only B.
    /// The two-sided p-value of the binomial test of min(onlyA, onlyB) in onlyA + onlyB trials at ½ (as statsmodels'
    /// `mcnemar(table, exact=True)`), and that statistic.
    public static func mcnemarExact(onlyA: Int, onlyB: Int) -> (statistic: Int, p: Double) {
        let n = onlyA + onlyB, k = min(onlyA, onlyB)
        guard n > 0 else { return (0, 1) }
        // P(X ≤ k) for X ~ Binomial(n, ½), summed in logs so large n does not overflow.
        var logTerms: [Double] = []
        for i in 0...k { logTerms.append(logChoose(n, i) - Double(n) * log(2)) }
        let top = logTerms.max()!
        let cdf = exp(top) * logTerms.reduce(0) { $0 + exp($1 - top) }
        return (k, min(1, 2 * cdf))
    }

    static func logChoose(_ n: Int, _ k: Int) -> Double {
        lgamma(Double(n) + 1) - lgamma(Double(k) + 1) - lgamma(Double(n - k) + 1)
    }

    /// The difference of two paired proportions, B's minus A's, with its Wald interval:
    /// d = (onlyB − onlyA) / n, variance ((onlyA + onlyB) − (onlyB − onlyA)² / n) / n².
    public static func pairedProportionDifference(onlyA: Int, onlyB: Int, n: Int, z: Double = z95)
        -> (difference: Double, low: Double, high: Double) {
        guard n > 0 else { return (0, 0, 0) }
        let nn = Double(n), d = Double(onlyB - onlyA) / nn
        let variance = (Double(onlyA + onlyB) - Double(onlyB - onlyA) * Double(onlyB - onlyA) / nn) / (nn * nn)
        let half = z * max(variance, 0).squareRoot()
        return (d, d - half, d + half)
    }

    /// The paired bootstrap of the difference of two per-token mean losses, B's minus A's: examples are drawn with
    /// replacement `resamples` times (seeded), each draw's statistic is Σ lossB / Σ tokens − Σ lossA / Σ tokens over
    /// the drawn examples, and the interval is the draws' 2.5th and 97.5th percentiles.
    public static func pairedBootstrap(lossSumsA a: [Double], lossSumsB b: [Double], tokens: [Int], resamples: Int = 10_000,
                                       seed: UInt64 = 0) -> (difference: Double, low: Double, high: Double) {
        let n = tokens.count
        precondition(a.count == n && b.count == n)
        guard n > 0 else { return (0, 0, 0) }
        func statistic(_ indices: [Int]) -> Double {
            var sa = 0.0, sb = 0.0, count = 0
            for i in indices { sa += a[i]; sb += b[i]; count += tokens[i] }
            return count == 0 ? 0 : (sb - sa) / Double(count)
        }
        let observed = statistic(Array(0..<n))
        var generator = RandomGenerator(seed: seed)
        var draws: [Double] = []
        draws.reserveCapacity(resamples)
        var indices = [Int](repeating: 0, count: n)
        for _ in 0..<resamples {
            for i in 0..<n { indices[i] = Int(generator.next() % UInt64(n)) }
            draws.append(statistic(indices))
        }
        draws.sort()
        return (observed, percentile(draws, 2.5), percentile(draws, 97.5))
    }

    /// The q-th percentile of sorted values, linearly interpolated (NumPy's default).
    static func percentile(_ sorted: [Double], _ q: Double) -> Double {
        guard sorted.count > 1 else { return sorted.first ?? 0 }
        let position = q / 100 * Double(sorted.count - 1)
        let below = Int(position.rounded(.down)), above = min(below + 1, sorted.count - 1)
        return sorted[below] + (sorted[above] - sorted[below]) * (position - Double(below))
    }
}
