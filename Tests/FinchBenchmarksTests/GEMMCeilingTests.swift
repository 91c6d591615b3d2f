import Testing
import FinchFormats
@testable import FinchBenchmarks

@Suite("The GEMM ceiling's products against the benchmark's FLOP count")
struct GEMMCeilingTests {
    /// The ceiling's list of products must be the FLOPs `finch bench` counts per token, less exactly what the
    /// ceiling leaves out on purpose: attention's masked upper half, and the first layer's q/k/v input gradients
    /// when the embedding is frozen.
    @Test(arguments: WorkloadBenchmark.workloads.map(\.name), WorkloadBenchmark.Mode.allCases)
    func productsAddUpToTheCountedFLOPs(_ name: String, _ mode: WorkloadBenchmark.Mode) {
        let c = WorkloadBenchmark.workloads.first { $0.name == name }!.config
        let tokens = Double(8 * WorkloadBenchmark.sequence)
        let listed = GEMMCeiling.products(c, mode: mode).reduce(0.0) { sum, entry in
            sum + 2 * Double(entry.product.m * entry.product.n * entry.product.k) * entry.count
        }
        let t = Double(WorkloadBenchmark.sequence), p = mode == .prefix ? Double(WorkloadBenchmark.virtualTokens) : 0
        let d = Double(c.hiddenSize), kv = Double(c.keyValueHeadCount * c.headDimension)
        let attention = 3 * Double(c.layerCount) * 4 * (t + p) * d * tokens
        let causal = (p + (t + 1) / 2) / (t + p)
        let skipped = mode == .full ? 0 : 2 * tokens * d * (d + 2 * kv)
        let expected = WorkloadBenchmark.flopsPerToken(c, mode: mode) * tokens - attention * (1 - causal) - skipped
        #expect(abs(listed - expected) <= 1e-9 * expected, "\(name) \(mode): \(listed) listed, \(expected) expected")
    }
}
