import ArgumentParser
import Foundation
import FinchTensor
import FinchNN
import FinchModels
import FinchBenchmarks
import FinchTraining

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure training throughput on the W1–W4 workloads (optionally beside PyTorch + PEFT), and the kernels.",
        discussion: """
            Each workload and mode runs in its own process, so its peak memory is its own. With --peer PYTHON, \
            the PyTorch + PEFT benchmark (../shared/peers/torch_peft_bench.py) runs the same shapes right after, \
            in the same sitting, and the table shows both and their ratio.
            """)

    @Option(help: "Workloads, comma-separated (W1: dim 288 × 6 layers, vocab 2048; W2: vocab 32000; W3: dim 512 × 8 layers; W4: SmolLM2-135M's shape, batch 4; W4Q: W4 over a Q4_1 base with activation checkpointing, adapters only).")
    var workloads: String = "W1,W2,W3"

    @Option(help: "Modes, comma-separated: lora, prefix, full.")
    var modes: String = "lora,prefix,full"

    @Option(parsing: .unconditional, help: "Timed training steps per measurement (after 2 warm-up steps).")
    var steps: Int = 5

    @Option(name: .customLong("repeat"), parsing: .unconditional, help: "Measure each workload and mode this many times, Finch and the peer alternating; report the medians (a shared machine's noise moves single runs by ±20 %).")
    var repetitions: Int = 1

    @Option(help: "A Python with torch, transformers and peft, to run the peer beside Finch.")
    var peer: String?

    @Option(help: "The peer's benchmark script.")
    var peerScript: String = "../shared/peers/torch_peft_bench.py"

    @Flag(help: "Measure the kernels too: cblas_sgemm against the engine's Linear forward+backward, softmax and RMSNorm, and each workload's GEMM ceiling (its step's matrix products alone, timed with cblas_sgemm).")
    var kernels = false

    @Option(parsing: .unconditional, help: "Seconds per kernel measurement.")
    var seconds: Double = 0.5

    @Flag(help: "Train with activation checkpointing (each decoder layer but the last recomputed in the backward pass): less memory, one more forward pass. The peer runs as always.")
    var activationCheckpointing = false

    @Flag(help: "Measure single-stream greedy generation instead of training: 128 new tokens after a 16-token prompt, with the key/value cache (beside ../shared/peers/torch_generate_bench.py with --peer).")
    var generation = false

    @Option(help: "The peer's generation benchmark script.")
    var peerGenerationScript: String = "../shared/peers/torch_generate_bench.py"

    @Option(help: "With --generation: measure this model (a GGUF file or a Hugging Face folder) instead of the workloads: prefill of a 256-token prompt and decoding of 128 tokens after 16, as ../shared/peers/llamacpp_generate_bench.py measures llama.cpp.")
    var model: String?

    @Option(help: "With --model: how to hold its weights, comma-separated for several rows (none, keep, nf4, q8_0, q4_0, q4_1; see `finch generate --quantize`). Each row runs in its own process.")
    var quantize: String = "keep"

    @Option(help: "With --model: a Python with llama-cpp-python, to run llama.cpp on the same file beside Finch (../shared/peers/README.md).")
    var llamacpp: String?

    @Option(help: "llama.cpp's generation benchmark script.")
    var llamacppScript: String = "../shared/peers/llamacpp_generate_bench.py"

    @Flag(help: "Print one JSON object instead of tables.")
    var json = false

    @Option(help: .hidden)
    var child: String?

    func run() throws {
        guard steps >= 1 else { throw OptionError("--steps must be at least 1, got \(steps)") }
        guard seconds > 0, seconds.isFinite else { throw OptionError("--seconds must be more than 0, got \(seconds)") }
        if let child, child.hasPrefix("generation:"), let model {
            let mode = try BaseQuantization(option: String(child.dropFirst("generation:".count)))
            print(String(decoding: try JSONEncoder().encode(try Self.measureModel(model, quantization: mode, repeats: repetitions)), as: UTF8.self))
            return
        }
        if let child {
            let parts = child.split(separator: ":").map(String.init)
            guard parts.count == 2, let w = WorkloadBenchmark.workloads.first(where: { $0.name == parts[0] }),
                  let mode = WorkloadBenchmark.Mode(rawValue: parts[1]) else { throw ValidationError("bad --child \(child)") }
            let result = try WorkloadBenchmark.run(w, mode: mode, steps: steps,
                                                   checkpointActivations: activationCheckpointing)
            print(String(decoding: try JSONEncoder().encode(result), as: UTF8.self))
            return
        }
        guard repetitions >= 1 else { throw OptionError("--repeat must be at least 1, got \(repetitions)") }
        if model != nil || llamacpp != nil {
            guard generation, model != nil else { throw OptionError("--model and --llamacpp measure decoding a model file: give --generation and --model") }
            try runModelGeneration()
            return
        }
        let chosen = try workloads.split(separator: ",").map { name in
            guard let w = WorkloadBenchmark.workloads.first(where: { $0.name == name }) else {
                throw ValidationError("unknown workload '\(name)' (\(WorkloadBenchmark.workloads.map(\.name).joined(separator: ", ")))")
            }
            return w
        }
        let chosenModes = try modes.split(separator: ",").map { m in
            guard let mode = WorkloadBenchmark.Mode(rawValue: String(m)) else { throw ValidationError("unknown mode '\(m)' (lora, prefix, full)") }
            return mode
        }
        if let quantised = chosen.first(where: { $0.quantize != .none }), chosenModes.contains(.full) {
            throw ValidationError("\(quantised.name) holds its base quantised and trains adapters only: give --modes lora or prefix")
        }
        if generation {
            guard !kernels && !activationCheckpointing else {
                throw ValidationError("--generation measures decoding; --kernels and --activation-checkpointing are about training")
            }
            try runGeneration(chosen)
            return
        }
        // The peak is measured before and after the workloads and the higher kept: on a shared machine one
        // measurement can land on a busy moment.
        var peak = WorkloadBenchmark.sgemmPeak()
        var rows: [[String: Any]] = []
        for w in chosen {
            for mode in chosenModes {
                var finchRuns: [WorkloadBenchmark.Result] = [], peerRuns: [(tokensPerSecond: Double, peakRSS: Double)] = []
                for _ in 0..<repetitions {
                    finchRuns.append(try Self.childResult(w.name, mode.rawValue, steps: steps,
                                                          checkpointActivations: activationCheckpointing))
                    if let peer {
                        peerRuns.append(try Self.peerResult(python: peer, script: peerScript, workload: w.name,
                                                            mode: mode.rawValue, steps: steps))
                    }
                }
                let finch = finchRuns.sorted { $0.tokensPerSecond < $1.tokensPerSecond }[finchRuns.count / 2]
                var row: [String: Any] = [
                    "workload": w.name, "mode": mode.rawValue, "activation_checkpointing": activationCheckpointing, "tokens_per_second": finch.tokensPerSecond,
                    "flops_per_token": finch.flopsPerToken, "gflops": finch.gigaflopsPerSecond,
                    "share_of_sgemm_peak": finch.gigaflopsPerSecond / peak, "peak_rss_mb": finchRuns.map(\.peakResidentMB).max()!,
                    "parameters": finch.parameters, "trainable": finch.trainable,
                ]
                if !peerRuns.isEmpty {
                    let p = (tokensPerSecond: peerRuns.map(\.tokensPerSecond).sorted()[peerRuns.count / 2],
                             peakRSS: peerRuns.map(\.peakRSS).max()!)
                    row["peer_tokens_per_second"] = p.tokensPerSecond
                    row["peer_peak_rss_mb"] = p.peakRSS
                    row["speedup"] = finch.tokensPerSecond / p.tokensPerSecond
                    row["memory_ratio"] = (row["peak_rss_mb"] as! Double) / p.peakRSS
                }
                rows.append(row)
                if !json { FileHandle.standardError.write(Data("measured \(w.name) \(mode.rawValue)\n".utf8)) }
            }
        }
        peak = max(peak, WorkloadBenchmark.sgemmPeak())
        for i in rows.indices { rows[i]["share_of_sgemm_peak"] = (rows[i]["gflops"] as! Double) / peak }
        var kernelReport: [String: Any] = [:]
        var linear: [KernelBenchmark.LinearResult] = [], bandwidth: [KernelBenchmark.BandwidthResult] = []
        if kernels {
            var timings: [GEMMCeiling.Product: Double] = [:]
            for i in rows.indices {
                let w = chosen.first { $0.name == rows[i]["workload"] as! String }!
                let mode = WorkloadBenchmark.Mode(rawValue: rows[i]["mode"] as! String)!
                let ceiling = GEMMCeiling.estimate(w.config, mode: mode, batch: w.batch, timings: &timings).tokensPerSecond
                rows[i]["gemm_ceiling_tokens_per_second"] = ceiling
                rows[i]["share_of_gemm_ceiling"] = (rows[i]["tokens_per_second"] as! Double) / ceiling
                if let p = rows[i]["peer_tokens_per_second"] as? Double { rows[i]["largest_possible_speedup"] = ceiling / p }
            }
            for r in [256, 1024, 4096] { for c in [288, 768, 1024] { linear.append(try KernelBenchmark.linear(rows: r, columns: c, minimumSeconds: seconds)) } }
            bandwidth = [try KernelBenchmark.softmax(rows: 4096, columns: 256, minimumSeconds: seconds),
                         try KernelBenchmark.softmax(rows: 2048, columns: 2048, minimumSeconds: seconds),
                         try KernelBenchmark.rmsNorm(rows: 2048, columns: 288, minimumSeconds: seconds),
                         try KernelBenchmark.rmsNorm(rows: 4096, columns: 1024, minimumSeconds: seconds)]
            kernelReport["linear"] = linear.map { ["rows": $0.rows, "columns": $0.columns, "sgemm_gflops": $0.sgemmGFLOPS, "engine_gflops": $0.engineGFLOPS, "ratio": $0.ratio] }
            kernelReport["bandwidth"] = bandwidth.map { ["kernel": $0.kernel, "rows": $0.rows, "columns": $0.columns, "gb_per_second": $0.gigabytesPerSecond] }
        }
        if json {
            try Output.json(["cores": Parallel.coreCount, "sgemm_peak_gflops": peak, "workloads": rows,
                             "kernels": kernelReport])
            return
        }
        print("cores: \(Parallel.coreCount); cblas_sgemm peak (OpenBLAS, \(Parallel.coreCount) threads, 512–2048 squares): \(Output.fixed(peak, 1)) GFLOP/s")
        print("training steps: batches of \(Set(chosen.map(\.batch)).sorted().map(String.init).joined(separator: " or ")) × \(WorkloadBenchmark.sequence) random tokens, AdamW, forward + backward + update"
              + (activationCheckpointing ? "; Finch with activation checkpointing (FLOPs/token leave out the recomputed forward)" : "") + "\n")
        var header = ["workload", "mode", "Finch tok/s"]
        if peer != nil { header += ["peer tok/s", "speedup"] }
        header += ["FLOPs/token", "GFLOP/s", "of peak", "Finch RSS"]
        if peer != nil { header += ["peer RSS", "RSS ratio"] }
        if kernels { header += ["GEMM ceiling tok/s", "of ceiling"] + (peer != nil ? ["ceiling / peer"] : []) }
        print("| " + header.joined(separator: " | ") + " |")
        print("|" + header.map { _ in " ---: " }.joined(separator: "|") + "|")
        for r in rows {
            var cells = [r["workload"] as! String, r["mode"] as! String,
                         Output.fixed(r["tokens_per_second"] as! Double, 0)]
            if peer != nil {
                cells += [Output.fixed(r["peer_tokens_per_second"] as! Double, 0),
                          Output.fixed(r["speedup"] as! Double, 2) + "×"]
            }
            cells += [Output.fixed((r["flops_per_token"] as! Double) / 1e6, 1) + " M",
                      Output.fixed(r["gflops"] as! Double, 1),
                      Output.fixed(100 * (r["share_of_sgemm_peak"] as! Double),
                                   0) + " %", Output.fixed(r["peak_rss_mb"] as! Double, 0) + " MB"]
            if peer != nil {
                cells += [Output.fixed(r["peer_peak_rss_mb"] as! Double, 0) + " MB",
                          Output.fixed(r["memory_ratio"] as! Double, 2)]
            }
            if kernels {
                cells += [Output.fixed(r["gemm_ceiling_tokens_per_second"] as! Double, 0),
                          Output.fixed(100 * (r["share_of_gemm_ceiling"] as! Double), 0) + " %"]
                if peer != nil { cells.append(Output.fixed(r["largest_possible_speedup"] as! Double, 2) + "×") }
            }
            print("| " + cells.joined(separator: " | ") + " |")
        }
        if kernels {
            print("\nGEMM ceiling: the step's matrix products alone, each timed with cblas_sgemm (the faster of OpenBLAS on all cores and Finch's split), everything else counted as free; ceiling / peer is the largest speedup over the peer it leaves possible.")
            print("\nLinear forward+backward (x [rows, cols] · Wᵀ, W [cols, cols]; 6·rows·cols² FLOPs)")
            print("| rows | cols | sgemm GFLOP/s | engine GFLOP/s | engine / sgemm |\n| ---: | ---: | ---: | ---: | ---: |")
            for l in linear {
                print("| \(l.rows) | \(l.columns) | \(Output.fixed(l.sgemmGFLOPS, 1)) | \(Output.fixed(l.engineGFLOPS, 1)) | \(Output.fixed(100 * l.ratio, 1)) % |")
            }
            print("\n| kernel (forward+backward) | rows × cols | GB/s |\n| --- | --- | ---: |")
            for b in bandwidth { print("| \(b.kernel) | \(b.rows) × \(b.columns) | \(Output.fixed(b.gigabytesPerSecond, 1)) |") }
        }
    }

    /// Greedy decoding on each workload's shape, Finch and the peer alternating; medians of the repetitions.
    func runGeneration(_ chosen: [WorkloadBenchmark.Workload]) throws {
        var rows: [[String: Any]] = []
        for w in chosen {
            var finch: [Double] = [], peerTimes: [Double] = []
            for _ in 0..<repetitions {
                finch.append(try GenerationBenchmark.run(w).millisecondsPerToken)
                if let peer { peerTimes.append(try Self.peerGeneration(python: peer, script: peerGenerationScript, workload: w)) }
            }
            let median = { (values: [Double]) in values.sorted()[values.count / 2] }
            var row: [String: Any] = ["workload": w.name, "ms_per_token": median(finch),
                                      "tokens_per_second": 1000 / median(finch)]
            if !peerTimes.isEmpty {
                row["peer_ms_per_token"] = median(peerTimes)
                row["speedup"] = median(peerTimes) / median(finch)
            }
            rows.append(row)
            if !json { FileHandle.standardError.write(Data("measured \(w.name) generation\n".utf8)) }
        }
        if json {
            try Output.json(["cores": Parallel.coreCount, "generation": rows])
            return
        }
        print("single-stream greedy generation: \(GenerationBenchmark.newTokens) new tokens after a \(GenerationBenchmark.promptLength)-token prompt, key/value cache\n")
        print(peer == nil ? "| workload | Finch ms/token | Finch tok/s |\n| ---: | ---: | ---: |"
                          : "| workload | Finch ms/token | peer ms/token | speedup |\n| ---: | ---: | ---: | ---: |")
        for r in rows {
            var cells = [r["workload"] as! String, Output.fixed(r["ms_per_token"] as! Double, 2)]
            if let p = r["peer_ms_per_token"] as? Double {
                cells += [Output.fixed(p, 2), Output.fixed(r["speedup"] as! Double, 2) + "×"]
            } else {
                cells.append(Output.fixed(r["tokens_per_second"] as! Double, 0))
            }
            print("| " + cells.joined(separator: " | ") + " |")
        }
    }

    /// What the child process for one way of holding the model reports.
    struct ModelMeasurement: Codable {
        let quantize: String
        let speed: GenerationBenchmark.ModelResult
        /// Set when the products can use 8-bit activations (a base kept in Q4_0, Q4_1 or Q8_0).
        let agreement: GenerationBenchmark.Agreement?
        let peakResidentMB: Double
    }

    static func measureModel(_ path: String, quantization: BaseQuantization, repeats: Int) throws -> ModelMeasurement {
        let base = try PretrainedModel.load(path, requireTokenizer: true, quantization: quantization)
        let model = base.model
        model.freeze()
        let prompt = try base.requireTokenizer().encode(GenerationBenchmark.promptText, addSpecialTokens: false)
        let speed = try GenerationBenchmark.run(model: model, prompt: prompt, repeats: repeats)
        let integer = model.namedModules().contains { ($0.module as? any QuantizedModule)?.quantized.integerLayout != nil }
        let agreement = integer
            ? try GenerationBenchmark.agreement(model: model, prompt: Array(prompt.prefix(GenerationBenchmark.promptLength))) : nil
        return ModelMeasurement(quantize: quantization.rawValue, speed: speed, agreement: agreement,
                                peakResidentMB: WorkloadBenchmark.peakResidentMB())
    }

    /// `--generation --model`: Finch on each `--quantize` mode in its own process, then llama.cpp on the file.
    func runModelGeneration() throws {
        guard let model else { return }
        let modes = try quantize.split(separator: ",").map { try BaseQuantization(option: String($0)) }
        var finch: [ModelMeasurement] = []
        for mode in modes {
            let data = try Self.child(["bench", "--generation", "--model", model, "--repeat", "\(repetitions)",
                                       "--child", "generation:\(mode.rawValue)"], what: "decoding \(model) with --quantize \(mode.rawValue)")
            finch.append(try JSONDecoder().decode(ModelMeasurement.self, from: data))
            if !json { FileHandle.standardError.write(Data("measured Finch, --quantize \(mode.rawValue)\n".utf8)) }
        }
        var peer: [String: Any] = [:]
        if let llamacpp {
            let first = finch[0].speed
            let common = [llamacppScript, "--model", model, "--threads", "\(Parallel.coreCount)", "--repeat", "\(repetitions)"]
            guard let decode = try Self.peerJSON(python: llamacpp, arguments: common + ["--prompt-tokens", "\(first.decodePromptTokens)", "--new-tokens", "\(first.newTokens)"]),
                  let prefill = try Self.peerJSON(python: llamacpp, arguments: common + ["--prompt-tokens", "\(first.prefillTokens)", "--new-tokens", "2"]),
                  let ms = decode["decode_ms_per_token"] as? Double, let tps = prefill["prefill_tokens_per_s"] as? Double,
                  let rss = decode["peak_rss_mb"] as? Double, let rss2 = prefill["peak_rss_mb"] as? Double else {
                throw ValidationError("llama.cpp (\(llamacpp) \(llamacppScript)) printed no result for \(model)")
            }
            peer = ["decode_ms_per_token": ms, "prefill_tokens_per_second": tps, "peak_rss_mb": max(rss, rss2)]
            if !json { FileHandle.standardError.write(Data("measured llama.cpp\n".utf8)) }
        }
        if json {
            let rows: [[String: Any]] = try finch.map { m in
                var row = try JSONSerialization.jsonObject(with: try JSONEncoder().encode(m)) as! [String: Any]
                if let p = peer["decode_ms_per_token"] as? Double { row["decode_speedup_over_llamacpp"] = p / m.speed.decodeMillisecondsPerToken }
                if let p = peer["prefill_tokens_per_second"] as? Double { row["prefill_speedup_over_llamacpp"] = m.speed.prefillTokensPerSecond / p }
                return row
            }
            try Output.json(["cores": Parallel.coreCount, "model": model, "finch": rows, "llamacpp": peer])
            return
        }
        let s = finch[0].speed
        print("\(model): prefill of \(s.prefillTokens) prompt tokens; greedy decoding of \(s.newTokens) tokens after \(s.decodePromptTokens); \(Parallel.coreCount) threads; medians of \(repetitions)\n")
        print("| engine | weights | prefill tok/s | decode ms/token | decode tok/s | peak RSS |\n| --- | --- | ---: | ---: | ---: | ---: |")
        for m in finch {
            print("| Finch | \(m.quantize) | \(Output.fixed(m.speed.prefillTokensPerSecond, 0)) | \(Output.fixed(m.speed.decodeMillisecondsPerToken, 2)) | \(Output.fixed(m.speed.decodeTokensPerSecond, 1)) | \(Output.fixed(m.peakResidentMB, 0)) MB |")
        }
        if let ms = peer["decode_ms_per_token"] as? Double, let tps = peer["prefill_tokens_per_second"] as? Double, let rss = peer["peak_rss_mb"] as? Double {
            print("| llama.cpp | as stored | \(Output.fixed(tps, 0)) | \(Output.fixed(ms, 2)) | \(Output.fixed(1000 / ms, 1)) | \(Output.fixed(rss, 0)) MB |")
            print("")
            for m in finch {
                print("Finch \(m.quantize) / llama.cpp: prefill \(Output.fixed(m.speed.prefillTokensPerSecond / tps, 2))×, decode \(Output.fixed(ms / m.speed.decodeMillisecondsPerToken, 2))×, memory \(Output.fixed(m.peakResidentMB / rss, 2))")
            }
        }
        for m in finch {
            guard let a = m.agreement else { continue }
            print("\n\(m.quantize), 8-bit activations against float32 products: \(a.identicalLeadingTokens) of \(a.compared) greedy tokens alike from the first"
                  + (a.floatMarginWherePartingBegins.map { "; where they part the float32 path's top two logits are \(Output.fixed(Double($0), 4)) apart" } ?? "")
                  + "; logits along the float32 tokens differ by at most \(String(format: "%.2e", Double(a.largestRelativeLogitDifference))) of the step's largest")
        }
    }

    /// Runs this executable with `arguments` and returns what it prints.
    static func child(_ arguments: [String], what: String) throws -> Data {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL
        if !FileManager.default.isExecutableFile(atPath: process.executableURL!.path) {
            process.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        }
        process.arguments = arguments
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw ValidationError("measuring \(what) failed") }
        return data
    }

    /// transformers' milliseconds per token on the workload's shape, from the peer's generation script.
    static func peerGeneration(python: String, script: String, workload: WorkloadBenchmark.Workload) throws -> Double {
        let c = workload.config
        let object = try peerJSON(python: python, arguments: [
            script, "--dim", "\(c.hiddenSize)", "--layers", "\(c.layerCount)", "--heads", "\(c.headCount)",
            "--ffn", "\(c.intermediateSize)", "--vocab", "\(c.vocabularySize)", "--new", "\(GenerationBenchmark.newTokens)",
            "--prompt", "\(GenerationBenchmark.promptLength)", "--threads", "\(Parallel.coreCount)",
        ])
        guard let ms = object?["ms_per_token"] as? Double else {
            throw ValidationError("the peer (\(python) \(script)) printed no generation result for \(workload.name)")
        }
        return ms
    }

    /// Runs a peer script and reads the JSON object on the last line it prints (nil when there is none).
    static func peerJSON(python: String, arguments: [String]) throws -> [String: Any]? {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = arguments
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard let line = String(decoding: data, as: UTF8.self).split(separator: "\n").last else { return nil }
        return (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
    }

    static func childResult(_ workload: String, _ mode: String, steps: Int,
                            checkpointActivations: Bool) throws -> WorkloadBenchmark.Result {
        let data = try child(["bench", "--child", "\(workload):\(mode)", "--steps", "\(steps)"]
                             + (checkpointActivations ? ["--activation-checkpointing"] : []), what: "\(workload) \(mode)")
        return try JSONDecoder().decode(WorkloadBenchmark.Result.self, from: data)
    }

    static func peerResult(python: String, script: String, workload: String, mode: String,
                           steps: Int) throws -> (tokensPerSecond: Double, peakRSS: Double) {
        let shape = WorkloadBenchmark.workloads.first { $0.name == workload }?.peerArguments ?? []
        let object = try peerJSON(python: python,
                                  arguments: [script, "--mode", mode, "--threads", "\(Parallel.coreCount)", "--steps",
                                              "\(steps)"] + shape)
        guard let tps = object?["tokens_per_s"] as? Double, let rss = object?["peak_rss_mb"] as? Double else {
            throw ValidationError("the peer (\(python) \(script)) printed no result for \(workload) \(mode)")
        }
        return (tps, rss)
    }
}
