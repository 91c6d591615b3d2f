import Foundation
import Testing
import TestSupport
import FinchAdapters
import FinchFormats
import FinchModels
import FinchTensor
@testable import FinchTraining

/// DP-SGD: per-example clipping against Opacus (Tests/Fixtures/privacy/make_clipping.py), the noise and the Poisson
/// sampling's statistics, and private runs from recipes (ε reported, resumed exactly, bad settings refused).
@Suite("differential privacy")
struct PrivacyTests {
    struct Example: Decodable {
        let tokens: [Int32]
        let targets: [Int32]
    }

    struct Reference: Decodable {
        let max_grad_norm: Double
        let expected_batch_size: Int
        let examples: [Example]
        let losses: [Double]
        let norms: [Double]
    }

    /// Each example's loss and gradient norm, the clipped sum and the gradient before noise are Opacus' (float64)
    /// within 1e-5.
    @Test func clippedSumMatchesOpacus() throws {
        let r = try JSONDecoder().decode(Reference.self, from: Data(contentsOf: URL(fileURLWithPath: Fixtures.path("privacy", "clipping.json"))))
        let model = try HuggingFaceFolder.load(Fixtures.path("llama-gqa", "base")).model
        let lora = try PEFTFormat.load(Fixtures.path("llama-gqa", "lora"), into: model)
        let parameters = lora.trainableParameters.map { (name: $0.0, tensor: $0.1) }
        let sum = ClippedGradientSum(parameters: parameters)
        // Two of the four are clipped: the factor's formula decides the sum.
        #expect(r.norms.filter { $0 > r.max_grad_norm }.count == 2)
        for (i, example) in r.examples.enumerated() {
            let loss = try model.loss(example.tokens, batch: 1, length: example.tokens.count, targets: example.targets,
                                      prefix: nil)
            let value = Double(try loss.item())
            #expect(abs(value - r.losses[i]) <= 1e-5, "example \(i): loss \(value) vs \(r.losses[i])")
            try loss.backward()
            let norm = sum.addExample(maxNorm: r.max_grad_norm)
            #expect(abs(norm - r.norms[i]) <= 1e-5 * r.norms[i], "example \(i): norm \(norm) vs \(r.norms[i])")
            #expect(parameters.allSatisfy { $0.tensor.grad == nil }, "the example's gradient is cleared once added")
        }
        var generator = RandomGenerator(seed: 1)
        sum.makeNoisyMean(noiseStandardDeviation: 0, expectedBatchSize: r.expected_batch_size, generator: &generator)
        let expected = try SafetensorsFile(path: Fixtures.path("privacy", "clipping.safetensors"))
        var checked = 0
        for (name, tensor) in parameters {
            for (prefix, got) in [("sum.", try #require(sum.sum(of: name)).scalars), ("grad.", try #require(tensor.grad).scalars)] {
                let want = try expected.floats(prefix + name)
                let scale = want.map(abs).max() ?? 1
                let worst = zip(got, want).map { abs($0 - $1) }.max() ?? .infinity
                #expect(got.count == want.count && worst <= 1e-5 * scale, "\(prefix)\(name): worst \(worst), largest \(scale)")
                checked += 1
            }
        }
        #expect(checked == expected.names.count && checked == 56)

        // The same clipped sum from one batched backward pass with the per-example capture (the examples padded to
        // the longest, each one's gradient scaled from the batch's mean loss to its own).
        for (_, p) in parameters { p.zeroGrad() }
        let batched = ClippedGradientSum(parameters: parameters)
        let length = r.examples.map(\.tokens.count).max()!
        let tokens = r.examples.flatMap { $0.tokens + [Int32](repeating: 0, count: length - $0.tokens.count) }
        let targets = r.examples.flatMap { $0.targets + [Int32](repeating: -100, count: length - $0.targets.count) }
        let counts = r.examples.map { $0.targets.filter { $0 != -100 }.count }, total = counts.reduce(0, +)
        let capture = PerExampleGradients(examples: r.examples.count, weights: parameters.map(\.tensor))
        try capture.capturing {
            try model.loss(tokens, batch: r.examples.count, length: length, targets: targets, prefix: nil).backward()
        }
        #expect(parameters.allSatisfy { $0.tensor.grad == nil }, "the capture keeps the gradients, not the parameters")
        let norms = try batched.addExamples(from: capture, scales: counts.map { Double(total) / Double($0) },
                                            maxNorm: r.max_grad_norm)
        for (norm, want) in zip(norms, r.norms) { #expect(abs(norm - want) <= 1e-5 * want, "batched norm \(norm) vs \(want)") }
        for (name, _) in parameters {
            let want = try expected.floats("sum." + name), got = try #require(batched.sum(of: name)).scalars
            let scale = want.map(abs).max() ?? 1
            let worst = zip(got, want).map { abs($0 - $1) }.max() ?? .infinity
            #expect(worst <= 1e-5 * scale, "batched sum.\(name): worst \(worst), largest \(scale)")
        }
    }

    /// The noise: mean 0 and standard deviation σ / expected batch size over 200,000 values, from a seeded stream.
    @Test func noiseHasTheRequestedSpread() throws {
        let p = Tensor.zeros([400, 500])
        let sum = ClippedGradientSum(parameters: [(name: "p", tensor: p)])
        var generator = PrivacyStreams.noise(seed: 3, step: 11)
        sum.makeNoisyMean(noiseStandardDeviation: 3, expectedBatchSize: 2, generator: &generator)
        let values = try #require(p.grad).scalars.map(Double.init)
        let mean = values.reduce(0, +) / Double(values.count)
        let sd = (values.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(values.count - 1)).squareRoot()
        #expect(abs(mean) < 0.02, "mean \(mean)")
        #expect(abs(sd - 1.5) < 0.015, "standard deviation \(sd)")
        var again = PrivacyStreams.noise(seed: 3, step: 11), next = PrivacyStreams.noise(seed: 3, step: 12)
        #expect(again.next() != next.next())
    }

    /// Poisson sampling: batches of q·N examples on average with the binomial's variance, the same for the same
    /// (seed, step), other for another step.
    @Test func poissonSamplingDrawsEachExampleOnItsOwn() {
        let n = 100, q = 0.05, steps = 4000
        let sizes = (0..<steps).map { PrivacyStreams.batch(count: n, rate: q, seed: 9, step: $0).count }
        let mean = Double(sizes.reduce(0, +)) / Double(steps)
        let variance = sizes.map { (Double($0) - mean) * (Double($0) - mean) }.reduce(0, +) / Double(steps - 1)
        #expect(abs(mean - 5) < 0.15, "mean batch \(mean)")
        #expect(abs(variance - 4.75) < 0.5, "variance \(variance)")
        #expect(sizes.contains(0), "an empty batch happens at this rate")
        #expect(PrivacyStreams.batch(count: n, rate: q, seed: 9, step: 17) == PrivacyStreams.batch(count: n, rate: q, seed: 9, step: 17))
        #expect(PrivacyStreams.batch(count: n, rate: 1, seed: 9, step: 3) == Array(0..<n))
    }

    static func recipe(_ dir: String, adapter: String = "lora", privacy: String, steps: Int = 8, name: String) -> String {
        TrainingSupport.recipe(dir, adapter: adapter, steps: steps,
                               extra: "privacy:\n\(privacy)output:\n  dir: \(dir)/\(name)\n")
    }

    static func privacyReport(_ run: String) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: "\(run)/privacy.json"))) as! [String: Any]
    }

    /// A private LoRA run logs ε at every step (growing), writes privacy.json with the accountant's ε, and a run
    /// paused at step 3 and resumed ends bit for bit where the straight run does: the same batches, the same noise.
    @Test func aPrivateRunReportsEpsilonAndResumesExactly() throws {
        let dir = try TrainingSupport.workspace("privacy")
        let privacy = "  noise_multiplier: 1.1\n  max_grad_norm: 0.5\n"
        func run(_ name: String, stopAfter: Int? = nil) throws {
            let path = try TrainingSupport.write(Self.recipe(dir, privacy: privacy, name: name), to: "\(dir)/\(name).yaml")
            try Trainer.start(try RecipeLoader.load(path: path)).run(stopAfter: stopAfter)
        }
        try run("straight")
        try run("paused", stopAfter: 3)
        try Trainer.resume(runDirectory: "\(dir)/paused").run()
        let file = "adapter/adapter_model.safetensors"
        #expect(try TrainingSupport.bytes("\(dir)/straight/\(file)") == TrainingSupport.bytes("\(dir)/paused/\(file)"))
        #expect(try TrainingSupport.losses("\(dir)/straight") == TrainingSupport.losses("\(dir)/paused"))

        let lines = try String(contentsOfFile: "\(dir)/straight/metrics.jsonl", encoding: .utf8).split(separator: "\n")
            .map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
            .filter { $0["lr"] != nil }
        let epsilons = lines.compactMap { $0["epsilon"] as? Double }
        #expect(epsilons.count == 8 && zip(epsilons, epsilons.dropFirst()).allSatisfy { $0 < $1 }, "\(epsilons)")
        #expect(lines.allSatisfy { $0["examples"] is Int })

        let report = try Self.privacyReport("\(dir)/straight")
        let n = try #require(report["examples"] as? Int), q = try #require(report["sample_rate"] as? Double)
        func close(_ a: Double?, _ b: Double) -> Bool { a.map { abs($0 - b) <= 1e-12 * abs(b) } ?? false }
        #expect(close(q, 6 / Double(n)) && close(report["delta"] as? Double, 1 / Double(n)) && report["steps"] as? Int == 8)
        var accountant = RDPAccountant()
        for _ in 0..<8 { accountant.step(sampleRate: q, noiseMultiplier: 1.1) }
        let epsilon = accountant.epsilon(delta: 1 / Double(n)).epsilon
        #expect(close(report["epsilon"] as? Double, epsilon) && close(epsilons.last, epsilon), "\(report) vs \(epsilon)")
        #expect(close(try Self.privacyReport("\(dir)/paused")["epsilon"] as? Double, epsilon))
        let saved = try String(contentsOfFile: "\(Checkpoint.complete(runDirectory: "\(dir)/paused").last!.path)/state.json", encoding: .utf8)
        #expect(saved.contains("\"noiseMultiplier\" : 1.1"))
    }

    /// privacy.target_epsilon picks σ as Opacus' get_noise_multiplier does: the run ends just within the target.
    @Test func aTargetEpsilonPicksTheNoise() throws {
        let dir = try TrainingSupport.workspace("privacy-target")
        let path = try TrainingSupport.write(Self.recipe(dir, privacy: "  target_epsilon: 3\n  delta: 1e-4\n", steps: 5, name: "run"),
                                             to: "\(dir)/run.yaml")
        try Trainer.start(try RecipeLoader.load(path: path)).run()
        let report = try Self.privacyReport("\(dir)/run")
        let epsilon = try #require(report["epsilon"] as? Double), sigma = try #require(report["noise_multiplier"] as? Double)
        #expect(epsilon <= 3 && epsilon > 2.99, "ε \(epsilon) for target 3")
        let chosen = try #require(RDPAccountant.noiseMultiplier(targetEpsilon: 3, delta: 1e-4,
                                                                sampleRate: report["sample_rate"] as! Double, steps: 5))
        #expect(abs(sigma - chosen) <= 1e-12 * chosen)
    }

    /// Prefix tuning and full fine-tuning train privately too (each example clipped over every trainable tensor).
    @Test(arguments: ["prefix", "none"])
    func otherAdapterKindsTrainPrivately(_ adapter: String) throws {
        let dir = try TrainingSupport.workspace("privacy-\(adapter)")
        let path = try TrainingSupport.write(Self.recipe(dir, adapter: adapter, privacy: "  noise_multiplier: 0.8\n", steps: 3, name: "run"),
                                             to: "\(dir)/run.yaml")
        try Trainer.start(try RecipeLoader.load(path: path)).run()
        #expect(try TrainingSupport.losses("\(dir)/run").count == 3)
        #expect((try Self.privacyReport("\(dir)/run")["epsilon"] as? Double).map { $0 > 0 && $0.isFinite } == true)
    }

    /// Bad settings are refused in one line naming the key, before anything is written.
    @Test func badPrivacySettingsAreRefusedByKey() throws {
        let dir = try TrainingSupport.workspace("privacy-bad")
        let records = (0..<40).map { #"{"prompt": "say \#($0)", "completion": " \#($0)"}"# }.joined(separator: "\n")
        try records.write(toFile: "\(dir)/train.jsonl", atomically: true, encoding: .utf8)
        // (privacy section, train on packed JSON-lines records, the error's start)
        let cases: [(String, Bool, String)] = [
            ("  noise_multiplier: 1\n  target_epsilon: 2\n", false, "privacy.noise_multiplier: give privacy.noise_multiplier or privacy.target_epsilon, not both"),
            ("  noise_multiplier: -1\n", false, "privacy.noise_multiplier: must be 0 or positive"),
            ("  noise_multiplier: 1\n  delta: 1.5\n", false, "privacy.delta: must be between 0 and 1"),
            ("  max_grad_norm: 2\n", false, "privacy.max_grad_norm: clips per example only under privacy"),
            ("  noise_multiplier: 1\n", true, "data.packing: privacy protects each training sequence"),
            ("  target_epsilon: 0.000001\n  delta: 1e-12\n", false, "privacy.target_epsilon: no noise multiplier up to 10⁶"),
        ]
        for (index, (privacy, packedRecords, message)) in cases.enumerated() {
            var text = Self.recipe(dir, privacy: privacy, name: "bad\(index)")
            if packedRecords {
                text = text.replacingOccurrences(of: "  train: \(dir)/train.txt\n  validation: \(dir)/val.txt\n",
                                                 with: "  train: \(dir)/train.jsonl\n")
                    .replacingOccurrences(of: "eval:\n  every: 4\n", with: "")
            }
            let path = try TrainingSupport.write(text, to: "\(dir)/bad\(index).yaml")
            #expect { try Trainer.start(try RecipeLoader.load(path: path)) } throws: { "\($0)".contains(message) }
            #expect(!FileManager.default.fileExists(atPath: "\(dir)/bad\(index)"), "case \(index) left a run directory")
        }
    }
}
