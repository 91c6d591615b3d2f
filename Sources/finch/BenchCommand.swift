import ArgumentParser
import Foundation
import FinchTensor

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure cblas_sgemm against the engine's Linear forward+backward, and kernel bandwidth.")

    @Option(help: "Seconds to spend on each measurement (at least five iterations each).")
    var seconds: Double = 0.5

    @Option(help: "Rows of the Linear input (comma-separated).")
    var rows: String = "256,1024,4096"

    @Option(help: "Columns: the Linear's input and output width (comma-separated).")
    var columns: String = "288,768,1024"


    @Flag(help: "Print one JSON object instead of tables.")
    var json = false

    func run() throws {
        let rowList = try Self.parseList(rows, "--rows"), columnList = try Self.parseList(columns, "--columns")
        var linear: [KernelBenchmark.LinearResult] = []
        for r in rowList {
            for c in columnList {
                linear.append(try KernelBenchmark.linear(rows: r, columns: c, minimumSeconds: seconds))
            }
        }
        let bandwidth = [
            try KernelBenchmark.softmax(rows: 4096, columns: 256, minimumSeconds: seconds),
            try KernelBenchmark.softmax(rows: 2048, columns: 2048, minimumSeconds: seconds),
            try KernelBenchmark.rmsNorm(rows: 2048, columns: 288, minimumSeconds: seconds),
            try KernelBenchmark.rmsNorm(rows: 4096, columns: 1024, minimumSeconds: seconds),
        ]
        if json {
            struct Report: Codable {
                let cores: Int
                let linear: [KernelBenchmark.LinearResult]
                let bandwidth: [KernelBenchmark.BandwidthResult]
            }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            let data = try encoder.encode(Report(cores: Parallel.coreCount, linear: linear, bandwidth: bandwidth))
            print(String(decoding: data, as: UTF8.self))
            return
        }
        print("cores: \(Parallel.coreCount) (raw sgemm: OpenBLAS threads; engine: Finch splits each product across the cores)")
        print("")
        print("Linear forward+backward (x [rows, cols] · Wᵀ, W [cols, cols]; 3 GEMMs, 6·rows·cols² FLOPs)")
        print(Self.row(["rows", "cols", "sgemm GFLOP/s", "engine GFLOP/s", "engine/sgemm"]))
        for l in linear {
            print(Self.row(["\(l.rows)", "\(l.columns)", Self.fixed(l.sgemmGFLOPS, 1), Self.fixed(l.engineGFLOPS, 1),
                            Self.fixed(100 * l.ratio, 1) + " %"]))
        }
        print("")
        print("Fused kernels, forward+backward")
        print(Self.row(["kernel", "rows", "cols", "GB/s", "ms/step"]))
        for b in bandwidth {
            print(Self.row([b.kernel, "\(b.rows)", "\(b.columns)", Self.fixed(b.gigabytesPerSecond, 1),
                            Self.fixed(b.seconds * 1000, 3)]))
        }
    }

    static func parseList(_ text: String, _ flag: String) throws -> [Int] {
        let values = text.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !values.isEmpty, values.allSatisfy({ ($0 ?? 0) > 0 }) else {
            throw ValidationError("\(flag) expects positive integers separated by commas, got '\(text)'")
        }
        return values.map { $0! }
    }

    static func row(_ cells: [String]) -> String {
        cells.map { String(repeating: " ", count: max(1, 16 - $0.count)) + $0 }.joined()
    }

    static func fixed(_ v: Double, _ digits: Int) -> String { String(format: "%.\(digits)f", v) }
}
