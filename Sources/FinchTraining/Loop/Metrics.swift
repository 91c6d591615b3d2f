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
}

/// `metrics.jsonl` (one JSON object per line) and `loss.svg` (training and validation curves).
final class MetricsLog {
    let path: String
    let svgPath: String
    private(set) var training: [(step: Int, loss: Double)] = []
    private(set) var validation: [(step: Int, loss: Double)] = []
    private var file: AppendingFile?

    init(runDirectory: String) {
        path = (runDirectory as NSString).appendingPathComponent("metrics.jsonl")
        svgPath = (runDirectory as NSString).appendingPathComponent("loss.svg")
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
        training.append((r.step, r.loss))
        try write(["step": r.step, "loss": r.loss, "lr": r.learningRate, "grad_norm": r.gradientNorm,
                   "tokens_per_second": (r.tokensPerSecond * 10).rounded() / 10])
    }

    func recordValidation(step: Int, loss: Double) throws {
        validation.append((step, loss))
        try write(["step": step, "eval_loss": loss, "eval_perplexity": Foundation.exp(loss)])
        try drawSVG()
    }

    func close() { file?.close() }

    /// Both curves on shared axes: step across, loss up.
    func drawSVG() throws {
        let (w, h, left, right, top, bottom) = (720.0, 400.0, 64.0, 24.0, 28.0, 44.0)
        let all = training + validation
        guard !all.isEmpty else { return }
        let maxStep = Double(max(1, all.map(\.step).max()!))
        var lo = all.map(\.loss).min()!, hi = all.map(\.loss).max()!
        if hi - lo < 1e-9 { lo -= 0.5; hi += 0.5 }
        let pad = (hi - lo) * 0.05
        lo -= pad; hi += pad
        func x(_ s: Int) -> Double { left + (w - left - right) * Double(s) / maxStep }
        func y(_ l: Double) -> Double { top + (h - top - bottom) * (hi - l) / (hi - lo) }
        func points(_ series: [(step: Int, loss: Double)]) -> String {
            series.map { String(format: "%.1f,%.1f", x($0.step), y($0.loss)) }.joined(separator: " ")
        }
        var svg = """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(w))" height="\(Int(h))" viewBox="0 0 \(Int(w)) \(Int(h))" font-family="sans-serif" font-size="12">
            <rect width="100%" height="100%" fill="white"/>
            <line x1="\(left)" y1="\(h - bottom)" x2="\(w - right)" y2="\(h - bottom)" stroke="#333"/>
            <line x1="\(left)" y1="\(top)" x2="\(left)" y2="\(h - bottom)" stroke="#333"/>

            """
        for i in 0...4 {
            let l = lo + (hi - lo) * Double(i) / 4
            svg += String(format: "<text x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\">%.3f</text>\n", left - 6, y(l) + 4,
                          l)
            svg += String(format: "<line x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" stroke=\"#eee\"/>\n", left,
                          y(l), w - right, y(l))
            let s = Int((maxStep * Double(i) / 4).rounded())
            svg += String(format: "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">%ld</text>\n", x(s),
                          h - bottom + 16, s)
        }
        svg += "<text x=\"\((left + w - right) / 2)\" y=\"\(h - 8)\" text-anchor=\"middle\">step</text>\n"
        svg += "<text x=\"14\" y=\"\((top + h - bottom) / 2)\" transform=\"rotate(-90 14 \((top + h - bottom) / 2))\" text-anchor=\"middle\">loss</text>\n"
        if training.count > 1 {
            svg += "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"\(points(training))\"/>\n"
        }
        if !validation.isEmpty {
            svg += "<polyline fill=\"none\" stroke=\"#d62728\" stroke-width=\"2\" points=\"\(points(validation))\"/>\n"
            for v in validation {
                svg += String(format: "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"#d62728\"/>\n", x(v.step),
                              y(v.loss))
            }
        }
        svg += "<text x=\"\(w - right - 180)\" y=\"18\" fill=\"#1f77b4\">— training loss</text>\n"
        svg += "<text x=\"\(w - right - 80)\" y=\"18\" fill=\"#d62728\">● validation</text>\n"
        svg += "</svg>\n"
        try AtomicFile.write(Data(svg.utf8), to: svgPath)
    }
}
