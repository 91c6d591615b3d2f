import Foundation
import Testing
import TestSupport
@testable import FinchFormats
@testable import FinchTraining

/// Recipes and runs that went wrong in a hostile probe: each is refused by key, or stopped before it loses work.
@Suite("bad recipes and runs")
struct BadRunTests {
    @Test func aNegativeSeedIsRefusedByKey() {
        RecipeTests.expectError(RecipeTests.minimal + "seed: -5\n", "r.yaml:4: seed: must be 0 or positive, got -5")
        RecipeTests.expectError(RecipeTests.minimal, overrides: ["seed=-1"],
                                "r.yaml: seed: must be 0 or positive, got -1")
    }

    /// The resolved recipe a run directory keeps reads back as the same recipe whatever its strings hold (found by
    /// the recipe fuzzer: carriage returns in a double-quoted target were folded into spaces, so the run's own
    /// recipe.yaml no longer matched its checkpoints).
    @Test func aResolvedRecipeReadsBackWhateverItsStringsHold() throws {
        let odd = ["a\r\rb", "tab\there", "new\nline", "quote\"and\\slash", "nel\u{85}ls\u{2028}ps\u{2029}",
                   "mid\u{FEFF}bom", "bell\u{7}", "  padded ", "null", "1e5", "é → ✓"]
        let list = odd.map { JSONValue.quoted($0) }.joined(separator: ", ")
        let loaded = try RecipeLoader.parse(RecipeTests.minimal + "adapter:\n  targets: [\(list)]\n", file: "r.yaml")
        #expect(loaded.recipe.adapter.lora?.targets == .names(odd))
        let again = try RecipeLoader.parse(loaded.resolvedYAML, file: "resolved.yaml")
        #expect(again.recipe.adapter.lora?.targets == .names(odd))
        #expect(RecipeLoader.changedKeys(loaded.recipe, again.recipe).isEmpty)
    }

    /// data.seq_len is checked against the model's positions before the data is laid out in windows of that size
    /// (2^62 stopped the process in the allocator; 2^31 grew to 23 GB).
    @Test(arguments: ["4611686018427387904", "2147483648"])
    func aSequenceLengthPastTheModelsPositionsIsRefusedBeforeTheData(length: String) throws {
        let dir = try TrainingSupport.workspace("seq-len-\(length)")
        try RecipeTests.expectSessionError("model: \(dir)/base\ndata:\n  train: \(dir)/train.txt\n  seq_len: \(length)\n", dir, "s.yaml") {
            $0 == "\(dir)/s.yaml:4: data.seq_len: \(length) exceeds the model's 256 positions"
        }
    }

    @Test func aModuleToSaveThatMatchesNothingIsNamedAsSuch() throws {
        let dir = try TrainingSupport.workspace()
        try RecipeTests.expectSessionError("model: \(dir)/base\nadapter:\n  modules_to_save: [embed_tokenz]\ndata:\n  train: \(dir)/train.txt\n", dir, "m.yaml") {
            $0.hasPrefix("\(dir)/m.yaml:3: adapter.modules_to_save: modules_to_save 'embed_tokenz' matches nothing in this model")
        }
    }

    /// A learning rate so high that one update makes the weights infinite stops the run at that step, before a
    /// checkpoint keeps them: the last checkpoint stays finite and resumes with a sane learning rate.
    @Test func anUpdateThatBreaksTheWeightsStopsBeforeItsCheckpoint() throws {
        let dir = try TrainingSupport.stoppedLoRARun()
        let good = Checkpoint.complete(runDirectory: "\(dir)/run").last!
        let before = try TrainingSupport.bytes("\(good.path)/trainable.safetensors")
        do {
            try Trainer.resume(runDirectory: "\(dir)/run", overrides: ["optimizer.lr=1e39"], allowRecipeChange: true).run()
            Issue.record("training went on with infinite weights")
        } catch let error as TrainingError {
            #expect(error.message.hasPrefix("step 5: the update at learning rate "), "\(error)")
            #expect(error.message.contains("hold NaN or infinite values; training stopped and the last complete checkpoint (step 4)"), "\(error)")
        }
        #expect(Checkpoint.complete(runDirectory: "\(dir)/run").map(\.step) == [4])
        #expect(try TrainingSupport.bytes("\(good.path)/trainable.safetensors") == before)
        // The advice works: resumed with the recipe's own learning rate, the run finishes with finite losses.
        try Trainer.resume(runDirectory: "\(dir)/run", overrides: ["optimizer.lr=0.005"], allowRecipeChange: true).run()
        let losses = try TrainingSupport.losses("\(dir)/run").map { Double($0.split(separator: " ")[1])! }
        #expect(losses.count == 12 && losses.allSatisfy(\.isFinite))
    }

    /// A learning rate high enough to saturate the model leaves a gradient of (almost) zero: the run goes on,
    /// but warns once that nothing trains.
    @Test func aVanishedGradientIsReportedOnce() throws {
        let dir = try TrainingSupport.workspace()
        let plain = "model: \(dir)/base\ndata:\n  train: \(dir)/train.txt\n  seq_len: 24\ntraining:\n  batch_size: 2\n  steps: 12\n"
        let recipe = try TrainingSupport.write(plain + "output:\n  dir: \(dir)/run\n", to: "\(dir)/r.yaml")
        var warnings: [String] = []
        try Trainer.start(try RecipeLoader.load(path: recipe, overrides: ["optimizer.lr=1e8"])).run {
            if case .warning(let text) = $0 { warnings.append(text) }
        }
        #expect(warnings.count == 1, "\(warnings)")
        #expect(warnings.first?.contains("the gradient has vanished for 5 steps") == true, "\(warnings)")
        // A sane run says nothing.
        let sane = try TrainingSupport.write(plain + "output:\n  dir: \(dir)/sane\n", to: "\(dir)/s.yaml")
        var saneWarnings = 0
        try Trainer.start(try RecipeLoader.load(path: sane)).run { if case .warning = $0 { saneWarnings += 1 } }
        #expect(saneWarnings == 0)
    }

    @Test func theVanishingGradientWatchWarnsOnce() {
        var watch = VanishingGradientWatch()
        // Saturated after two steps: told at the fifth vanished step, and only then.
        let norms = [0.5, 1.5] + [Double](repeating: 1e-9, count: 8)
        let told = norms.enumerated().compactMap { i, n in watch.observe(norm: n, stepsRun: i + 1, isLast: i == norms.count - 1).map { (i + 1, $0) } }
        #expect(told.count == 1 && told.first?.0 == 7 && told.first?.1 == 5)
        // A short run whose every gradient is zero is told at its end; one small step among large ones is not.
        var short = VanishingGradientWatch()
        #expect([0.0, 0.0].enumerated().compactMap { short.observe(norm: $1, stepsRun: $0 + 1, isLast: $0 == 1) } == [2])
        var healthy = VanishingGradientWatch()
        #expect([1.0, 1e-7, 0.8].enumerated().compactMap { healthy.observe(norm: $1, stepsRun: $0 + 1, isLast: $0 == 2) }.isEmpty)
    }

    /// An optimizer moment with the right number of values in another shape (transposed) is refused on resume.
    @Test func aTransposedOptimizerMomentIsRefusedOnResume() throws {
        let dir = try TrainingSupport.stoppedLoRARun()
        let path = Checkpoint.complete(runDirectory: "\(dir)/run").last!.path + "/optimizer.safetensors"
        let file = try SafetensorsFile(path: path)
        var transposed = ""
        let items = try file.entries.map { entry -> SafetensorsWriter.Item in
            var shape = entry.shape
            if transposed.isEmpty, shape.count == 2, shape[0] != shape[1] {
                shape.reverse()
                transposed = entry.name
            }
            return SafetensorsWriter.Item(name: entry.name, shape: shape, values: try file.floats(entry.name))
        }
        #expect(!transposed.isEmpty)
        try SafetensorsWriter.write(items, metadata: file.metadata, to: path)
        #expect { try Trainer.resume(runDirectory: "\(dir)/run") } throws: {
            "\($0)".hasPrefix("\(path): tensor '\(transposed)' is missing or has another shape than")
        }
    }

    /// state.json values a resumed run indexes with are checked (a negative position or epoch trapped, and a step
    /// past the recipe's last one made an empty range trap).
    @Test func aCheckpointStateOutsideTheRunIsRefused() throws {
        let dir = try TrainingSupport.stoppedLoRARun()
        let path = Checkpoint.complete(runDirectory: "\(dir)/run").last!.path + "/state.json"
        let original = try String(contentsOfFile: path, encoding: .utf8)
        for (from, to, message) in [("\"position\" : ", "\"position\" : -", "cursor (epoch"),
                                    ("\"epoch\" : 0", "\"epoch\" : -1", "must not be negative"),
                                    ("\"step\" : 4", "\"step\" : 40", "step 40 is past the recipe's last step 12")] {
            #expect(original.contains(from))
            try original.replacingOccurrences(of: from, with: to).write(toFile: path, atomically: true, encoding: .utf8)
            #expect { try Trainer.resume(runDirectory: "\(dir)/run") } throws: { "\($0)".hasPrefix("\(path): ") && "\($0)".contains(message) }
        }
        try original.write(toFile: path, atomically: true, encoding: .utf8)
        #expect(try Trainer.resume(runDirectory: "\(dir)/run").nextStep == 4)
    }

    /// A data file that is not UTF-8 names its first bad line; a JSON-lines file of blank lines holds no records.
    @Test func dataThatIsNotTextOrHasNoRecordsIsNamed() throws {
        let dir = try Fixtures.scratchDirectory()
        var bytes = Data("{\"text\": \"fine\"}\n".utf8)
        bytes.append(contentsOf: [0x7B, 0xFF, 0xFE, 0x7D, 0x0A])
        try bytes.write(to: URL(fileURLWithPath: "\(dir)/bad.jsonl"))
        #expect { try TrainingData.format(of: "\(dir)/bad.jsonl", text: try TrainingData.readText("\(dir)/bad.jsonl")) } throws: { "\($0)" == "\(dir)/bad.jsonl:2: is not UTF-8 text" }
        try "\n  \n\n".write(toFile: "\(dir)/blank.jsonl", atomically: true, encoding: .utf8)
        #expect { try TrainingData.format(of: "\(dir)/blank.jsonl", text: try TrainingData.readText("\(dir)/blank.jsonl")) } throws: {
            "\($0)" == "\(dir)/blank.jsonl: holds no records (a JSON-lines file with only blank lines)"
        }
        try "\n{\"prompt\": \"a\", \"completion\": \"b\"}\n".write(toFile: "\(dir)/ok.jsonl", atomically: true, encoding: .utf8)
        #expect(try TrainingData.format(of: "\(dir)/ok.jsonl",
                                        text: try TrainingData.readText("\(dir)/ok.jsonl")) == .completion)
    }
}
