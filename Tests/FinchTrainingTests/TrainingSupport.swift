import Foundation
import TestSupport
@testable import FinchTraining

/// Scratch runs on the fixture models and Shakespeare text.
enum TrainingSupport {
    /// A scratch folder with train.txt, val.txt and a copy of the llama fixture's base model.
    static func workspace(_ name: String = #function) throws -> String {
        let dir = try Fixtures.scratchDirectory(name)
        let text = try String(contentsOfFile: Fixtures.path("llama-gqa", "eval.txt"), encoding: .utf8)
        let cut = text.index(text.startIndex, offsetBy: text.count * 3 / 4)
        try String(text[..<cut]).write(toFile: "\(dir)/train.txt", atomically: true, encoding: .utf8)
        try String(text[cut...]).write(toFile: "\(dir)/val.txt", atomically: true, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: "\(dir)/base", withIntermediateDirectories: true)
        for file in ["config.json", "model.safetensors", "tokenizer.json"] {
            try FileManager.default.copyItem(atPath: Fixtures.path("llama-gqa", "base/\(file)"),
                                             toPath: "\(dir)/base/\(file)")
        }
        return dir
    }

    static func recipe(_ dir: String, adapter: String, steps: Int = 12, extra: String = "") -> String {
        // Each adapter type's own keys only: another type's would be refused.
        // "dora" is LoRA with DoRA's magnitudes.
        let keys = ["lora": "  rank: 4\n  dropout: 0.1\n  targets: [q_proj, v_proj, down_proj]\n",
                    "dora": "  rank: 4\n  dropout: 0.1\n  dora: true\n  targets: [q_proj, v_proj, down_proj]\n",
                    "prefix": "  virtual_tokens: 4\n"][adapter] ?? ""
        return """
        model: \(dir)/base
        seed: 7
        adapter:
          type: \(adapter == "dora" ? "lora" : adapter)
        \(keys)data:
          train: \(dir)/train.txt
          validation: \(dir)/val.txt
          seq_len: 24
        optimizer:
          lr: 0.005
          warmup_steps: 2
          weight_decay: 0.01
        training:
          batch_size: 3
          grad_accum: 2
          steps: \(steps)
        eval:
          every: 4
        checkpoint:
          every: 4
          keep: 2
        logging:
          every: 1
          progress: plain
        \(extra)
        """
    }

    /// A fresh workspace with a LoRA run of `recipe` in `dir/run`, stopped after `steps` steps (checkpointed
    /// there); returns the workspace.
    static func stoppedLoRARun(after steps: Int = 4, _ name: String = #function) throws -> String {
        let dir = try workspace(name)
        let path = try write(recipe(dir, adapter: "lora", extra: "output:\n  dir: \(dir)/run\n"), to: "\(dir)/r.yaml")
        try Trainer.start(try RecipeLoader.load(path: path)).run(stopAfter: steps)
        return dir
    }

    static func write(_ text: String, to path: String) throws -> String {
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// (step, loss) of every logged training step.
    static func losses(_ run: String) throws -> [String] {
        try String(contentsOfFile: "\(run)/metrics.jsonl", encoding: .utf8).split(separator: "\n")
            .filter { $0.contains("\"loss\"") }
            .map { line in
                let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
                return "\(object["step"]!) \(object["loss"]!)"
            }
    }

    static func bytes(_ path: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: path)) }
}
