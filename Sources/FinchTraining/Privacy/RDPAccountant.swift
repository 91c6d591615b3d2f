import Foundation

/// Rényi differential privacy accounting for DP-SGD (the sampled Gaussian mechanism: each example joins a batch with
/// probability q, the clipped sum gets Gaussian noise of σ times the clipping norm), as Opacus' RDP accountant does:
/// the mechanism's RDP at each order α (Mironov, Talwar and Zhang, 2019, §3.3), summed over the steps, and converted
/// to (ε, δ) by Balle et al. (2020, Theorem 21) at the order that gives the smallest ε. Its state is the list of
/// (q, σ, steps) it has seen, so a resumed run keeps counting from where it stopped.
public struct RDPAccountant: Codable, Equatable, Sendable {
    public struct Segment: Codable, Equatable, Sendable {
        public var sampleRate: Double
        public var noiseMultiplier: Double
        public var steps: Int
    }

    /// Opacus' default orders: 1.1 to 10.9 in steps of 0.1, then 12 to 63.
    public static let defaultOrders: [Double] = (1..<100).map { 1 + Double($0) / 10 } + (12..<64).map(Double.init)

    public private(set) var history: [Segment] = []

    public init() {}

    /// Counts one step of the mechanism.
    public mutating func step(sampleRate: Double, noiseMultiplier: Double) {
        if let last = history.last, last.sampleRate == sampleRate, last.noiseMultiplier == noiseMultiplier {
            history[history.count - 1].steps += 1
        } else {
            history.append(Segment(sampleRate: sampleRate, noiseMultiplier: noiseMultiplier, steps: 1))
        }
    }

    /// The smallest ε over `orders` for which the steps so far are (ε, δ)-DP, and that order; ε is infinite when no
    /// order bounds it (no noise).
    public func epsilon(delta: Double, orders: [Double] = defaultOrders) -> (epsilon: Double, order: Double) {
        var best = (epsilon: Double.infinity, order: Double.nan)
        for alpha in orders {
            let rdp = history.reduce(0.0) { $0 + Double($1.steps) * Self.rdp(q: $1.sampleRate, sigma: $1.noiseMultiplier, alpha: alpha) }
            let epsilon = rdp - (log(delta) + log(alpha)) / (alpha - 1) + log((alpha - 1) / alpha)
            if epsilon.isNaN { continue }
            if epsilon < best.epsilon { best = (epsilon, alpha) }
        }
        return best
    }

    /// The noise multiplier that keeps `steps` steps at sampling rate q within (targetEpsilon, δ): the same search
    /// as Opacus' `get_noise_multiplier` — σ doubled from 20 until ε is within the target, then bisected until ε is
    /// within `tolerance` below it — so the two choose the same σ. nil when σ passes 10⁶ (Opacus' limit) without
    /// meeting the target.
    public static func noiseMultiplier(targetEpsilon: Double, delta: Double, sampleRate q: Double, steps: Int,
                                       tolerance: Double = 0.01) -> Double? {
        func epsilon(_ sigma: Double) -> Double {
            var accountant = RDPAccountant()
            accountant.history = [Segment(sampleRate: q, noiseMultiplier: sigma, steps: steps)]
            return accountant.epsilon(delta: delta).epsilon
        }
        var low = 0.0, high = 10.0, highEpsilon = Double.infinity
        while highEpsilon > targetEpsilon {
            high *= 2
            highEpsilon = epsilon(high)
            if high > 1e6 { return nil }
        }
        while targetEpsilon - highEpsilon > tolerance {
            let sigma = (low + high) / 2, e = epsilon(sigma)
            if e < targetEpsilon { (high, highEpsilon) = (sigma, e) } else { low = sigma }
        }
        return high
    }

    /// The RDP of one step of the sampled Gaussian mechanism at order α.
    public static func rdp(q: Double, sigma: Double, alpha: Double) -> Double {
        if q == 0 { return 0 }
        if sigma == 0 || alpha.isInfinite { return .infinity }
        if q == 1 { return alpha / (2 * sigma * sigma) }
        return logA(q: q, sigma: sigma, alpha: alpha) / (alpha - 1)
    }

    /// log A_α: for an integer α the finite binomial sum; otherwise the two series over i = 0, 1, … of the paper's
    /// §3.3, each term weighted by a Gaussian tail, summed until both terms fall below e⁻³⁰.
    static func logA(q: Double, sigma: Double, alpha: Double) -> Double {
        let variance2 = 2 * sigma * sigma
        if alpha == alpha.rounded(), alpha < 1e6 {
            let n = Int(alpha)
            var total = -Double.infinity
            for i in 0...n {
                let di = Double(i)
                let term = logBinomial(Double(n), di) + di * log(q) + (alpha - di) * log(1 - q) + (di * di - di) / variance2
                total = logAdd(total, term)
            }
            return total
        }
        var a0 = -Double.infinity, a1 = -Double.infinity
        let z0 = sigma * sigma * log(1 / q - 1) + 0.5
        // The binomial coefficient C(α, i) for fractional α, kept as log |C| and its sign: C(α, i) = C(α, i−1)·(α − i + 1)/i.
        var logCoefficient = 0.0, positive = true
        var i = 0
        while true {
            if i > 0 {
                let factor = (alpha - Double(i) + 1) / Double(i)
                logCoefficient += log(abs(factor))
                if factor < 0 { positive.toggle() }
            }
            let di = Double(i), j = alpha - di
            let t0 = logCoefficient + di * log(q) + j * log(1 - q)
            let t1 = logCoefficient + j * log(q) + di * log(1 - q)
            let e0 = log(0.5) + logErfc((di - z0) / (2.0.squareRoot() * sigma))
            let e1 = log(0.5) + logErfc((z0 - j) / (2.0.squareRoot() * sigma))
            let s0 = t0 + (di * di - di) / variance2 + e0
            let s1 = t1 + (j * j - j) / variance2 + e1
            if positive {
                a0 = logAdd(a0, s0)
                a1 = logAdd(a1, s1)
            } else {
                a0 = logSubtract(a0, s0)
                a1 = logSubtract(a1, s1)
            }
            i += 1
            if max(s0, s1) < -30 { break }
        }
        return logAdd(a0, a1)
    }

    static func logBinomial(_ n: Double, _ k: Double) -> Double {
        lgamma(n + 1) - lgamma(k + 1) - lgamma(n - k + 1)
    }

    static func logAdd(_ x: Double, _ y: Double) -> Double {
        let (low, high) = (min(x, y), max(x, y))
        if low == -.infinity { return high }
        return log1p(exp(low - high)) + high
    }

    /// log(eˣ − eʸ) for x ≥ y; x itself when eʸ is too small beside eˣ to matter.
    static func logSubtract(_ x: Double, _ y: Double) -> Double {
        if y == -.infinity { return x }
        if x <= y { return -.infinity }
        let difference = expm1(x - y)
        return difference.isFinite ? log(difference) + y : x
    }

    /// log erfc(x), accurate where erfc(x) underflows: there the asymptotic series
    /// erfc(x) ≈ e^(−x²) / (x√π) · (1 − 1/(2x²) + 3/(4x⁴) − 15/(8x⁶)).
    static func logErfc(_ x: Double) -> Double {
        if x < 25 { return log(erfc(x)) }
        let u = 1 / (x * x)
        return -x * x - log(x * Double.pi.squareRoot()) + log(1 - u / 2 + 3 * u * u / 4 - 15 * u * u * u / 8)
    }
}
