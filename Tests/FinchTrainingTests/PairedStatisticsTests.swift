import Foundation
import Testing
import TestSupport
@testable import FinchTraining

/// The statistics of `finch compare` and `finch eval` against scipy and statsmodels (Tests/Fixtures/compare).
@Suite("paired statistics")
struct PairedStatisticsTests {
    struct Case: Decodable {
        let correct_a: [Bool], correct_b: [Bool], tokens: [Int], loss_sums_a: [Double], loss_sums_b: [Double]
        let wilson_a: [Double], mcnemar_statistic: Double, mcnemar_p: Double
        let paired_difference: Double, paired_low: Double, paired_high: Double
        let bootstrap_difference: Double, bootstrap_low: Double, bootstrap_high: Double
    }
    struct File: Decodable { let cases: [Case] }

    static func cases() throws -> [Case] {
        try JSONDecoder().decode(File.self, from: Data(contentsOf: URL(fileURLWithPath: Fixtures.path("compare", "reference.json")))).cases
    }

    @Test func intervalsAndTestsMatchTheReferences() throws {
        for c in try Self.cases() {
            let n = c.tokens.count
            let wilson = PairedStatistics.wilson(successes: c.correct_a.filter { $0 }.count, of: n)
            #expect(abs(wilson.low - c.wilson_a[0]) < 1e-12 && abs(wilson.high - c.wilson_a[1]) < 1e-12, "\(wilson) vs \(c.wilson_a)")
            let onlyA = zip(c.correct_a, c.correct_b).filter { $0 && !$1 }.count
            let onlyB = zip(c.correct_a, c.correct_b).filter { !$0 && $1 }.count
            let test = PairedStatistics.mcnemarExact(onlyA: onlyA, onlyB: onlyB)
            #expect(Double(test.statistic) == c.mcnemar_statistic)
            #expect(abs(test.p - c.mcnemar_p) <= 1e-12 * max(1, c.mcnemar_p), "\(test.p) vs \(c.mcnemar_p)")
            let paired = PairedStatistics.pairedProportionDifference(onlyA: onlyA, onlyB: onlyB, n: n)
            #expect(abs(paired.difference - c.paired_difference) < 1e-12 && abs(paired.low - c.paired_low) < 1e-12
                    && abs(paired.high - c.paired_high) < 1e-12)
            // The bootstrap: the same statistic exactly; the interval within Monte Carlo error of scipy's (its draws
            // are scipy's, Finch's its own): 5 % of the interval's width at 10,000 resamples.
            let boot = PairedStatistics.pairedBootstrap(lossSumsA: c.loss_sums_a, lossSumsB: c.loss_sums_b, tokens: c.tokens, seed: 3)
            #expect(abs(boot.difference - c.bootstrap_difference) < 1e-12)
            let width = c.bootstrap_high - c.bootstrap_low
            #expect(abs(boot.low - c.bootstrap_low) < 0.05 * width && abs(boot.high - c.bootstrap_high) < 0.05 * width,
                    "\(boot) vs [\(c.bootstrap_low), \(c.bootstrap_high)]")
        }
    }

    @Test func theExactTestAtItsEdges() {
        #expect(PairedStatistics.mcnemarExact(onlyA: 0, onlyB: 0).p == 1)
        #expect(abs(PairedStatistics.mcnemarExact(onlyA: 0, onlyB: 10).p - 2.0 / 1024) < 1e-15)
        // Thousands of discordant pairs stay finite.
        let large = PairedStatistics.mcnemarExact(onlyA: 2400, onlyB: 2600)
        #expect(large.p > 0 && large.p < 0.01)
    }
}
