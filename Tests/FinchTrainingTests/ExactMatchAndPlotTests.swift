import Foundation
import Testing
@testable import FinchTraining

/// Exact match stops generating once the text can no longer equal the completion, with the same verdict.
@Suite("exact match")
struct ExactMatchTests {
    @Test func textThatCanStillMatchIsKeptGoing() {
        let expected = " {\"intent\":\"call\",\"name\":\"Ana\"}"
        #expect(CompletionEvaluation.stillMatching("", expected))
        #expect(CompletionEvaluation.stillMatching(" {\"intent\":\"ca", expected))
        #expect(CompletionEvaluation.stillMatching(" {\"intent\":\"call\",\"name\":\"Ana\"} \n", expected))
        #expect(CompletionEvaluation.stillMatching(" {\"int\u{FFFD}", expected))
        #expect(!CompletionEvaluation.stillMatching(" {\"intent\":\"set", expected))
        #expect(!CompletionEvaluation.stillMatching(" {\"intent\":\"call\",\"name\":\"Ana\"}}", expected))
    }
}

/// loss.svg's axes: ticks at round values, and powers of ten on a log scale.
@Suite("plot ticks")
struct PlotTicksTests {
    @Test func linearTicksAreRoundMultiples() {
        #expect(PlotTicks.linear(from: 0.31, to: 7.64).map(\.label) == ["2", "4", "6"])
        #expect(PlotTicks.linear(from: 2.712, to: 2.803).map(\.label) == ["2.72", "2.74", "2.76", "2.78", "2.80"])
        #expect(PlotTicks.linear(from: 0, to: 3, integers: true).map(\.label) == ["0", "1", "2", "3"])
        #expect(PlotTicks.linear(from: 0, to: 1200, integers: true).map(\.label) == ["0", "500", "1000"])
    }

    @Test func logTicksAreOneTwoFiveTimesPowersOfTen() {
        // log10 of 0.3 … 8: the losses 0.5, 1, 2, 5.
        #expect(PlotTicks.logarithmic(from: Foundation.log10(0.3), to: Foundation.log10(8)).map(\.label) == ["0.5", "1", "2", "5"])
        #expect(PlotTicks.logarithmic(from: -3.2, to: 1.1).map(\.label) == ["0.001", "0.01", "0.1", "1", "10"])
    }
}
