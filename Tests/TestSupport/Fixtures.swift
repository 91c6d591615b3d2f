import Foundation

/// The reference fixtures in Tests/Fixtures (made by transformers, PEFT and tokenizers; see its README).
public enum Fixtures {
    public static let root: String = {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures").path
    }()

    public static let families = ["llama-gqa", "gpt2", "qwen2", "mistral", "gpt-neox", "gpt-neo", "cohere"]

    /// The families with a GGUF fixture (`gguf/FAMILY.gguf`): all but GPT-Neo, which llama.cpp has no architecture for.
    public static let ggufFamilies = families.filter { $0 != "gpt-neo" }

    public static func path(_ family: String, _ relative: String = "") -> String {
        relative.isEmpty ? "\(root)/\(family)" : "\(root)/\(family)/\(relative)"
    }

    /// `reference.json` of a family.
    public static func reference(_ family: String) throws -> Reference {
        let data = try Data(contentsOf: URL(fileURLWithPath: path(family, "reference.json")))
        return try JSONDecoder().decode(Reference.self, from: data)
    }

    /// How far float32 rounding alone can move a family's AdamW trajectory (`FAMILY/adamw-sensitivity.json`, made
    /// by families/adamw_sensitivity.py); nil for the families whose references predate it.
    public static func adamwSensitivity(_ family: String) throws -> AdamWSensitivity? {
        let file = path(family, "adamw-sensitivity.json")
        guard FileManager.default.fileExists(atPath: file) else { return nil }
        return try JSONDecoder().decode(AdamWSensitivity.self, from: Data(contentsOf: URL(fileURLWithPath: file)))
    }

    public struct AdamWSensitivity: Decodable {
        public let runs: Int
        /// Per loss (before each step, then the final one): the largest deviation any perturbed run showed.
        public let loss_spread: [Double]
        /// Per trained tensor: the largest entry-wise deviation any perturbed run showed.
        public let tensor_spread: [String: Double]
    }

    /// A fresh scratch directory, inside this test process's own folder under the system's temporary folder
    /// (`finch-tests-<pid>`), which is removed when the process exits; folders left by processes that are gone
    /// (killed, crashed) are removed when the next one starts.
    public static func scratchDirectory(_ name: String = #function) throws -> String {
        let safe = name.filter { $0.isLetter || $0.isNumber }
        let dir = "\(processRoot)/\(safe)-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    static let processRoot: String = {
        let files = FileManager.default, temporary = files.temporaryDirectory.path
        for entry in (try? files.contentsOfDirectory(atPath: temporary)) ?? [] where entry.hasPrefix("finch-tests-") {
            if let pid = Int32(entry.dropFirst("finch-tests-".count)), kill(pid, 0) != 0, errno == ESRCH {
                try? files.removeItem(atPath: "\(temporary)/\(entry)")
            }
        }
        atexit { try? FileManager.default.removeItem(atPath: Fixtures.processRoot) }
        return "\(temporary)/finch-tests-\(getpid())"
    }()
}

public struct Reference: Decodable, Sendable {
    public struct TokenizerCase: Decodable, Sendable {
        public let text: String
        public let ids: [Int]
        public let ids_with_special: [Int]
        public let decoded: String
    }
    public struct Greedy: Decodable, Sendable {
        public let prompt_ids: [Int]
        public let max_new_tokens: Int
        public let base: [Int]
        public let lora: [Int]
        public let prefix: [Int]
    }
    public struct AdamW: Decodable, Sendable {
        public let lr: Double
        public let betas: [Double]
        public let eps: Double
        public let weight_decay: Double
        public let max_grad_norm: Double
        public let steps: Int
        public let losses_before_each_step_then_final: [Double]
    }
    public let family: String
    public let eval_token_ids: [Int]
    public let window: Int
    public let windows: Int
    public let base_loss: Double
    public let lora_loss: Double
    public let lora_merged_loss: Double
    public let prefix_loss: Double
    public let greedy: Greedy
    public let tokenizer_cases: [TokenizerCase]
    public let adamw: AdamW
    /// Per LoRA tensor, how far PyTorch's float32 gradient is from float64's (relative to the tensor's largest entry),
    /// for the fixtures whose gradients were made in float64 (families/make_fixtures.py); nil for the others.
    public let float32_gradient_error: [String: Double]?
}
