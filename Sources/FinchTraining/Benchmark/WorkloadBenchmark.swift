import Foundation
import FinchAdapters
import FinchFormats
import FinchModels
import FinchNN
import FinchTensor

/// The training workloads of `finch bench` (the shapes `../shared/peers` measures PyTorch + PEFT on):
/// random tokens, batch 8 × 256, AdamW; LoRA (rank 8, alpha 16, q_proj and v_proj), prefix tuning
/// (16 virtual tokens) or full fine-tuning of a randomly initialised LLaMA.
public enum WorkloadBenchmark {
    public struct Workload: Sendable {
        public let name: String
        public let config: LlamaConfig
    }

    public static let workloads: [Workload] = [
        Workload(name: "W1", config: LlamaConfig(vocabularySize: 2048, hiddenSize: 288, intermediateSize: 768, layerCount: 6,
                                                 headCount: 6, keyValueHeadCount: 6, maxPositionEmbeddings: 512)),
        Workload(name: "W2", config: LlamaConfig(vocabularySize: 32000, hiddenSize: 288, intermediateSize: 768, layerCount: 6,
                                                 headCount: 6, keyValueHeadCount: 6, maxPositionEmbeddings: 512)),
        Workload(name: "W3", config: LlamaConfig(vocabularySize: 8192, hiddenSize: 512, intermediateSize: 1376, layerCount: 8,
                                                 headCount: 8, keyValueHeadCount: 8, maxPositionEmbeddings: 512)),
    ]

    public enum Mode: String, Sendable, CaseIterable { case lora, prefix, full }

    public struct Result: Codable, Sendable {
        public let workload: String
        public let mode: String
        public let parameters: Int
        public let trainable: Int
        public let tokensPerSecond: Double
        public let flopsPerToken: Double
        public let peakResidentMB: Double
        public let loss: Double
        public var gigaflopsPerSecond: Double { tokensPerSecond * flopsPerToken / 1e9 }
    }

    public static let batch = 8, sequence = 256, rank = 8, virtualTokens = 16

    /// Runs `steps` timed training steps after `warmup` untimed ones; reports this process's peak memory.
    public static func run(_ workload: Workload, mode: Mode, steps: Int = 5, warmup: Int = 2, checkpointActivations: Bool = false) throws -> Result {
        let c = workload.config
        let model = try LlamaForCausalLM(c)
        model.checkpointsActivations = checkpointActivations
        HuggingFaceFolder.initializeRandomly(model, seed: 0)
        let parameters = model.parameterCount
        var prefix: PrefixTuning?
        var trainable: [(name: String, tensor: Tensor)]
        switch mode {
        case .lora:
            _ = try LoRAAdapter.inject(into: model, configuration: LoRAConfiguration(rank: rank, alpha: 2 * Float(rank), targets: .names(["q_proj", "v_proj"])))
            trainable = model.trainableParameters()
        case .prefix:
            model.freeze()
            var generator = RandomGenerator(seed: 1)
            let p = try PrefixTuning(virtualTokenCount: virtualTokens, layerCount: c.layerCount, keyValueHeadCount: c.keyValueHeadCount,
                                     headDimension: c.headDimension, generator: &generator)
            prefix = p
            trainable = p.namedParameters()
        case .full:
            model.unfreeze()
            trainable = model.trainableParameters()
        }
        let optimizer = AdamW(parameters: trainable, weightDecay: 0)
        var generator = RandomGenerator(seed: 2)
        let tokens = (0..<(batch * sequence)).map { _ in Int32(generator.next() % UInt64(c.vocabularySize)) }
        var loss = 0.0
        func step() throws {
            let targets = Losses.nextTokenTargets(tokens, batch: batch, length: sequence)
            let l = try model.loss(tokens, batch: batch, length: sequence, targets: targets, prefix: prefix)
            try l.backward()
            optimizer.update(learningRate: 1e-3)
            for (_, t) in trainable { t.zeroGrad() }
            loss = Double(try l.item())
        }
        for _ in 0..<warmup { try step() }
        let start = Date()
        for _ in 0..<steps { try step() }
        let seconds = Date().timeIntervalSince(start)
        return Result(workload: workload.name, mode: mode.rawValue, parameters: parameters,
                      trainable: trainable.reduce(0) { $0 + $1.tensor.count },
                      tokensPerSecond: Double(batch * sequence * steps) / seconds,
                      flopsPerToken: flopsPerToken(c, mode: mode), peakResidentMB: peakResidentMB(), loss: loss)
    }

    /// Dense FLOPs of one training token, counted from the shapes: 2 per multiply-add of every Linear in the
    /// forward pass, as many again for the input gradients, and again for the weight gradients of trainable
    /// weights; attention scores and mixing as full T × T products (4·T·d forward, 8·T·d backward per layer).
    public static func flopsPerToken(_ c: LlamaConfig, mode: Mode) -> Double {
        let d = Double(c.hiddenSize), kv = Double(c.keyValueHeadCount * c.headDimension), f = Double(c.intermediateSize)
        let perLayer = d * d * 2 + d * kv * 2 + 3 * d * f  // q, o, k, v, gate, up, down
        let linear = Double(c.layerCount) * perLayer + d * Double(c.vocabularySize)
        let t = Double(sequence + (mode == .prefix ? virtualTokens : 0))
        let attention = Double(c.layerCount) * 4 * t * d
        var flops = 2 * linear + attention          // forward
        flops += 2 * linear + 2 * attention         // input gradients, attention backward
        switch mode {
        case .full: flops += 2 * linear
        case .lora:
            let lora = Double(c.layerCount) * Double(rank) * ((d + d) + (d + kv))  // q_proj and v_proj: A and B
            flops += 3 * 2 * lora
        case .prefix: break
        }
        return flops
    }

    /// The most this process has held in memory, in MB.
    public static func peakResidentMB() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_maxrss) / 1024
    }

    /// The best `cblas_sgemm` rate (OpenBLAS on all cores) over square products of 512 to 2048.
    public static func sgemmPeak() -> Double {
        var best = 0.0
        for n in [512, 1024, 2048] {
            let a = [Float](repeating: 0.5, count: n * n), b = [Float](repeating: 0.25, count: n * n)
            var c = [Float](repeating: 0, count: n * n)
            for _ in 0..<2 {
                GEMM.multiplyWithOpenBLASThreads(Parallel.coreCount, transposeA: false, transposeB: false, m: n, n: n, k: n,
                                                 a: a, lda: n, b: b, ldb: n, c: &c, ldc: n)
            }
            let reps = max(2, 2_000_000_000 / (2 * n * n * n))
            let start = Date()
            for _ in 0..<reps {
                GEMM.multiplyWithOpenBLASThreads(Parallel.coreCount, transposeA: false, transposeB: false, m: n, n: n, k: n,
                                                 a: a, lda: n, b: b, ldb: n, c: &c, ldc: n)
            }
            best = max(best, Double(reps) * 2 * Double(n * n * n) / Date().timeIntervalSince(start) / 1e9)
        }
        return best
    }
}
