import Foundation
import FinchFormats
import FinchModels
import FinchTensor

/// How fast a training step could possibly be on this machine: the dense matrix products one step of a workload
/// must do, each timed alone with `cblas_sgemm` (the faster of OpenBLAS on all cores and Finch's own split),
/// summed, and everything else — embedding, normalisation, softmax, activations, the loss, the optimizer —
/// counted as free. No float32 engine on OpenBLAS gets past this; `finch bench --kernels` reports it beside
/// each workload, and with the peer, the largest speedup over the peer that it leaves possible.
public enum GEMMCeiling {
    /// One product shape: C[m, n] = op(A)[m, k] · op(B)[k, n], done `count` times a step (`count` may be a
    /// fraction: attention does only the causal half of its square products).
    public struct Product: Hashable, Sendable {
        public let transposeA: Bool
        public let transposeB: Bool
        public let m: Int
        public let n: Int
        public let k: Int
        /// Products of this shape that run side by side (attention's batch × heads), one per core at a time.
        public let independent: Bool
    }

    /// The products of one training step of `batch` sequences, with how many times each runs.
    public static func products(_ c: LlamaConfig, mode: WorkloadBenchmark.Mode,
                                batch: Int = 8) -> [(product: Product, count: Double)] {
        let tokens = batch * WorkloadBenchmark.sequence
        let d = c.hiddenSize, kv = c.keyValueHeadCount * c.headDimension, f = c.intermediateSize
        let r = WorkloadBenchmark.rank
        var list: [(Product, Double)] = []
        func add(_ ta: Bool, _ tb: Bool, _ m: Int, _ n: Int, _ k: Int, _ count: Double, independent: Bool = false) {
            list.append((Product(transposeA: ta, transposeB: tb, m: m, n: n, k: k, independent: independent), count))
        }
        /// y = x Wᵀ (W [out, in]); dx = dy W where x needs a gradient; dW = dyᵀ x when the weight trains.
        func linear(out: Int, in inputs: Int, count: Double, inputGradients: Double? = nil) {
            add(false, true, tokens, out, inputs, count)
            add(false, false, tokens, inputs, out, inputGradients ?? count)
            if mode == .full { add(true, false, out, inputs, tokens, count) }
        }
        let layers = Double(c.layerCount)
        // With the embedding frozen, the first layer's q, k and v inputs need no gradient.
        let firstLayerSkipped = mode == .full ? 0.0 : 1.0
        linear(out: d, in: d, count: layers, inputGradients: layers - firstLayerSkipped)        // q
        linear(out: d, in: d, count: layers)                                                    // o
        linear(out: kv, in: d, count: 2 * layers, inputGradients: 2 * (layers - firstLayerSkipped))  // k, v
        linear(out: f, in: d, count: 2 * layers)             // gate, up
        linear(out: d, in: f, count: layers)                 // down
        linear(out: c.vocabularySize, in: d, count: 1)       // head (the tied table's gradient when full)
        if mode == .lora {
            // q_proj and v_proj: h = x Aᵀ, y += h Bᵀ; dB = dyᵀ h, dh = dy B, dA = dhᵀ x, dx += dh A.
            for out in [d, kv] {
                add(false, true, tokens, r, d, layers)
                add(false, true, tokens, out, r, layers)
                add(true, false, out, r, tokens, layers)
                add(false, false, tokens, r, out, layers)
                add(true, false, r, d, tokens, layers)
                add(false, false, tokens, d, r, layers)
            }
        }
        // Attention, per sequence and head: scores S = Q Kᵀ, output O = P V; backward dV = Pᵀ dO, dP = dO Vᵀ,
        // dQ = dS K, dK = dSᵀ Q. Only the causal part is needed: the prefix columns whole, the rest half.
        let t = WorkloadBenchmark.sequence, p = mode == .prefix ? WorkloadBenchmark.virtualTokens : 0
        let h = c.headDimension
        let causal = (Double(p) + Double(t + 1) / 2) / Double(t + p)
        let pairs = layers * Double(batch * c.headCount) * causal
        add(false, true, t, t + p, h, 2 * pairs, independent: true)    // S = Q Kᵀ, dP = dO Vᵀ
        add(false, false, t, h, t + p, 2 * pairs, independent: true)   // O = P V, dQ = dS K
        add(true, false, t + p, h, t, 2 * pairs, independent: true)    // dV = Pᵀ dO, dK = dSᵀ Q
        return list
    }

    public struct Estimate: Sendable {
        /// Seconds of matrix products in one training step.
        public let secondsPerStep: Double
        /// Sequences in the step.
        public let batch: Int
        public var tokensPerSecond: Double { Double(batch * WorkloadBenchmark.sequence) / secondsPerStep }
    }

    /// Times every product of one step of `workload` in `mode` and adds them up. `timings` holds the products
    /// already timed, so the modes of one workload share their common products' times (measured once, and the
    /// same number in each mode's ceiling).
    public static func estimate(_ c: LlamaConfig, mode: WorkloadBenchmark.Mode, batch: Int = 8,
                                timings: inout [Product: Double], minimumSeconds: Double = 0.1) -> Estimate {
        var merged: [Product: Double] = [:]
        for (product, count) in products(c, mode: mode, batch: batch) { merged[product, default: 0] += count }
        var total = 0.0
        for (product, count) in merged {
            if timings[product] == nil { timings[product] = seconds(product, minimumSeconds: minimumSeconds) }
            total += count * timings[product]!
        }
        return Estimate(secondsPerStep: total, batch: batch)
    }

    /// The best time of one product: all cores on one product, or (for independent products) one core each.
    static func seconds(_ p: Product, minimumSeconds: Double) -> Double {
        let rowsA = p.transposeA ? p.k : p.m, columnsA = p.transposeA ? p.m : p.k
        let rowsB = p.transposeB ? p.n : p.k, columnsB = p.transposeB ? p.k : p.n
        var generator = RandomGenerator(seed: 5)
        let a = Tensor.randomNormal([rowsA, columnsA], generator: &generator)
        let b = Tensor.randomNormal([rowsB, columnsB], generator: &generator)
        let c = Tensor.zeros([p.m, p.n])
        let cores = Parallel.coreCount
        func time(_ body: () -> Void) -> Double {
            body()
            var best = Double.infinity
            for _ in 0..<5 {
                var reps = 0
                let start = Date()
                repeat { body(); reps += 1 } while Date().timeIntervalSince(start) < minimumSeconds / 5
                best = min(best, Date().timeIntervalSince(start) / Double(reps))
            }
            return best
        }
        let openBLAS = time {
            GEMM.multiplyWithOpenBLASThreads(cores, transposeA: p.transposeA, transposeB: p.transposeB, m: p.m, n: p.n,
                                             k: p.k,
                                             a: a.storage.pointer, lda: columnsA, b: b.storage.pointer, ldb: columnsB,
                                             c: c.storage.pointer, ldc: p.n)
        }
        let split = time {
            GEMM.multiply(transposeA: p.transposeA, transposeB: p.transposeB, m: p.m, n: p.n, k: p.k,
                          a: a.storage.pointer, lda: columnsA, b: b.storage.pointer, ldb: columnsB,
                          c: c.storage.pointer, ldc: p.n)
        }
        var best = min(openBLAS, split)
        if p.independent {
            let single = time {
                GEMM.multiplyWithOpenBLASThreads(1, transposeA: p.transposeA, transposeB: p.transposeB, m: p.m, n: p.n,
                                                 k: p.k,
                                                 a: a.storage.pointer, lda: columnsA, b: b.storage.pointer, ldb: columnsB,
                                                 c: c.storage.pointer, ldc: p.n)
            }
            best = min(best, single / Double(cores))
        }
        Thread.sleep(forTimeInterval: 0.05)  // let OpenBLAS's own threads park before the next shape
        return best
    }
}
