import Foundation
import Testing
import TestSupport

/// The `finch` executable, run as a user runs it.
@Suite("finch command line")
struct CommandLineTests {
    struct Run {
        let status: Int32
        let stdout: String
        let stderr: String
    }

    static let binary: String = {
        // The test bundle and the executable are built into the same products folder.
        let products = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        var candidate = products.appendingPathComponent("finch").path
        if !FileManager.default.fileExists(atPath: candidate) {
            candidate = products.deletingLastPathComponent().appendingPathComponent("finch").path
        }
        return candidate
    }()

    /// Runs the built finch, with `environment` added to this process's.
    static func finch(_ arguments: [String], environment: [String: String] = [:]) throws -> Run {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = arguments
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Run(status: process.terminationStatus, stdout: String(decoding: o, as: UTF8.self),
                   stderr: String(decoding: e, as: UTF8.self))
    }

    /// A copy of the llama fixture's base folder.
    static func baseCopy() throws -> String {
        let dir = try Fixtures.scratchDirectory("cli")
        for file in ["config.json", "tokenizer.json", "model.safetensors"] {
            try FileManager.default.copyItem(atPath: Fixtures.path("llama-gqa", "base/\(file)"),
                                             toPath: "\(dir)/\(file)")
        }
        return dir
    }

    static func expectOneLineFailure(_ run: Run, _ fragments: [String],
                                     sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(run.status != 0, "exit status \(run.status)", sourceLocation: sourceLocation)
        let lines = run.stderr.split(separator: "\n")
        #expect(lines.count == 1, "stderr: \(run.stderr)", sourceLocation: sourceLocation)
        for f in fragments { #expect(run.stderr.contains(f), "stderr: \(run.stderr)", sourceLocation: sourceLocation) }
    }

    /// FINCH_THREADS must be a positive number; anything else is refused before any command runs.
    @Test func aBadThreadCountIsRefused() throws {
        for value in ["0", "two", "-1"] {
            let run = try Self.finch(["validate", "--keys"], environment: ["FINCH_THREADS": value])
            Self.expectOneLineFailure(run, ["FINCH_THREADS: expected a positive number of threads, got '\(value)'"])
        }
        #expect(try Self.finch(["validate", "--keys"], environment: ["FINCH_THREADS": "1"]).status == 0)
    }

    @Test func evalReportsTheReferenceLossForBothFamilies() throws {
        for family in Fixtures.families {
            let run = try Self.finch(["eval", "--model", Fixtures.path(family, "base"), "--data",
                                      Fixtures.path(family, "eval.txt"),
                                      "--seq-len", "48", "--max-windows", "4", "--json"])
            #expect(run.status == 0, "\(run.stderr)")
            let object = try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any]
            let loss = object?["loss"] as? Double ?? .nan
            #expect(abs(loss - (try Fixtures.reference(family).base_loss)) <= 1e-4, "\(family): \(run.stdout)")
        }
    }

    @Test func evalRefusesWindowsLongerThanTheModelsPositions() throws {
        let base = Fixtures.path("llama-gqa", "base")
        let run = try Self.finch(["eval", "--model", base, "--data", Fixtures.path("llama-gqa", "eval.txt"),
                                  "--seq-len", "257"])
        Self.expectOneLineFailure(run, ["\(base)/config.json: the model has 256 positions; --seq-len 257 does not fit"])
        // Prefix tuning's virtual tokens take positions too.
        let prefixed = try Self.finch(["eval", "--model", base, "--adapter", Fixtures.path("llama-gqa", "prefix"),
                                       "--data", Fixtures.path("llama-gqa", "eval.txt"), "--seq-len", "256"])
        Self.expectOneLineFailure(prefixed, ["the model has 256 positions, 248 after the adapter's 8 virtual tokens; --seq-len 256 does not fit"])
    }

    @Test func aTokenizerIsNotTrainedOnAnEmptyCorpus() throws {
        let dir = try Fixtures.scratchDirectory("cli-tokenizer")
        try " \n\n ".write(toFile: "\(dir)/empty.txt", atomically: true, encoding: .utf8)
        Self.expectOneLineFailure(try Self.finch(["tokenizer", "train", "--corpus", "\(dir)/empty.txt", "--vocab-size",
                                                  "300", "--out", "\(dir)/t.json"]),
                                  ["\(dir)/empty.txt: no text to learn from"])
        #expect(!FileManager.default.fileExists(atPath: "\(dir)/t.json"))
    }

    @Test func exportOfAFolderThatIsNotARunSaysWhatToGive() throws {
        let dir = try Fixtures.scratchDirectory("cli-export")
        Self.expectOneLineFailure(try Self.finch(["export", dir]),
                                  ["\(dir): is not a Finch run directory (no recipe.yaml); for a PEFT adapter folder, give --model, --adapter and --out"])
        // An --out that is a file.
        try "x".write(toFile: "\(dir)/taken", atomically: true, encoding: .utf8)
        Self.expectOneLineFailure(try Self.finch(["export", "--model", Fixtures.path("llama-gqa", "base"), "--adapter",
                                                  Fixtures.path("llama-gqa", "lora"),
                                                  "--out", "\(dir)/taken"]), ["\(dir)/taken: is a file, not a folder"])
        // An --out that is the base model's own folder (here through a symbolic link) would overwrite the weights and
        // tokenizer the export reads: refused, and the base is left as it was.
        let base = "\(dir)/base"
        try FileManager.default.copyItem(atPath: Fixtures.path("llama-gqa", "base"), toPath: base)
        try FileManager.default.createSymbolicLink(atPath: "\(dir)/alias", withDestinationPath: base)
        let before = try Data(contentsOf: URL(fileURLWithPath: "\(base)/model.safetensors"))
        Self.expectOneLineFailure(try Self.finch(["export", "--model", base, "--adapter",
                                                  Fixtures.path("llama-gqa", "lora"), "--out", "\(dir)/alias"]),
                                  ["\(dir)/alias: is the base model's folder (\(base)); the merged model would be written over the weights it is made from"])
        #expect(try Data(contentsOf: URL(fileURLWithPath: "\(base)/model.safetensors")) == before)
        #expect(FileManager.default.fileExists(atPath: "\(base)/tokenizer.json"))
    }

    /// finch compare scores both sides on the same examples; its per-example losses add up to each side's
    /// finch eval loss, and it names no winner where the interval holds zero.
    @Test func compareReportsBothSidesAndThePairedTests() throws {
        let dir = try Fixtures.scratchDirectory("cli-compare")
        let data = "\(dir)/requests.jsonl"
        let records = (0..<12).map { "{\"prompt\": \"To be or not \($0)\", \"completion\": \" that is the question \($0 % 3)\"}" }
        try records.joined(separator: "\n").write(toFile: data, atomically: true, encoding: .utf8)
        let model = Fixtures.path("llama-gqa", "base"), adapter = Fixtures.path("llama-gqa", "lora")
        let run = try Self.finch(["compare", "--model", model, "--adapter-b", adapter, "--data", data, "--resamples", "500", "--json"])
        #expect(run.status == 0, "\(run.stderr)")
        let result = try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any])
        #expect(result["examples"] as? Int == 12)
        let a = try #require(result["a"] as? [String: Any]), b = try #require(result["b"] as? [String: Any])
        let loss = try #require(result["loss"] as? [String: Any])
        let interval = try #require(loss["interval"] as? [Double])
        let difference = try #require(loss["difference"] as? Double)
        #expect(abs(difference - ((b["loss"] as? Double ?? 0) - (a["loss"] as? Double ?? 0))) < 1e-9)
        #expect(interval[0] <= difference && difference <= interval[1])
        #expect((loss["better"] == nil || loss["better"] is NSNull) == (interval[0] <= 0 && interval[1] >= 0))
        for (side, adapterArguments) in [(a, [String]()), (b, ["--adapter", adapter])] {
            let eval = try Self.finch(["eval", "--model", model, "--data", data, "--json"] + adapterArguments)
            let summary = try #require(try JSONSerialization.jsonObject(with: Data(eval.stdout.utf8)) as? [String: Any])
            #expect(abs(((summary["loss"] as? NSNumber)?.doubleValue ?? 0) - ((side["loss"] as? NSNumber)?.doubleValue ?? 1)) < 1e-4)
            let wilson = try #require(summary["exact_match_interval"] as? [Double])
            let match = try #require((summary["exact_match"] as? NSNumber)?.doubleValue)
            #expect(wilson.count == 2 && wilson[0] <= match && match <= wilson[1], "\(wilson) \(match)")
        }
        Self.expectOneLineFailure(try Self.finch(["compare", "--model", model, "--data", data]),
                                  ["A and B are the same model"])
        // Plain text: windows are the examples, and the means are finch eval's losses on the same windows.
        let text = try Self.finch(["compare", "--model", model, "--adapter-b", adapter, "--data", Fixtures.path("llama-gqa", "eval.txt"),
                                   "--seq-len", "48", "--max-examples", "4", "--resamples", "500", "--json"])
        #expect(text.status == 0, "\(text.stderr)")
        let windows = try #require(try JSONSerialization.jsonObject(with: Data(text.stdout.utf8)) as? [String: Any])
        let reference = try Fixtures.reference("llama-gqa")
        let meanA = ((windows["a"] as? [String: Any])?["loss"] as? NSNumber)?.doubleValue ?? 0
        let meanB = ((windows["b"] as? [String: Any])?["loss"] as? NSNumber)?.doubleValue ?? 0
        #expect(windows["windows"] as? Int == 4 && abs(meanA - reference.base_loss) < 1e-4 && abs(meanB - reference.lora_loss) < 1e-4,
                "\(meanA) \(meanB)")
    }

    @Test func evalOfACompletionFileWritesEachGreedyCompletion() throws {
        let dir = try Fixtures.scratchDirectory("cli-completions")
        let data = "\(dir)/requests.jsonl", out = "\(dir)/predictions.jsonl"
        let records = (0..<4).map { "{\"prompt\": \"To be or not \($0)\", \"completion\": \" that is\"}" }
        try records.joined(separator: "\n").write(toFile: data, atomically: true, encoding: .utf8)
        let model = Fixtures.path("llama-gqa", "base")
        let run = try Self.finch(["eval", "--model", model, "--data", data, "--max-examples", "2", "--predictions",
                                  out, "--json"])
        #expect(run.status == 0, "\(run.stderr)")
        let summary = try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any]
        #expect(summary?["examples"] as? Int == 2)
        let rows = try String(contentsOfFile: out, encoding: .utf8).split(separator: "\n").map {
            try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
        #expect(rows.count == 2)
        #expect(rows.first??["prompt"] as? String == "To be or not 0")
        #expect(rows.first??["expected"] as? String == " that is")
        #expect(rows.first??["generated"] is String)
        #expect(rows.first??["correct"] is Bool)
        Self.expectOneLineFailure(try Self.finch(["eval", "--model", model, "--data",
                                                  Fixtures.path("llama-gqa", "eval.txt"),
                                                  "--predictions", out]),
                                  ["--predictions needs a prompt/completion JSON-lines file"])
        let unwritable = "\(dir)/no-such-folder/predictions.jsonl"
        Self.expectOneLineFailure(try Self.finch(["eval", "--model", model, "--data", data, "--predictions",
                                                  unwritable]),
                                  [unwritable, "cannot create the predictions file"])
    }

    /// An example longer than the model's positions is named by its line; a prompt near the end of the positions
    /// is generated for as far as they go (the fixture has 256).
    @Test func evalOfACompletionFileNamesAnExampleTooLongForTheModel() throws {
        let dir = try Fixtures.scratchDirectory("cli-long-completions")
        let data = "\(dir)/requests.jsonl"
        let nearEnd = String(repeating: "to be or not ", count: 60), tooLong = String(repeating: "to be or not ", count: 120)
        let records = ["{\"prompt\": \"\(nearEnd)\", \"completion\": \" that\"}",
                       "{\"prompt\": \"\(tooLong)\", \"completion\": \" that\"}"]
        try records.joined(separator: "\n").write(toFile: data, atomically: true, encoding: .utf8)
        let model = Fixtures.path("llama-gqa", "base")
        let first = try Self.finch(["eval", "--model", model, "--data", data, "--max-examples", "1", "--json"])
        #expect(first.status == 0, "\(first.stderr)")
        let run = try Self.finch(["eval", "--model", model, "--data", data])
        Self.expectOneLineFailure(run, ["\(data):2: the prompt and completion are", "the model has 256 positions"])
    }

    @Test func aTruncatedSafetensorsFileFailsInOneLine() throws {
        let dir = try Self.baseCopy()
        let path = "\(dir)/model.safetensors"
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        try data.prefix(data.count - 100).write(to: URL(fileURLWithPath: path))
        Self.expectOneLineFailure(try Self.finch(["eval", "--model", dir, "--data",
                                                  Fixtures.path("llama-gqa", "eval.txt")]),
                                  [path, "truncated"])
    }

    @Test func anUnknownModelTypeFailsInOneLine() throws {
        let dir = try Self.baseCopy()
        let config = try String(contentsOfFile: "\(dir)/config.json", encoding: .utf8)
        try config.replacingOccurrences(of: "\"llama\"", with: "\"qwen3\"").write(toFile: "\(dir)/config.json", atomically: true, encoding: .utf8)
        Self.expectOneLineFailure(try Self.finch(["generate", "--model", dir, "--prompt", "hi"]),
                                  ["\(dir)/config.json", "model_type \"qwen3\" is not supported"])
    }

    @Test func aMalformedOrMissingTokenizerFailsInOneLine() throws {
        let dir = try Self.baseCopy()
        try "{\"model\": {\"type\": \"BPE\"".write(toFile: "\(dir)/tokenizer.json", atomically: true, encoding: .utf8)
        Self.expectOneLineFailure(try Self.finch(["eval", "--model", dir, "--data",
                                                  Fixtures.path("llama-gqa", "eval.txt")]),
                                  ["\(dir)/tokenizer.json", "not valid JSON"])
        try FileManager.default.removeItem(atPath: "\(dir)/tokenizer.json")
        Self.expectOneLineFailure(try Self.finch(["eval", "--model", dir, "--data",
                                                  Fixtures.path("llama-gqa", "eval.txt")]),
                                  ["\(dir)/tokenizer.json", "missing"])
    }

    @Test func tokenizeAndInspectPrintJSON() throws {
        let run = try Self.finch(["tokenize", "--model", Fixtures.path("gpt2", "base"), "--text", "Don't won't",
                                  "--json"])
        #expect(run.status == 0)
        let object = try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any]
        #expect(object?["ids"] as? [Int] == [36, 281, 7, 84, 264, 281, 7, 84])
        let inspect = try Self.finch(["inspect", Fixtures.path("llama-gqa", "base"), "--json"])
        let report = try JSONSerialization.jsonObject(with: Data(inspect.stdout.utf8)) as? [String: Any]
        #expect(report?["model_type"] as? String == "llama")
        #expect(report?["parameters"] as? Int == 190_784)
    }

    /// inspect reads each kind of folder Finch reads or writes: a PEFT adapter, a checkpoint, a run directory.
    @Test func inspectDescribesAdaptersCheckpointsAndRuns() throws {
        let adapter = try Self.finch(["inspect", Fixtures.path("llama-gqa", "lora")])
        #expect(adapter.status == 0, "\(adapter.stderr)")
        #expect(adapter.stdout.hasPrefix("adapter: PEFT LORA"), "\(adapter.stdout)")
        #expect(adapter.stdout.contains("rank 4, alpha"), "\(adapter.stdout)")
        let dir = try KillResumeTests.workspace()
        let train = try Self.finch(["train", "\(dir)/straight.yaml", "training.steps=3"])
        #expect(train.status == 0, "\(train.stderr)")
        let run = try Self.finch(["inspect", "\(dir)/straight"])
        #expect(run.stdout.hasPrefix("run directory: 2 complete checkpoints (steps 2, 3)"),
                "\(run.stdout)\(run.stderr)")
        let checkpoint = try Self.finch(["inspect", "\(dir)/straight/checkpoints/step-00000003", "--json"])
        let state = try JSONSerialization.jsonObject(with: Data(checkpoint.stdout.utf8)) as? [String: Any]
        #expect(state?["step"] as? Int == 3 && state?["complete"] as? Bool == true,
                "\(checkpoint.stdout)\(checkpoint.stderr)")
        #expect(state?["position"] as? Int == 12)  // three batches of four sequences
    }

    /// inspect reads a GGUF file's metadata (every value type) and tensor table, as text and as JSON.
    @Test func inspectDescribesAGGUFFile() throws {
        let text = try Self.finch(["inspect", Fixtures.path("gguf", "metadata.gguf")])
        #expect(text.status == 0, "\(text.stderr)")
        for line in ["GGUF version 3, alignment 32, 15 metadata keys", "  test.nested: [[1, 2], [3]]",
                     "  test.string: \"héllo, 世界 🙂\"", "parameters: 24 in 1 tensors (1 F32 0.0 MB)",
                     "  cube  F32    [2, 3, 4]       96 bytes"] {
            #expect(text.stdout.contains(line + "\n"), "\(line) in:\n\(text.stdout)")
        }
        let json = try Self.finch(["inspect", Fixtures.path("gguf", "quants.gguf"), "--json"])
        let report = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any]
        #expect(report?["alignment"] as? Int == 64 && (report?["tensors"] as? [Any])?.count == 27, "\(json.stdout)")
    }

    /// inspect --quantize lists what each weight would be held as for training over a quantised base, and its bytes.
    @Test func inspectShowsHowAQuantisedBaseIsHeld() throws {
        let run = try Self.finch(["inspect", Fixtures.path("llama-gqa", "base"), "--quantize", "nf4", "--json"])
        #expect(run.status == 0, "\(run.stderr)")
        let report = try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any]
        let weights = (report?["weights"] as? [[String: Any]]) ?? []
        let byName = Dictionary(uniqueKeysWithValues: weights.map { ($0["name"] as? String ?? "", $0) })
        let q = try #require(byName["model.layers.0.self_attn.q_proj.weight"])
        #expect(q["storage"] as? String == "nf4" && (q["bytes"] as? Int ?? 0) < 64 * 64 * 4 / 6, "\(q)")
        // Rows of 176 values are not whole 64-value blocks: that projection stays float32.
        #expect(byName["model.layers.0.mlp.down_proj.weight"]?["storage"] as? String == "f32")
        #expect(byName["model.embed_tokens.weight"]?["storage"] as? String == "f32", "nf4 keeps the table float, as QLoRA does")
        let bad = try Self.finch(["inspect", Fixtures.path("llama-gqa", "base"), "--quantize", "int3"])
        #expect(bad.status != 0 && bad.stderr.contains("--quantize must be one of"), "\(bad.stderr)")
    }

    /// A tokenizer with fewer tokens than the model's vocabulary: ids past it are left out of the text, and
    /// generate says so instead of printing less without a word.
    @Test func generatedIdsWithoutATokenAreNamed() throws {
        let dir = try Self.baseCopy()
        let url = URL(fileURLWithPath: "\(dir)/tokenizer.json")
        var tokenizer = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        var model = tokenizer["model"] as! [String: Any]
        model["vocab"] = (model["vocab"] as! [String: Int]).filter { $0.value < 300 }
        model["merges"] = [String]()
        tokenizer["model"] = model
        try JSONSerialization.data(withJSONObject: tokenizer).write(to: url)
        let run = try Self.finch(["generate", "--model", dir, "--prompt", "the", "--max-tokens", "30", "--temperature",
                                  "1", "--seed", "3"])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stderr.contains("of the generated ids") && run.stderr.contains("have no token in \(dir)/tokenizer.json (300 tokens; the model has 768)"),
                "\(run.stderr)")
    }

    @Test func greedyGenerationPrintsThePromptAndStopsAtMaxTokens() throws {
        let run = try Self.finch(["generate", "--model", Fixtures.path("gpt2", "base"), "--prompt", "To be",
                                  "--max-tokens", "5"])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stdout.hasPrefix("To be"))
        #expect(run.stderr.contains("5 tokens in"))
    }
}
