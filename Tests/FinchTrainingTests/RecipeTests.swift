import Foundation
import Testing
import FinchAdapters
import TestSupport
@testable import FinchTraining

@Suite("strict recipes")
struct RecipeTests {
    static func expectError(_ yaml: String, overrides: [String] = [], _ expected: String,
                            sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            _ = try RecipeLoader.parse(yaml, file: "r.yaml", overrides: overrides)
            Issue.record("accepted", sourceLocation: sourceLocation)
        } catch {
            #expect("\(error)" == expected, sourceLocation: sourceLocation)
        }
    }

    static let minimal = "model: m\ndata:\n  train: t.txt\n"

    @Test func defaultsFillWhatARecipeLeavesOut() throws {
        let r = try RecipeLoader.parse(Self.minimal + "optimizer:\n  lr: 3e-4\n", file: "recipes/small.yaml").recipe
        #expect(r.learningRate == 3e-4 && r.adapter == .lora(LoRAConfiguration(rank: 8, targets: .names(["q_proj", "v_proj"]))) && r.schedule == .cosine)
        #expect(r.outputDirectory == "runs/small")
        let resolved = try RecipeLoader.parse(RecipeLoader.yaml(r), file: "resolved.yaml").recipe
        #expect(resolved == r, "the resolved recipe reads back to the same values")
    }

    @Test func anUnknownKeyNamesFileLineAndTheClosestKey() {
        Self.expectError(Self.minimal + "optimizer:\n  lr: 1\n  wieght_decay: 0.1\n",
                         "r.yaml:6: unknown key 'optimizer.wieght_decay' (did you mean 'optimizer.weight_decay'?)")
        Self.expectError(Self.minimal + "learning_rate: 0.1\n",
                         "r.yaml:4: unknown key 'learning_rate' (did you mean 'optimizer.lr'?)")
        Self.expectError(Self.minimal + "adaptor:\n  rank: 4\n",
                         "r.yaml:4: unknown section 'adaptor' (did you mean 'adapter'?)")
    }

    @Test func aWrongTypeNamesTheKeyAndWhatWasExpected() {
        Self.expectError(Self.minimal + "training:\n  steps: ten\n",
                         "r.yaml:5: training.steps: expected an integer, got 'ten'")
        Self.expectError("model: m\ndata:\n  train: t.txt\n  packing: maybe\n",
                         "r.yaml:4: data.packing: expected true or false, got 'maybe'")
        Self.expectError(Self.minimal + "optimizer:\n  schedule: cosin\n",
                         "r.yaml:5: optimizer.schedule: expected one of constant, linear, cosine, got 'cosin' (did you mean 'cosine'?)")
        Self.expectError(Self.minimal + "optimizer:\n  betas: 0.9\n",
                         "r.yaml:5: optimizer.betas: expected a list of two numbers, got '0.9'")
        Self.expectError(Self.minimal + "adapter:\n  rank: 0\n", "r.yaml:5: adapter.rank: must be positive, got 0")
        Self.expectError(Self.minimal + "eval:\n  every: 5\n",
                         "r.yaml:5: eval.every: evaluates on data.validation, which is not set")
        Self.expectError(Self.minimal, overrides: ["eval.max_batches=2"],
                         "r.yaml: eval.max_batches: limits evaluation on data.validation, which is not set")
        Self.expectError("model: m\ndata: t.txt\n", "r.yaml:2: data: expected a section of keys (data.train, data.validation, data.format, …), got 't.txt'")
        Self.expectError(Self.minimal, overrides: ["data=t.txt"], "override 'data=t.txt': 'data' is a section; override one of its keys (data.train, data.validation, data.format, …)")
    }

    @Test func aMissingRequiredValueNamesTheKey() {
        Self.expectError("data:\n  train: t.txt\n", "r.yaml: missing required key 'model' (Base model: a Hugging Face folder (config.json, model.safetensors, tokenizer.json) or a GGUF file.)")
    }

    @Test func overridesAreTypeCheckedTheSameWay() throws {
        let r = try RecipeLoader.parse(Self.minimal, file: "r.yaml", overrides: ["optimizer.lr=0.02", "adapter.targets=[q_proj,k_proj]"]).recipe
        #expect(r.learningRate == 0.02 && r.adapter.lora?.targets == .names(["q_proj", "k_proj"]))
        Self.expectError(Self.minimal, overrides: ["training.batch_size=big"],
                         "override 'training.batch_size=big': training.batch_size: expected an integer, got 'big'")
        Self.expectError(Self.minimal, overrides: ["optimizer.lerning_rate=1"], "override 'optimizer.lerning_rate=1': unknown key 'optimizer.lerning_rate' (did you mean 'optimizer.lr'?)")
        Self.expectError(Self.minimal, overrides: ["steps"], "override 'steps': expected key.path=value")
        // The run's length on the command line replaces the file's other way of giving it; both at once is an error.
        let byEpochs = Self.minimal + "training:\n  epochs: 4\n"
        let short = try RecipeLoader.parse(byEpochs, file: "r.yaml", overrides: ["training.steps=6"]).recipe
        #expect(short.steps == 6 && short.epochs == nil)
        let bySteps = try RecipeLoader.parse(Self.minimal + "training:\n  steps: 9\n", file: "r.yaml", overrides: ["training.epochs=2"]).recipe
        #expect(bySteps.steps == nil && bySteps.epochs == 2)
        Self.expectError(byEpochs, overrides: ["training.steps=6", "training.epochs=2"],
                         "r.yaml: training.epochs: give training.steps or training.epochs, not both")
        Self.expectError(Self.minimal + "training:\n  epochs: 4\n  steps: 6\n",
                         "r.yaml:5: training.epochs: give training.steps or training.epochs, not both")
    }

    @Test func aKeyOfAnotherAdapterTypeIsRefused() throws {
        // Every adapter key but the type belongs to one type (a new one must be placed), and only adapter keys do.
        #expect(RecipeSchema.fields.allSatisfy { ($0.adapterType != nil) == ($0.key.hasPrefix("adapter.") && $0.key != "adapter.type") })
        Self.expectError(Self.minimal + "adapter:\n  type: prefix\n  rank: 16\n",
                         "r.yaml:6: adapter.rank: 16 configures LoRA, but adapter.type is prefix, so it would change nothing; remove it, or set adapter.type: lora")
        Self.expectError(Self.minimal + "adapter:\n  type: none\n", overrides: ["adapter.virtual_tokens=8"],
                         "override 'adapter.virtual_tokens=8': adapter.virtual_tokens: 8 configures prefix tuning, but adapter.type is none (full fine-tuning), so it would change nothing; remove it, or set adapter.type: prefix")
        // Switching the type on the command line tries another method on the file: its own keys are let through,
        // a key of the old type given beside the switch is not.
        let switched = try RecipeLoader.parse(Self.minimal + "adapter:\n  targets: [all-linear]\n", file: "r.yaml",
                                              overrides: ["adapter.type=prefix"])
        #expect(switched.recipe.adapter.kind == .prefix && !switched.resolvedYAML.contains("all-linear"))
        Self.expectError(Self.minimal, overrides: ["adapter.type=prefix", "adapter.rank=4"],
                         "override 'adapter.rank=4': adapter.rank: 4 configures LoRA, but adapter.type is prefix, so it would change nothing; remove it, or set adapter.type: lora")
        // At its default such a key changes nothing either way (older runs' resolved recipes list every key).
        let prefix = try RecipeLoader.parse(Self.minimal + "adapter:\n  type: prefix\n  rank: 8\n  virtual_tokens: 4\n", file: "r.yaml")
        #expect(prefix.recipe.adapter == .prefix(PrefixConfiguration(virtualTokens: 4)))
        // The resolved recipe leaves them out and reads back to the same values.
        #expect(prefix.resolvedYAML.contains("  # rank: (lora only)\n") && !prefix.resolvedYAML.contains("  rank: 8"))
        #expect(try RecipeLoader.parse(prefix.resolvedYAML, file: "resolved.yaml").recipe == prefix.recipe)
        let lora = try RecipeLoader.parse(Self.minimal, file: "r.yaml")
        #expect(lora.resolvedYAML.contains("  # virtual_tokens: (prefix only)\n") && lora.resolvedYAML.contains("  rank: 8\n"))
    }

    /// Writes `yaml` to `name` in `dir` and expects building a session from it to fail with an error `check` accepts.
    static func expectSessionError(_ yaml: String, _ dir: String, _ name: String,
                                   sourceLocation: SourceLocation = #_sourceLocation,
                                   _ check: @escaping (String) -> Bool) throws {
        let recipe = try TrainingSupport.write(yaml, to: "\(dir)/\(name)")
        #expect(sourceLocation: sourceLocation) { try TrainingSession(try RecipeLoader.load(path: recipe)) } throws: { check("\($0)") }
    }

    @Test func aMissingFileNamesTheKeyAndLine() throws {
        let dir = try TrainingSupport.workspace()
        try Self.expectSessionError("model: \(dir)/base\ndata:\n  train: \(dir)/nope.txt\n", dir, "r.yaml") {
            $0 == "\(dir)/r.yaml:3: data.train: file '\(dir)/nope.txt' does not exist"
        }
        try Self.expectSessionError("model: \(dir)/nomodel\ndata:\n  train: \(dir)/train.txt\n", dir, "m.yaml") {
            $0.hasPrefix("\(dir)/m.yaml:1: model: \(dir)/nomodel: is not a folder")
        }
        try Self.expectSessionError("model: \(dir)/base\nadapter:\n  targets: [qproj]\ndata:\n  train: \(dir)/train.txt\n", dir, "t.yaml") {
            $0.hasPrefix("\(dir)/t.yaml:3: adapter.targets: target module 'qproj' matches nothing")
        }
        // A layer the model does not have is an error, even beside ones it has (it would train nothing there).
        try Self.expectSessionError("model: \(dir)/base\nadapter:\n  layers: [0, 9]\ndata:\n  train: \(dir)/train.txt\n", dir, "l.yaml") {
            $0 == "\(dir)/l.yaml:3: adapter.layers: this model has no layer 9 (its layers are 0–1)"
        }
        // A batch larger than the data: every batch would hold some sequences twice.
        try "to be or not to be".write(toFile: "\(dir)/tiny.txt", atomically: true, encoding: .utf8)
        try Self.expectSessionError("model: \(dir)/base\ndata:\n  train: \(dir)/tiny.txt\n  seq_len: 8\ntraining:\n  batch_size: 4\n", dir, "b.yaml") {
            $0 == "\(dir)/b.yaml:6: training.batch_size: 4 is more than the 1 sequence of up to 8 tokens that data.train ('\(dir)/tiny.txt') gives, so each batch would repeat sequences; use training.batch_size=1 or less, or more data"
        }
        // The same with gradient accumulation: a step of two batches of the one sequence.
        try Self.expectSessionError("model: \(dir)/base\ndata:\n  train: \(dir)/tiny.txt\n  seq_len: 8\ntraining:\n  batch_size: 1\n  grad_accum: 2\n", dir, "g.yaml") {
            $0 == "\(dir)/g.yaml:7: training.grad_accum: 2 batches of 1 make 2 sequences a step, more than the 1 that data.train ('\(dir)/tiny.txt') gives, so each step would repeat sequences; use training.grad_accum=1 or less, or more data"
        }
        // Epochs no run could finish (the step count stopped the process where it became an Int).
        try Self.expectSessionError("model: \(dir)/base\ndata:\n  train: \(dir)/tiny.txt\n  seq_len: 8\ntraining:\n  batch_size: 1\n  epochs: 1.0e+300\n", dir, "e.yaml") {
            $0 == "\(dir)/e.yaml:7: training.epochs: 1e+300 passes over 1 sequences make 1e+300 steps; give a number of epochs a run can finish"
        }
        // Sizes that could never be allocated are refused by key before anything is (a mistyped rank stopped the
        // process in the allocator; a huge prefix too).
        try Self.expectSessionError("model: \(dir)/base\nadapter:\n  rank: 100000000000\ndata:\n  train: \(dir)/train.txt\n", dir, "k.yaml") {
            $0.hasPrefix("\(dir)/k.yaml:3: adapter.rank: the LoRA factors of rank 100000000000 would hold ") && $0.contains("more than this machine's")
        }
        try Self.expectSessionError("model: \(dir)/base\nadapter:\n  type: prefix\n  virtual_tokens: 100000000000\ndata:\n  train: \(dir)/train.txt\n  seq_len: 32\n", dir, "v.yaml") {
            $0 == "\(dir)/v.yaml:4: adapter.virtual_tokens: 100000000000 virtual tokens leave no room in the model's 256 positions"
        }
        try Self.expectSessionError("model: \(dir)/base\nadapter:\n  type: prefix\n  projection_hidden: 100000000000000\ndata:\n  train: \(dir)/train.txt\n  seq_len: 32\n", dir, "p.yaml") {
            $0.hasPrefix("\(dir)/p.yaml:4: adapter.projection_hidden: a prefix of ") && $0.contains("more than this machine's")
        }
        // A recipe that cannot run leaves no run directory behind.
        let bad = try TrainingSupport.write("model: \(dir)/nomodel\ndata:\n  train: \(dir)/train.txt\noutput:\n  dir: \(dir)/never\n", to: "\(dir)/n.yaml")
        #expect(throws: RecipeError.self) { try Trainer.start(try RecipeLoader.load(path: bad)) }
        #expect(!FileManager.default.fileExists(atPath: "\(dir)/never"))
        // An output.dir that is a file, or under one.
        let file = try TrainingSupport.write("not a folder", to: "\(dir)/taken")
        for (out, message) in [(file, "\(file): is a file, not a folder"),
                               ("\(file)/run", "\(file)/run: cannot create the folder: Not a directory")] {
            let r = try TrainingSupport.write("model: \(dir)/base\ndata:\n  train: \(dir)/train.txt\n  seq_len: 32\noutput:\n  dir: \(out)\n", to: "\(dir)/o.yaml")
            #expect { try Trainer.start(try RecipeLoader.load(path: r)) } throws: { "\($0)" == "\(dir)/o.yaml:6: output.dir: \(message)" }
        }
    }
}
