import Foundation
import Testing
import TestSupport

/// What a hostile probe of the `finch` executable broke: each case is now a one-line error naming the file, key
/// or option, and loses nothing that was there before.
@Suite("finch command line on bad input")
struct BadInputCommandTests {
    static let base = Fixtures.path("llama-gqa", "base")

    /// `finch` under bash, which first ignores SIGXFSZ and limits the size of any file it writes to `kilobytes`:
    /// writes past the limit then fail as on a full disk.
    static func finchWithFileSizeLimit(_ kilobytes: Int, _ arguments: [String]) throws -> CommandLineTests.Run {
        let quoted = ([CommandLineTests.binary] + arguments).map { "'" + $0.replacingOccurrences(of: "'", with: "'\\''") + "'" }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = ["-c", "trap '' XFSZ; ulimit -f \(kilobytes); exec " + quoted.joined(separator: " ")]
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return .init(status: process.terminationStatus, stdout: String(decoding: o, as: UTF8.self),
                     stderr: String(decoding: e, as: UTF8.self))
    }

    static func recipe(_ dir: String, run: String, extra: String = "") throws -> String {
        let text = try String(contentsOfFile: Fixtures.path("llama-gqa", "eval.txt"), encoding: .utf8)
        try text.write(toFile: "\(dir)/train.txt", atomically: true, encoding: .utf8)
        let path = "\(dir)/\(run).yaml"
        try """
            model: \(base)
            data:
              train: \(dir)/train.txt
              seq_len: 24
            training:
              batch_size: 2
              steps: 12
            logging:
              every: 1
              progress: plain
            output:
              dir: \(dir)/\(run)
            \(extra)
            """.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// A safetensors header length with its top bit set, in a model, an adapter and a checkpoint.
    @Test func aHeaderLengthPastSixtyThreeBitsIsRefusedWherever() throws {
        let dir = try Fixtures.scratchDirectory("cli-header")
        func poison(_ path: String) throws {
            var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
            bytes[7] = 0x80
            try bytes.write(to: URL(fileURLWithPath: path))
        }
        let model = try CommandLineTests.baseCopy()
        try poison("\(model)/model.safetensors")
        CommandLineTests.expectOneLineFailure(try CommandLineTests.finch(["eval", "--model", model, "--data", Fixtures.path("llama-gqa", "eval.txt")]),
                                              ["\(model)/model.safetensors: header length", "exceeds the 100 MB limit"])
        try FileManager.default.copyItem(atPath: Fixtures.path("llama-gqa", "lora"), toPath: "\(dir)/lora")
        try poison("\(dir)/lora/adapter_model.safetensors")
        CommandLineTests.expectOneLineFailure(try CommandLineTests.finch(["generate", "--model", Self.base, "--adapter", "\(dir)/lora", "--prompt", "a"]),
                                              ["\(dir)/lora/adapter_model.safetensors: header length"])
        let recipe = try Self.recipe(dir, run: "run", extra: "checkpoint:\n  every: 4\n")
        #expect(try CommandLineTests.finch(["train", recipe, "training.steps=4"]).status == 0)
        try poison("\(dir)/run/checkpoints/step-00000004/trainable.safetensors")
        CommandLineTests.expectOneLineFailure(try CommandLineTests.finch(["train", "--resume", "\(dir)/run"]),
                                              ["\(dir)/run/checkpoints/step-00000004/trainable.safetensors: header length"])
    }

    @Test func aNegativeSeedOnTheCommandLineIsRefusedByKey() throws {
        let dir = try Fixtures.scratchDirectory("cli-seed")
        let recipe = try Self.recipe(dir, run: "run")
        CommandLineTests.expectOneLineFailure(try CommandLineTests.finch(["train", recipe, "seed=-1"]),
                                              ["seed: must be 0 or positive, got -1"])
        #expect(!FileManager.default.fileExists(atPath: "\(dir)/run"))
    }

    /// Export into a folder that holds files (another model) is refused and changes nothing, unless --force.
    @Test func exportRefusesAnOccupiedFolderUnlessForced() throws {
        let other = try CommandLineTests.baseCopy()
        let before = try Data(contentsOf: URL(fileURLWithPath: "\(other)/model.safetensors"))
        let arguments = ["export", "--model", Self.base, "--adapter", Fixtures.path("llama-gqa", "lora"), "--out",
                         other]
        CommandLineTests.expectOneLineFailure(try CommandLineTests.finch(arguments),
                                              ["\(other): already holds files (config.json, model.safetensors, tokenizer.json); pass --force"])
        #expect(try Data(contentsOf: URL(fileURLWithPath: "\(other)/model.safetensors")) == before)
        let forced = try CommandLineTests.finch(arguments + ["--force"])
        #expect(forced.status == 0, "\(forced.stderr)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: "\(other)/model.safetensors")) != before)
        // An empty folder is fine without --force.
        let empty = try Fixtures.scratchDirectory("cli-export-empty")
        #expect(try CommandLineTests.finch(["export", "--model", Self.base, "--adapter",
                                            Fixtures.path("llama-gqa", "lora"), "--out", empty]).status == 0)
    }

    /// Negative numbers reach the option's own range check (ArgumentParser took them for options: "Missing value").
    @Test func negativeOptionValuesNameTheOptionAndItsRange() throws {
        for (option, value, message) in [("--max-tokens", "-1", "--max-tokens must be at least 1, got -1"),
                                         ("--temperature", "-1", "--temperature must be 0 or more, got -1.0"),
                                         ("--top-k", "-3", "--top-k must be at least 1, got -3"),
                                         ("--seed", "-1", "--seed must be 0 or more, got -1")] {
            CommandLineTests.expectOneLineFailure(try CommandLineTests.finch(["generate", "--model", Self.base, "--prompt", "a", option, value]),
                                                  ["Error: \(message)"])
        }
        CommandLineTests.expectOneLineFailure(try CommandLineTests.finch(["eval", "--model", Self.base, "--data", Fixtures.path("llama-gqa", "eval.txt"),
                                                                          "--seq-len", "-4"]), ["Error: --seq-len must be at least 2, got -4"])
        // A prompt that starts with a dash is a prompt.
        let dashed = try CommandLineTests.finch(["generate", "--model", Self.base, "--prompt", "- item",
                                                 "--max-tokens", "2"])
        #expect(dashed.status == 0, "\(dashed.stderr)")
    }

    /// A JSON-lines file is never scored as raw text: not UTF-8, only blank lines, or "text" records (scored as
    /// training reads them).
    @Test func evalReadsJSONLinesFilesAsRecords() throws {
        let dir = try Fixtures.scratchDirectory("cli-eval-jsonl")
        var bytes = Data("{\"text\": \"to be\"}\n".utf8)
        bytes.append(contentsOf: [0x7B, 0xC3, 0x28, 0x7D, 0x0A])
        try bytes.write(to: URL(fileURLWithPath: "\(dir)/latin.jsonl"))
        CommandLineTests.expectOneLineFailure(try CommandLineTests.finch(["eval", "--model", Self.base, "--data", "\(dir)/latin.jsonl"]),
                                              ["\(dir)/latin.jsonl:2: is not UTF-8 text"])
        try "\n\n   \n".write(toFile: "\(dir)/blank.jsonl", atomically: true, encoding: .utf8)
        CommandLineTests.expectOneLineFailure(try CommandLineTests.finch(["eval", "--model", Self.base, "--data", "\(dir)/blank.jsonl"]),
                                              ["\(dir)/blank.jsonl: holds no records"])
        let text = try String(contentsOfFile: Fixtures.path("llama-gqa", "eval.txt"), encoding: .utf8)
        let records = stride(from: 0, to: 2000, by: 200).map { i -> String in
            let start = text.index(text.startIndex, offsetBy: i), end = text.index(start, offsetBy: 200)
            let data = try! JSONSerialization.data(withJSONObject: ["text": String(text[start..<end])])
            return String(decoding: data, as: UTF8.self)
        }
        try records.joined(separator: "\n").write(toFile: "\(dir)/records.jsonl", atomically: true, encoding: .utf8)
        let scored = try CommandLineTests.finch(["eval", "--model", Self.base, "--data", "\(dir)/records.jsonl",
                                                 "--seq-len", "32", "--json"])
        #expect(scored.status == 0, "\(scored.stderr)")
        // Scored as text, the JSON punctuation and escapes would be tokens too: a different count and loss.
        try String(records.joined(separator: "\n")).write(toFile: "\(dir)/raw.txt", atomically: true, encoding: .utf8)
        let raw = try CommandLineTests.finch(["eval", "--model", Self.base, "--data", "\(dir)/raw.txt", "--seq-len",
                                              "32", "--json"])
        let a = try JSONSerialization.jsonObject(with: Data(scored.stdout.utf8)) as? [String: Any]
        let b = try JSONSerialization.jsonObject(with: Data(raw.stdout.utf8)) as? [String: Any]
        #expect((a?["predicted_tokens"] as? Int) != nil && (a?["predicted_tokens"] as? Int) != (b?["predicted_tokens"] as? Int))
    }

    @Test func aModelWithNaNWeightsIsRefusedByTensor() throws {
        let model = try CommandLineTests.baseCopy()
        // The first F32 value of 'lm_head.weight' becomes NaN, found through the header's offsets.
        var bytes = try Data(contentsOf: URL(fileURLWithPath: "\(model)/model.safetensors"))
        let headerLength = Int(bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
        let header = try JSONSerialization.jsonObject(with: bytes[8..<(8 + headerLength)]) as! [String: Any]
        let offsets = (header["lm_head.weight"] as! [String: Any])["data_offsets"] as! [Int]
        let nan = Float.nan.bitPattern.littleEndian
        withUnsafeBytes(of: nan) { for i in 0..<4 { bytes[8 + headerLength + offsets[0] + i] = $0[i] } }
        try bytes.write(to: URL(fileURLWithPath: "\(model)/model.safetensors"))
        CommandLineTests.expectOneLineFailure(try CommandLineTests.finch(["eval", "--model", model, "--data", Fixtures.path("llama-gqa", "eval.txt")]),
                                              ["\(model)/model.safetensors: tensor 'lm_head.weight' holds NaN or infinite values"])
    }

    @Test func inspectNamesWhatAFolderLacks() throws {
        let dir = try Fixtures.scratchDirectory("cli-inspect")
        let recipe = try Self.recipe(dir, run: "run", extra: "checkpoint:\n  every: 4\n")
        #expect(try CommandLineTests.finch(["train", recipe, "training.steps=4"]).status == 0)
        try FileManager.default.removeItem(atPath: "\(dir)/run/recipe.yaml")
        let run = try CommandLineTests.finch(["inspect", "\(dir)/run"])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stdout.contains("recipe.yaml is missing") && run.stdout.contains("1 complete checkpoint"),
                "\(run.stdout)")
        try FileManager.default.createDirectory(atPath: "\(dir)/empty", withIntermediateDirectories: true)
        CommandLineTests.expectOneLineFailure(try CommandLineTests.finch(["inspect", "\(dir)/empty"]),
                                              ["\(dir)/empty: is not a model folder, PEFT adapter folder, checkpoint or run directory"])
    }

    /// A write that fails (here a file-size limit, as a full disk would) names the file and stops the run; a
    /// checkpoint that could not be written leaves no half of itself behind, and the complete ones stay.
    /// ThreadSanitizer's runtime stops with SIGBUS at start-up under a file-size limit, before Finch runs, so this
    /// one test runs in the plain, Haswell and AddressSanitizer passes of CI, not the ThreadSanitizer one.
    @Test(.disabled(if: ProcessInfo.processInfo.environment["FINCH_SANITIZER"] == "thread",
                    "ThreadSanitizer's runtime cannot start under a file-size limit"))
    func aFailedWriteNamesTheFileAndLeavesNoPartialCheckpoint() throws {
        let dir = try Fixtures.scratchDirectory("cli-full")
        // metrics.jsonl passes 2 KB at about step 17 of 30 (the resolved recipe.yaml is about 1 KB); no checkpoint
        // is due before the end.
        let metrics = try Self.recipe(dir, run: "metrics")
        CommandLineTests.expectOneLineFailure(try Self.finchWithFileSizeLimit(2, ["train", metrics, "training.steps=30"]),
                                              ["\(dir)/metrics/metrics.jsonl: cannot write: File too large"])
        // The first checkpoint (step 4) writes optimizer.safetensors of about 30 KB: past a 20 KB limit.
        let checkpoint = try Self.recipe(dir, run: "checkpoint", extra: "checkpoint:\n  every: 4\n")
        CommandLineTests.expectOneLineFailure(try Self.finchWithFileSizeLimit(20, ["train", checkpoint]),
                                              ["\(dir)/checkpoint/checkpoints/.partial-step-00000004/optimizer.safetensors: cannot write: File too large"])
        #expect(try FileManager.default.contentsOfDirectory(atPath: "\(dir)/checkpoint/checkpoints").isEmpty)
        // With room again, the run starts over and finishes.
        #expect(try CommandLineTests.finch(["train", checkpoint]).status == 0)
    }
}
