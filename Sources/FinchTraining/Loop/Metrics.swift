import Foundation
import FinchFormats

/// One logged training step.
public struct StepRecord: Equatable, Sendable {
    public let step: Int
    public let totalSteps: Int
    public let loss: Double
    public let learningRate: Double
    public let gradientNorm: Double
    public let tokensPerSecond: Double
    public let secondsRemaining: Double
    /// A private run's ε so far (at its δ), and the number of examples its Poisson-sampled batch drew.
    public var epsilon: Double? = nil
    public var examples: Int? = nil
    /// The share of those examples whose gradient was longer than privacy.max_grad_norm (and so clipped).
    public var clippedShare: Double? = nil
}

/// `metrics.jsonl` (one JSON object per line) and `loss.svg` (training and validation curves).
final class MetricsLog {
    let path: String
    let svgPath: String
    private(set) var training: [(step: Int, loss: Double)] = []
    private(set) var validation: [(step: Int, loss: Double)] = []
    private var file: AppendingFile?

    let scale: Recipe.LossScale

    init(runDirectory: String, scale: Recipe.LossScale = .linear) {
        path = (runDirectory as NSString).appendingPathComponent("metrics.jsonl")
        svgPath = (runDirectory as NSString).appendingPathComponent("loss.svg")
        self.scale = scale
    }

    /// Opens the log, keeping only records up to `step` (a resumed run rewrites what came after).
    func open(keepingThrough step: Int) throws {
        var kept: [String] = []
        if let text = try? String(contentsOfFile: path, encoding: .utf8) {
            for line in text.split(separator: "\n") {
                guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                      let s = object["step"] as? Int, s <= step else { continue }
                kept.append(String(line))
                if let loss = object["loss"] as? Double { training.append((s, loss)) }
                if let eval = object["eval_loss"] as? Double { validation.append((s, eval)) }
            }
        }
        try AtomicFile.write(Data(kept.map { $0 + "\n" }.joined().utf8), to: path)
        file = try AppendingFile(path)
    }

    func write(_ object: [String: Any]) throws {
        let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        try file?.append(data + Data("\n".utf8))
    }

    func record(_ r: StepRecord) throws {
        var object: [String: Any] = ["step": r.step, "lr": r.learningRate, "grad_norm": r.gradientNorm,
                                     "tokens_per_second": (r.tokensPerSecond * 10).rounded() / 10]
        // A private step whose sampled batch was empty has no loss: the line says so by leaving it out.
        if r.loss.isFinite {
            training.append((r.step, r.loss))
            object["loss"] = r.loss
        }
        if let epsilon = r.epsilon { object["epsilon"] = epsilon.isFinite ? epsilon : "inf" }
        if let examples = r.examples { object["examples"] = examples }
        if let clipped = r.clippedShare, clipped.isFinite { object["clipped"] = clipped }
        try write(object)
    }

    func recordValidation(step: Int, loss: Double) throws {
        validation.append((step, loss))
        try write(["step": step, "eval_loss": loss, "eval_perplexity": Foundation.exp(loss)])
        try drawSVG()
    }

    func close() { file?.close() }

    /// Both curves on shared axes: step across, loss up (on a log scale when asked and every loss is positive),
    /// with ticks at round values.
    func drawSVG() throws {
        let (w, h, left, right, top, bottom) = (720.0, 400.0, 64.0, 24.0, 28.0, 44.0)
        let all = training + validation
        guard !all.isEmpty else { return }
        let maxStep = Double(max(1, all.map(\.step).max()!))
        let logarithmic = scale == .log && all.allSatisfy { $0.loss > 0 }
        func f(_ l: Double) -> Double { logarithmic ? Foundation.log10(l) : l }
        var lo = f(all.map(\.loss).min()!), hi = f(all.map(\.loss).max()!)
        if hi - lo < 1e-9 { lo -= 0.5; hi += 0.5 }
        let pad = (hi - lo) * 0.05
        lo -= pad; hi += pad
        func x(_ s: Double) -> Double { left + (w - left - right) * s / maxStep }
        func y(_ l: Double) -> Double { top + (h - top - bottom) * (hi - f(l)) / (hi - lo) }
        func points(_ series: [(step: Int, loss: Double)]) -> String {
            series.map { String(format: "%.1f,%.1f", x(Double($0.step)), y($0.loss)) }.joined(separator: " ")
        }
        var svg = """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(w))" height="\(Int(h))" viewBox="0 0 \(Int(w)) \(Int(h))" font-family="sans-serif" font-size="12">
            <rect width="100%" height="100%" fill="white"/>
            <line x1="\(left)" y1="\(h - bottom)" x2="\(w - right)" y2="\(h - bottom)" stroke="#333"/>
            <line x1="\(left)" y1="\(top)" x2="\(left)" y2="\(h - bottom)" stroke="#333"/>

            """
        let lossTicks = logarithmic ? PlotTicks.logarithmic(from: lo, to: hi) : PlotTicks.linear(from: lo, to: hi)
        for (value, label) in lossTicks {
            svg += String(format: "<text x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\">", left - 6, y(value) + 4) + label + "</text>\n"
            svg += String(format: "<line x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" stroke=\"#eee\"/>\n", left, y(value),
                          w - right, y(value))
        }
        for (step, label) in PlotTicks.linear(from: 0, to: maxStep, integers: true) {
            svg += String(format: "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">", x(step), h - bottom + 16) + label + "</text>\n"
        }
        svg += "<text x=\"\((left + w - right) / 2)\" y=\"\(h - 8)\" text-anchor=\"middle\">step</text>\n"
        svg += "<text x=\"14\" y=\"\((top + h - bottom) / 2)\" transform=\"rotate(-90 14 \((top + h - bottom) / 2))\" text-anchor=\"middle\">loss\(logarithmic ? " (log scale)" : "")</text>\n"
        if training.count > 1 {
            svg += "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"\(points(training))\"/>\n"
        }
        if !validation.isEmpty {
            svg += "<polyline fill=\"none\" stroke=\"#d62728\" stroke-width=\"2\" points=\"\(points(validation))\"/>\n"
            for v in validation {
                svg += String(format: "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"#d62728\"/>\n", x(Double(v.step)),
                              y(v.loss))
            }
        }
        svg += "<text x=\"\(w - right - 180)\" y=\"18\" fill=\"#1f77b4\">— training loss</text>\n"
        svg += "<text x=\"\(w - right - 80)\" y=\"18\" fill=\"#d62728\">● validation</text>\n"
        svg += "</svg>\n"
        try AtomicFile.write(Data(svg.utf8), to: svgPath)
    }
}

/// Axis ticks at round values: multiples of 1, 2 or 5 × 10ᵏ (about five of them), or on a log scale the powers of
/// ten and their 2× and 5× in between.
enum PlotTicks {
    /// Ticks inside [lo, hi], with labels printed to the tick spacing's precision.
    static func linear(from lo: Double, to hi: Double, integers: Bool = false) -> [(value: Double, label: String)] {
        guard hi > lo else { return [(lo, label(lo, decimals: 0))] }
        let raw = (hi - lo) / 5
        let magnitude = Foundation.pow(10, (Foundation.log10(raw)).rounded(.down))
        var step = ([1.0, 2, 5, 10].first { $0 * magnitude >= raw } ?? 10) * magnitude
        if integers { step = max(1, step.rounded()) }
        let decimals = max(0, -Int(Foundation.log10(step).rounded(.down)))
        var ticks: [(Double, String)] = []
        var v = (lo / step).rounded(.up) * step
        while v <= hi + step * 1e-9 {
            ticks.append((v, label(v, decimals: decimals)))
            v += step
        }
        return ticks
    }

    /// Ticks for values already in log10: 1, 2 and 5 × 10ᵏ inside [lo, hi] (the powers of ten alone when they
    /// are many), labelled with the loss itself.
    static func logarithmic(from lo: Double, to hi: Double) -> [(value: Double, label: String)] {
        var ticks: [(Double, String)] = []
        let manyDecades = hi - lo > 3
        for k in Int(lo.rounded(.down))...Int(hi.rounded(.up)) {
            for m in manyDecades ? [1.0] : [1.0, 2, 5] {
                let value = m * Foundation.pow(10, Double(k))
                let l = Foundation.log10(value)
                if l >= lo && l <= hi { ticks.append((value, label(value, decimals: max(0, -k)))) }
            }
        }
        return ticks
    }

    static func label(_ v: Double, decimals: Int) -> String { String(format: "%.\(decimals)f", v == 0 ? 0 : v) }
}
