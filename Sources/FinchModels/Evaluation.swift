import Foundation
import FinchNN
import FinchTensor

/// The scoring convention of `finch eval`: consecutive, non-overlapping windows of `sequenceLength`
/// tokens; in each, tokens 1… are predicted from the tokens before them; the loss is the mean
/// cross-entropy over every predicted position (transformers' `labels=input_ids`).
public enum Evaluation {
    public struct Result: Sendable, Codable {
        public let loss: Double
        public let perplexity: Double
        public let windows: Int
        public let sequenceLength: Int
        public let predictedTokens: Int
        public let seconds: Double
        /// Tokens run through the forward pass per second.
        public let tokensPerSecond: Double
    }

    /// Window starts: every full window, or the whole text as one window when it is shorter than one.
    public static func windows(tokenCount: Int, sequenceLength: Int, maxWindows: Int?) -> [Range<Int>] {
        var ranges = stride(from: 0, through: tokenCount - sequenceLength, by: sequenceLength).map { $0..<($0 + sequenceLength) }
        if ranges.isEmpty && tokenCount >= 2 { ranges = [0..<tokenCount] }
        if let maxWindows { ranges = Array(ranges.prefix(maxWindows)) }
        return ranges
    }

    /// Each window's summed next-token loss and its predicted tokens (the windows `windowedLoss` scores), without
    /// gradients: the examples a paired comparison of two models resamples.
    public static func windowLosses(model: any CausalLanguageModel, tokens: [Int], sequenceLength: Int, maxWindows: Int? = nil,
                                    prefix: AttentionPrefix? = nil) throws -> (sums: [Double], tokens: [Int]) {
        let ranges = windows(tokenCount: tokens.count, sequenceLength: max(sequenceLength, 2), maxWindows: maxWindows)
        guard !ranges.isEmpty else {
            throw TensorError.invalidArgument(op: "eval", message: "the text has \(tokens.count) tokens; at least 2 are needed")
        }
        var sums: [Double] = [], counts: [Int] = []
        for range in ranges {
            let ids = tokens[range].map(Int32.init)
            let targets = Losses.nextTokenTargets(ids, batch: 1, length: ids.count)
            sums.append(try model.positionLosses(ids, batch: 1, length: ids.count, targets: targets, prefix: prefix).reduce(0, +))
            counts.append(ids.count - 1)
        }
        return (sums, counts)
    }

    public static func windowedLoss(
        model: any CausalLanguageModel, tokens: [Int], sequenceLength: Int, maxWindows: Int? = nil,
        batchSize: Int = 8, prefix: AttentionPrefix? = nil
    ) throws -> Result {
        guard sequenceLength >= 2 else {
            throw TensorError.invalidArgument(op: "eval",
                                              message: "--seq-len must be at least 2, got \(sequenceLength)")
        }
        let ranges = windows(tokenCount: tokens.count, sequenceLength: sequenceLength, maxWindows: maxWindows)
        guard !ranges.isEmpty else {
            throw TensorError.invalidArgument(op: "eval",
                                              message: "the text has \(tokens.count) tokens; at least 2 are needed")
        }
        let start = Date()
        var total = 0.0
        var predicted = 0
        try GradientMode.withoutGradients {
            var i = 0
            while i < ranges.count {
                // Windows of one length go through together.
                let length = ranges[i].count
                var group: [Range<Int>] = []
                while i < ranges.count, group.count < batchSize, ranges[i].count == length {
                    group.append(ranges[i])
                    i += 1
                }
                let ids = group.flatMap { tokens[$0].map(Int32.init) }
                let targets = Losses.nextTokenTargets(ids, batch: group.count, length: length)
                let loss = try model.loss(ids, batch: group.count, length: length, targets: targets, prefix: prefix).item()
                let count = group.count * (length - 1)
                total += Double(loss) * Double(count)
                predicted += count
            }
        }
        let seconds = Date().timeIntervalSince(start)
        let mean = total / Double(predicted)
        let forwardTokens = ranges.reduce(0) { $0 + $1.count }
        // A text shorter than one window is scored as one window of its own length; report that length.
        return Result(loss: mean, perplexity: Foundation.exp(mean), windows: ranges.count,
                      sequenceLength: ranges.map(\.count).max() ?? sequenceLength,
                      predictedTokens: predicted, seconds: seconds, tokensPerSecond: Double(forwardTokens) / max(seconds, 1e-9))
    }
}
