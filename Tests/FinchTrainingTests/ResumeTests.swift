import Foundation
import Testing
import TestSupport
import FinchFormats
@testable import FinchTraining

@Suite("training and exact resume")
struct ResumeTests {
    @Test(arguments: ["lora", "dora", "prefix", "none"])
    func stopAndResumeAtSeveralPointsIsBitwiseIdentical(_ adapter: String) throws {
        let dir = try TrainingSupport.workspace("resume-\(adapter)")
        let straightRecipe = try TrainingSupport.write(TrainingSupport.recipe(dir, adapter: adapter, extra: "output:\n  dir: \(dir)/straight\n"),
                                                       to: "\(dir)/straight.yaml")
        try Trainer.start(try RecipeLoader.load(path: straightRecipe)).run()

        let pausedRecipe = try TrainingSupport.write(TrainingSupport.recipe(dir, adapter: adapter, extra: "output:\n  dir: \(dir)/paused\n"),
                                                     to: "\(dir)/paused.yaml")
        try Trainer.start(try RecipeLoader.load(path: pausedRecipe)).run(stopAfter: 3)
        try Trainer.resume(runDirectory: "\(dir)/paused").run(stopAfter: 7)
        try Trainer.resume(runDirectory: "\(dir)/paused").run(stopAfter: 8)
        try Trainer.resume(runDirectory: "\(dir)/paused").run()

        let result = adapter == "none" ? "merged/model.safetensors" : "adapter/adapter_model.safetensors"
        #expect(try TrainingSupport.bytes("\(dir)/straight/\(result)") == TrainingSupport.bytes("\(dir)/paused/\(result)"),
                "\(adapter): the resumed run's weights differ from the straight run's")
        let straight = try TrainingSupport.losses("\(dir)/straight"), paused = try TrainingSupport.losses("\(dir)/paused")
        #expect(straight.count == 12)
        #expect(straight == paused)
        #expect(Checkpoint.complete(runDirectory: "\(dir)/paused").map(\.step) == [8, 12])
    }

    /// Over a base held quantised (Q8_0 or NF4 made at load), stopping and resuming gives the straight run's
    /// adapter bit for bit, and the losses are not the float base's.
    @Test(arguments: [("lora", "q8_0"), ("dora", "q4_1"), ("prefix", "nf4")])
    func aQuantisedBaseResumesExactly(_ adapter: String, _ quantize: String) throws {
        let dir = try TrainingSupport.workspace("resume-quantised-\(adapter)")
        func recipe(_ name: String, _ quantize: String) throws -> String {
            try TrainingSupport.write(TrainingSupport.recipe(dir, adapter: adapter, extra: "quantize: \(quantize)\noutput:\n  dir: \(dir)/\(name)\n"),
                                      to: "\(dir)/\(name).yaml")
        }
        try Trainer.start(try RecipeLoader.load(path: try recipe("straight", quantize))).run()
        try Trainer.start(try RecipeLoader.load(path: try recipe("float", "none"))).run(stopAfter: 4)
        try Trainer.start(try RecipeLoader.load(path: try recipe("paused", quantize))).run(stopAfter: 5)
        try Trainer.resume(runDirectory: "\(dir)/paused").run()
        #expect(try TrainingSupport.bytes("\(dir)/straight/adapter/adapter_model.safetensors")
                == TrainingSupport.bytes("\(dir)/paused/adapter/adapter_model.safetensors"))
        let straight = try TrainingSupport.losses("\(dir)/straight")
        #expect(straight == (try TrainingSupport.losses("\(dir)/paused")) && straight.count == 12)
        #expect(Array(straight.prefix(4)) != (try TrainingSupport.losses("\(dir)/float")), "the base should be quantised")
    }

    @Test(arguments: ["lora", "dora", "prefix", "none"])
    func everyAdapterKindLowersTheValidationLoss(_ adapter: String) throws {
        let dir = try TrainingSupport.workspace("lowers-\(adapter)")
        let recipe = try TrainingSupport.write(
            TrainingSupport.recipe(dir, adapter: adapter, steps: 16, extra: "output:\n  dir: \(dir)/run\n").replacingOccurrences(of: "lr: 0.005", with: "lr: 0.01"),
            to: "\(dir)/r.yaml")
        var evaluations: [Double] = []
        let trainer = try Trainer.start(try RecipeLoader.load(path: recipe))
        let before = try #require(try trainer.session.validationLoss())
        try trainer.run { event in if case .evaluation(_, let loss) = event { evaluations.append(loss) } }
        #expect(evaluations.count == 4)
        #expect(evaluations.last! < before - 0.05, "\(adapter): validation loss \(before) → \(evaluations)")
        let svg = try String(contentsOfFile: "\(dir)/run/loss.svg", encoding: .utf8)
        #expect(svg.hasPrefix("<svg") && svg.contains("polyline"))
    }

    @Test func prefixWithItsMLPResumesExactly() throws {
        let dir = try TrainingSupport.workspace()
        let extra = "output:\n  dir: \(dir)/RUN\n"
        let text = TrainingSupport.recipe(dir, adapter: "prefix", steps: 6, extra: extra)
            .replacingOccurrences(of: "  virtual_tokens: 4", with: "  virtual_tokens: 4\n  projection_hidden: 16")
        let a = try TrainingSupport.write(text.replacingOccurrences(of: "RUN", with: "a"), to: "\(dir)/a.yaml")
        let b = try TrainingSupport.write(text.replacingOccurrences(of: "RUN", with: "b"), to: "\(dir)/b.yaml")
        try Trainer.start(try RecipeLoader.load(path: a)).run()
        try Trainer.start(try RecipeLoader.load(path: b)).run(stopAfter: 2)
        try Trainer.resume(runDirectory: "\(dir)/b").run()
        #expect(try TrainingSupport.bytes("\(dir)/a/adapter/adapter_model.safetensors") == TrainingSupport.bytes("\(dir)/b/adapter/adapter_model.safetensors"))
        let trainable = try SafetensorsFile(path: Checkpoint.complete(runDirectory: "\(dir)/b").last!.path + "/trainable.safetensors")
        #expect(trainable.names.contains("prefix.transform_in.weight"), "the checkpoint keeps the MLP")
    }

    /// A damaged newest checkpoint is named, with the one before it; moved aside, the run resumes from that one and
    /// ends as a straight run does.
    @Test func aDamagedCheckpointNamesTheOneBeforeIt() throws {
        let dir = try TrainingSupport.workspace("damaged")
        let recipe = try TrainingSupport.write(TrainingSupport.recipe(dir, adapter: "lora", extra: "output:\n  dir: \(dir)/run\n"), to: "\(dir)/r.yaml")
        try Trainer.start(try RecipeLoader.load(path: recipe)).run(stopAfter: 3)
        try Trainer.resume(runDirectory: "\(dir)/run").run(stopAfter: 6)
        let (newest, previous) = ("\(dir)/run/checkpoints/step-00000006", "\(dir)/run/checkpoints/step-00000004")
        try FileHandle(forWritingAtPath: "\(newest)/optimizer.safetensors")!.truncate(atOffset: 100)
        #expect { try Trainer.resume(runDirectory: "\(dir)/run") } throws: { error in
            "\(error)".hasPrefix("\(newest)/optimizer.safetensors: truncated")
                && "\(error)".hasSuffix("(checkpoint step 6 cannot be read; the one before it, step 4, is \(previous): move \(newest) out of \(dir)/run/checkpoints to resume from there)")
        }
        try FileManager.default.removeItem(atPath: "\(newest)/state.json")
        #expect { try Trainer.resume(runDirectory: "\(dir)/run") } throws: { "\($0)".hasPrefix("\(newest)/state.json: missing or unreadable") }
        try FileManager.default.moveItem(atPath: newest, toPath: "\(dir)/step-6-damaged")
        try Trainer.resume(runDirectory: "\(dir)/run").run()
        let straight = try TrainingSupport.write(TrainingSupport.recipe(dir, adapter: "lora", extra: "output:\n  dir: \(dir)/straight\n"), to: "\(dir)/s.yaml")
        try Trainer.start(try RecipeLoader.load(path: straight)).run()
        #expect(try TrainingSupport.losses("\(dir)/run") == TrainingSupport.losses("\(dir)/straight"))
    }

    /// While one trainer holds a run directory, a second (fresh or resuming) is refused before it reads or removes
    /// anything there, naming the holder; once the first is gone the run resumes.
    @Test func aRunDirectoryInUseIsRefused() throws {
        let dir = try TrainingSupport.workspace()
        let recipe = try TrainingSupport.write(TrainingSupport.recipe(dir, adapter: "lora", extra: "output:\n  dir: \(dir)/run\n"), to: "\(dir)/r.yaml")
        var first: Trainer? = try Trainer.start(try RecipeLoader.load(path: recipe))
        try first?.run(stopAfter: 4)
        try FileManager.default.createDirectory(atPath: "\(dir)/run/checkpoints/.partial-step-00000008",
                                                withIntermediateDirectories: true)
        let inUse = "\(dir)/run: is in use by another process (pid \(getpid())); wait for it to end or stop it first"
        #expect { try Trainer.resume(runDirectory: "\(dir)/run") } throws: { "\($0)" == inUse }
        let other = try TrainingSupport.write(TrainingSupport.recipe(dir, adapter: "lora", extra: "output:\n  dir: \(dir)/run2\n"), to: "\(dir)/o.yaml")
        let second = try Trainer.start(try RecipeLoader.load(path: other))
        #expect { try Trainer.start(try RecipeLoader.load(path: other)) } throws: { "\($0)" == inUse.replacingOccurrences(of: "/run:", with: "/run2:") }
        #expect(FileManager.default.fileExists(atPath: "\(dir)/run/checkpoints/.partial-step-00000008"),
                "the holder's partial checkpoint stays")
        withExtendedLifetime(second) {}
        first = nil
        try Trainer.resume(runDirectory: "\(dir)/run").run()
        #expect(Checkpoint.complete(runDirectory: "\(dir)/run").last?.step == 12)
    }

    @Test func aChangedRecipeIsRefusedNamingTheKeys() throws {
        let dir = try TrainingSupport.stoppedLoRARun()
        #expect(throws: TrainingError.self) { try Trainer.resume(runDirectory: "\(dir)/run", overrides: ["optimizer.lr=0.5", "adapter.rank=2"]) }
        do {
            _ = try Trainer.resume(runDirectory: "\(dir)/run", overrides: ["optimizer.lr=0.5", "adapter.rank=2"])
        } catch {
            #expect("\(error)".contains("adapter.rank, optimizer.lr"), "\(error)")
        }
        _ = try Trainer.resume(runDirectory: "\(dir)/run", overrides: ["optimizer.lr=0.5"], allowRecipeChange: true)
        #expect(throws: TrainingError.self) { try Trainer.start(try RecipeLoader.load(path: "\(dir)/r.yaml")) }
    }

    @Test func changedTrainingDataIsRefusedUnlessAllowed() throws {
        let dir = try TrainingSupport.stoppedLoRARun()
        let original = try String(contentsOfFile: "\(dir)/train.txt", encoding: .utf8)
        // One word changed: the same file name and size class, other sequences.
        try original.replacingOccurrences(of: " the ", with: " thy ").write(toFile: "\(dir)/train.txt", atomically: true, encoding: .utf8)
        #expect { try Trainer.resume(runDirectory: "\(dir)/run") } throws: {
            "\($0)" == "data.train ('\(dir)/train.txt') is not the data checkpoint step 4 was trained on: its sequences differ (the file or the tokenizer changed since); restore it to resume exactly, or pass --allow-data-change to go on with the new data"
        }
        _ = try Trainer.resume(runDirectory: "\(dir)/run", allowDataChange: true)
        // Restored, it resumes without the flag.
        try original.write(toFile: "\(dir)/train.txt", atomically: true, encoding: .utf8)
        _ = try Trainer.resume(runDirectory: "\(dir)/run")
        // A checkpoint written before the fingerprint was kept resumes as before.
        let state = try JSONDecoder().decode(CheckpointState.self, from: Data(#"{"step": 4, "cursor": {"epoch": 0, "position": 0}, "generators": {}, "recipeHash": "0", "learningRate": 0.001}"#.utf8))
        #expect(state.dataFingerprint == nil)
    }

    @Test func aNonFiniteLossStopsTrainingAndKeepsTheLastCheckpoint() throws {
        let dir = try TrainingSupport.stoppedLoRARun()
        let checkpoint = Checkpoint.complete(runDirectory: "\(dir)/run").last!
        let before = try TrainingSupport.bytes("\(checkpoint.path)/trainable.safetensors")
        // Poison the base model with finite weights whose products overflow: every later loss is NaN (a NaN
        // weight itself is refused when the model is loaded).
        let source = try SafetensorsFile(path: "\(dir)/base/model.safetensors")
        var items = try source.entries.map { SafetensorsWriter.Item(name: $0.name, shape: $0.shape, values: try source.floats($0.name)) }
        #expect(items[0].name == "lm_head.weight")
        items[0] = .init(name: items[0].name, shape: items[0].shape, values: items[0].values.map { _ in 3e38 })
        try SafetensorsWriter.write(items, to: "\(dir)/base/model.safetensors")
        do {
            try Trainer.resume(runDirectory: "\(dir)/run").run()
            Issue.record("training went on with a NaN loss")
        } catch let error as TrainingError {
            #expect(error.message.contains("step 5: the loss is nan"), "\(error)")
            #expect(error.message.contains("step 4"), "\(error)")
        }
        #expect(Checkpoint.complete(runDirectory: "\(dir)/run").last?.step == 4)
        #expect(try TrainingSupport.bytes("\(checkpoint.path)/trainable.safetensors") == before)
    }
}
