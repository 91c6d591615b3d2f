import Foundation
import FinchAdapters
import FinchFormats
import FinchModels
import FinchTensor
import FinchTraining

/// The training workloads of `finch bench` (the shapes `../shared/peers` measures PyTorch + PEFT on):
/// random tokens, sequences of 256, AdamW; LoRA (rank 8, alpha 16, q_proj and v_proj), prefix tuning
/// (16 virtual tokens) or full fine-tuning of a randomly initialised LLaMA. Each runs as `finch train` does:
/// a `Recipe`, a `TrainingSession` and the `Trainer`'s loop, in a temporary run directory.
public enum WorkloadBenchmark {
    public struct Workload: Sendable {
        public let name: String
        public let config: LlamaConfig
        /// Sequences of 256 tokens per step.
        public var batch = 8
        /// How the frozen base is held (W4Q: Q4_1 blocks made at load); adapters only.
        public var quantize: BaseQuantization = .none
        /// Trains with activation checkpointing whatever `finch bench` is asked.
        public var checkpointsActivations = false
        /// The peer's arguments for the same shape (`../shared/peers/torch_peft_bench.py`).
        public var peerArguments: [String] = []
    }

    /// SmolLM2-135M's shape: hidden 576, 30 layers, 9 heads (3 key/value), SwiGLU 1536, vocabulary 49,152, tied.
    static let smolLM2 = LlamaConfig(vocabularySize: 49152, hiddenSize: 576, intermediateSize: 1536, layerCount: 30,
                                     headCount: 9, keyValueHeadCount: 3, tieWordEmbeddings: true,
                                     maxPositionEmbeddings: 512)
    static let smolLM2Peer = ["--dim", "576", "--layers", "30", "--heads", "9", "--kv-heads", "3", "--ffn", "1536",
                              "--vocab", "49152", "--batch", "4"]

    public static let workloads: [Workload] = [
        Workload(name: "W1",
                 config: LlamaConfig(vocabularySize: 2048, hiddenSize: 288, intermediateSize: 768, layerCount: 6,
                                                 headCount: 6, keyValueHeadCount: 6, maxPositionEmbeddings: 512)),
        Workload(name: "W2",
                 config: LlamaConfig(vocabularySize: 32000, hiddenSize: 288, intermediateSize: 768, layerCount: 6,
                                                 headCount: 6, keyValueHeadCount: 6, maxPositionEmbeddings: 512),
                 peerArguments: ["--vocab", "32000"]),
        Workload(name: "W3",
                 config: LlamaConfig(vocabularySize: 8192, hiddenSize: 512, intermediateSize: 1376, layerCount: 8,
                                                 headCount: 8, keyValueHeadCount: 8, maxPositionEmbeddings: 512),
                 peerArguments: ["--dim", "512", "--layers", "8", "--heads", "8", "--kv-heads", "8", "--ffn", "1376",
                                 "--vocab", "8192"]),
        Workload(name: "W4", config: smolLM2, batch: 4, peerArguments: smolLM2Peer),
        // The base held as Q4_1 blocks with activation checkpointing, against the peer's float32 run (it has no
        // quantised base on the CPU).
        Workload(name: "W4Q", config: smolLM2, batch: 4, quantize: .q4_1, checkpointsActivations: true,
                 peerArguments: smolLM2Peer),
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

    public static let sequence = 256, rank = 8, virtualTokens = 16

    /// The recipe of a workload: constant learning rate 1e-3, no weight decay and no clipping (as the peer trains).
    public static func recipe(_ workload: Workload, mode: Mode, steps: Int, checkpointActivations: Bool,
                              runDirectory: String) -> Recipe {
        var recipe = Recipe()
        recipe.model = "random \(workload.name)"
        switch mode {
        case .lora:
            recipe.adapter = .lora(LoRAConfiguration(rank: rank, alpha: Double(2 * rank),
                                                     targets: .names(["q_proj", "v_proj"])))
        case .prefix: recipe.adapter = .prefix(PrefixConfiguration(virtualTokens: virtualTokens))
        case .full: recipe.adapter = .none
        }
        recipe.trainData = "random tokens"
        recipe.sequenceLength = sequence
        recipe.shuffle = false
        recipe.learningRate = 1e-3
        recipe.schedule = .constant
        recipe.maxGradNorm = 0
        recipe.batchSize = workload.batch
        recipe.activationCheckpointing = checkpointActivations || workload.checkpointsActivations
        recipe.quantize = workload.quantize
        recipe.steps = steps
        recipe.logEvery = steps
        recipe.checkpointKeep = 1
        recipe.outputDirectory = runDirectory
        return recipe
    }

    /// Runs `steps` timed training steps after `warmup` untimed ones; reports this process's peak memory at the
    /// last timed step (before the checkpoint the run stops with).
    public static func run(_ workload: Workload, mode: Mode, steps: Int = 5, warmup: Int = 2,
                           checkpointActivations: Bool = false) throws -> Result {
        let c = workload.config
        guard workload.quantize == .none || mode != .full else {
            throw TensorError.invalidArgument(op: "finch bench", message: "\(workload.name) holds its base quantised; it trains adapters only (lora, prefix)")
        }
        let model = try LlamaForCausalLM(c)
        if workload.quantize == .none {
            HuggingFaceFolder.initializeRandomly(model, seed: 0)
        } else {
            // Part by part, each quantised as soon as it is made and its float32 pages handed back (a new model's
            // weights are untouched zero pages until written), so the float32 model never exists whole: the peak
            // is the quantised base's, as when a quantised GGUF is loaded with `quantize: keep`.
            let parts = ["model.embed_tokens"] + (0..<c.layerCount).map { "model.layers.\($0)." }
            for (i, part) in parts.enumerated() {
                HuggingFaceFolder.initializeRandomly(model, seed: UInt64(i), including: { $0.hasPrefix(part) })
                try QuantizedBase.quantize(model, as: workload.quantize, including: { $0.hasPrefix(part) })
                TensorStorage.resetPool()
            }
            HuggingFaceFolder.initializeRandomly(model, seed: UInt64(parts.count))  // the norms, still float32
        }
        let parameters = model.parameterCount
        let runDirectory = NSTemporaryDirectory() + "finch-bench-\(getpid())-\(workload.name)-\(mode.rawValue)"
        try? FileManager.default.removeItem(atPath: runDirectory)
        defer { try? FileManager.default.removeItem(atPath: runDirectory) }
        // One step more than runs, so the run stops at a checkpoint without the end-of-run export.
        let recipe = Self.recipe(workload, mode: mode, steps: warmup + steps + 1,
                                 checkpointActivations: checkpointActivations, runDirectory: runDirectory)
        let loaded = LoadedRecipe(recipe: recipe, file: "finch bench \(workload.name) \(mode.rawValue)", lines: [:])
        var generator = RandomGenerator(seed: 2)
        let batch = workload.batch
        let sequences = (0..<batch).map { _ in
            TokenSequence(tokens: (0..<sequence).map { _ in Int32(generator.next() % UInt64(c.vocabularySize)) },
                          targetMask: [Bool](repeating: true, count: sequence))
        }
        let data = TrainingData(path: recipe.trainData, format: .text, sequences: sequences, sequenceLength: sequence)
        let adapter = try TrainingSession.makeAdapter(loaded, model: model)
        let session = try TrainingSession(loaded, model: model, adapter: adapter, trainData: data, validationData: nil)
        let trainer = try Trainer.start(session)
        var timedFrom: Date?, timedTo = Date(), loss = 0.0, peak = 0.0
        try trainer.run(stopAfter: warmup + steps) { event in
            guard case .step(let record) = event else { return }
            if record.step == warmup { timedFrom = Date() }
            if record.step == warmup + steps {
                timedTo = Date()
                loss = record.loss
                peak = peakResidentMB()
            }
        }
        let seconds = timedTo.timeIntervalSince(timedFrom ?? timedTo)
        return Result(workload: workload.name, mode: mode.rawValue, parameters: parameters,
                      trainable: session.trainableParameterCount,
                      tokensPerSecond: Double(batch * sequence * steps) / seconds,
                      flopsPerToken: flopsPerToken(c, mode: mode), peakResidentMB: peak, loss: loss)
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
                GEMM.multiplyWithOpenBLASThreads(Parallel.coreCount, transposeA: false, transposeB: false, m: n, n: n,
                                                 k: n,
                                                 a: a, lda: n, b: b, ldb: n, c: &c, ldc: n)
            }
            let reps = max(2, 2_000_000_000 / (2 * n * n * n))
            let start = Date()
            for _ in 0..<reps {
                GEMM.multiplyWithOpenBLASThreads(Parallel.coreCount, transposeA: false, transposeB: false, m: n, n: n,
                                                 k: n,
                                                 a: a, lda: n, b: b, ldb: n, c: &c, ldc: n)
            }
            best = max(best, Double(reps) * 2 * Double(n * n * n) / Date().timeIntervalSince(start) / 1e9)
        }
        return best
    }
}
