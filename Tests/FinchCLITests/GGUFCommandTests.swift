import Foundation
import Testing
import TestSupport
import FinchFormats

/// GGUF files wherever a model is taken: a recipe's `model:`, eval, generate, tokenize and export (the fixture
/// LLaMA written as llama.cpp's converter writes it, Tests/Fixtures/gguf/llama-gqa.gguf).
@Suite("GGUF on the command line")
struct GGUFCommandTests {
    static let base = Fixtures.path("gguf", "llama-gqa.gguf")

    static func train(_ adapter: String, in dir: String) throws -> String {
        let text = try String(contentsOfFile: Fixtures.path("llama-gqa", "eval.txt"), encoding: .utf8)
        try text.write(toFile: "\(dir)/train.txt", atomically: true, encoding: .utf8)
        let recipe = """
            model: \(base)
            adapter:
            \(adapter)
            data:
              train: \(dir)/train.txt
              seq_len: 32
            optimizer:
              lr: 0.01
            training:
              batch_size: 4
              steps: 4
            logging:
              progress: plain
            output:
              dir: \(dir)/run
            """
        try recipe.write(toFile: "\(dir)/recipe.yaml", atomically: true, encoding: .utf8)
        let run = try CommandLineTests.finch(["train", "\(dir)/recipe.yaml"])
        #expect(run.status == 0, "\(run.stderr)")
        return "\(dir)/run"
    }

    /// Full fine-tuning of a GGUF base writes the result as a GGUF beside the run, which the other commands take.
    @Test func aFullFineTuneOfAGGUFBaseWritesMergedGGUF() throws {
        let dir = try Fixtures.scratchDirectory()
        let run = try Self.train("  type: none", in: dir)
        let merged = "\(run)/merged.gguf"
        let file = try GGUFFile(path: merged)
        #expect(file.tensors.count == (try GGUFFile(path: Self.base)).tensors.count && file["general.file_type"] == .uint32(0))
        let before = try CommandLineTests.finch(["eval", "--model", Self.base, "--data", "\(dir)/train.txt", "--seq-len", "32", "--json"])
        let after = try CommandLineTests.finch(["eval", "--model", merged, "--data", "\(dir)/train.txt", "--seq-len", "32", "--json"])
        func loss(_ run: CommandLineTests.Run) throws -> Double {
            let object = try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any]
            return try #require(object?["loss"] as? Double, "\(run.stdout) \(run.stderr)")
        }
        #expect(try loss(after) < loss(before))
        let generated = try CommandLineTests.finch(["generate", "--model", merged, "--prompt", "To be", "--max-tokens", "5", "--json"])
        let object = try JSONSerialization.jsonObject(with: Data(generated.stdout.utf8)) as? [String: Any]
        #expect((object?["ids"] as? [Int])?.count == 5 && (object?["prompt_ids"] as? [Int])?.first == 1, "\(generated.stderr)")
        let tokens = try CommandLineTests.finch(["tokenize", "--model", Self.base, "--text", "To be", "--json"])
        #expect(tokens.status == 0 && tokens.stdout.contains("\"ids\":[1,"), "\(tokens.stdout)")
    }

    /// A LoRA run over a GGUF base exports to GGUF (default name and type) and to a llama.cpp LoRA adapter; what
    /// cannot be written is refused in one line, and nothing already there is overwritten.
    @Test func exportWritesGGUFAndGGUFLoRAAndRefusesWhatItCannot() throws {
        let dir = try Fixtures.scratchDirectory()
        let run = try Self.train("  type: lora\n  rank: 4\n  targets: [q_proj, k_proj, v_proj]", in: dir)
        let merged = try CommandLineTests.finch(["export", run, "--format", "gguf"])
        #expect(merged.status == 0, "\(merged.stderr)")
        #expect(merged.stdout.contains("merged 6 LoRA layers into \(run)/merged.gguf (GGUF, --type q8_0)"))
        #expect(merged.stderr.contains("the written weights keep "))
        #expect(try GGUFFile(path: "\(run)/merged.gguf").tensors.contains { $0.type == .q8_0 })
        let lora = try CommandLineTests.finch(["export", run, "--format", "gguf-lora"])
        #expect(lora.status == 0, "\(lora.stderr)")
        #expect(try GGUFFile(path: "\(run)/adapter.gguf").tensors.count == 12)

        CommandLineTests.expectOneLineFailure(try CommandLineTests.finch(["export", run, "--format", "gguf"]),
                                              ["\(run)/merged.gguf: already exists; pass --force to replace it"])
        CommandLineTests.expectOneLineFailure(try CommandLineTests.finch(["export", run, "--format", "hf"]),
                                              ["is a GGUF file: export it with --format gguf"])
        CommandLineTests.expectOneLineFailure(try CommandLineTests.finch(["export", "--model", Self.base, "--format", "gguf",
                                                                          "--out", Self.base, "--force"]),
                                              ["is the base model's file; the result would be written over the weights"])
        CommandLineTests.expectOneLineFailure(try CommandLineTests.finch(["export", "--model", Fixtures.path("llama-gqa", "base"),
                                                                          "--adapter", Fixtures.path("llama-gqa", "lora"),
                                                                          "--format", "gguf-lora", "--out", "\(dir)/x.gguf"]),
                                              ["--format gguf-lora needs a GGUF base"])
        CommandLineTests.expectOneLineFailure(try CommandLineTests.finch(["export", run, "--format", "gguf", "--type", "q3_k", "--force"]),
                                              ["--type must be one of f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, same, got 'q3_k'"])
    }
}
