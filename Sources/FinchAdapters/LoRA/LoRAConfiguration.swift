import Foundation

/// What a LoRA adapter targets and how it is scaled: the fields of PEFT's `LoraConfig` Finch implements.
public struct LoRAConfiguration: Sendable, Equatable {
    public enum Targets: Sendable, Equatable {
        /// Module names, each matching a module whose dotted path ends in that name (`q_proj`).
        case names([String])
        /// Every Linear except the output head.
        case allLinear
        /// A regular expression the whole dotted module path must match.
        case pattern(String)
    }

    public var rank: Int
    /// The update is scaled by alpha / rank (alpha / √rank with rsLoRA).
    public var alpha: Double
    /// Dropout on the adapter's input while training.
    public var dropout: Double
    public var targets: Targets
    public var useRSLoRA: Bool
    /// DoRA (PEFT's `use_dora`): a trained magnitude per output row over the normalised LoRA-updated weight.
    public var useDoRA = false
    /// Only these layer indices get adapters (nil: all).
    public var layersToTransform: [Int]?
    /// Per-module rank and alpha overrides, keyed by a pattern matched at the end of the module path.
    public var rankPattern: [String: Int]
    public var alphaPattern: [String: Double]
    /// PEFT's `fan_in_fan_out`: true when the targeted weights are stored [in, out] in the model's files (GPT-2's
    /// Conv1D). Injection sets it from the model's layout; Finch holds every weight as [out, in], so its own
    /// arithmetic does not read it.
    public var fanInFanOut: Bool
    public var initialization: LoRALinear.Initialization
    /// An adapted embedding also changes the head tied to it (PEFT's `ensure_weight_tying`).
    public var ensureWeightTying = false
    /// Modules trained whole beside the adapter and saved in it (PEFT's `modules_to_save`), e.g. embed_tokens.
    public var modulesToSave: [String] = []

    public init(rank: Int = 8, alpha: Double = 16, dropout: Double = 0, targets: Targets = .names(["q_proj", "v_proj"]),
                useRSLoRA: Bool = false, layersToTransform: [Int]? = nil, rankPattern: [String: Int] = [:],
                alphaPattern: [String: Double] = [:], fanInFanOut: Bool = false,
                initialization: LoRALinear.Initialization = .kaimingUniform) {
        self.rank = rank
        self.alpha = alpha
        self.dropout = dropout
        self.targets = targets
        self.useRSLoRA = useRSLoRA
        self.layersToTransform = layersToTransform
        self.rankPattern = rankPattern
        self.alphaPattern = alphaPattern
        self.fanInFanOut = fanInFanOut
        self.initialization = initialization
    }

    /// Rank and alpha for one module path, after `rank_pattern` / `alpha_pattern`.
    func rankAndAlpha(for path: String) -> (Int, Float) {
        let r = Self.patternValue(rankPattern, path) ?? rank
        let a = Self.patternValue(alphaPattern, path) ?? alpha
        return (r, Float(a))
    }

    /// PEFT's rule: the first key `k` for which the path matches `(.*\.)?k$`.
    static func patternValue<T>(_ patterns: [String: T], _ path: String) -> T? {
        for key in patterns.keys.sorted() {
            if let regex = try? NSRegularExpression(pattern: "^(.*\\.)?(\(key))$"),
               regex.firstMatch(in: path, range: NSRange(path.startIndex..., in: path)) != nil {
                return patterns[key]
            }
        }
        return nil
    }
}
