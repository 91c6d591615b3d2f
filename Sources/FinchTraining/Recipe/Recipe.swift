/// A training recipe: every setting of a run, typed, with the defaults documented in `RecipeSchema`.
/// Recipes state only what differs from the defaults.
public struct Recipe: Equatable, Sendable {
    public enum AdapterKind: String, Sendable, CaseIterable { case lora, prefix, none }
    public enum DataFormat: String, Sendable, CaseIterable { case auto, text, jsonl, completion }
    public enum Schedule: String, Sendable, CaseIterable { case constant, linear, cosine }
    public enum Progress: String, Sendable, CaseIterable { case auto, bar, plain }
    public enum ExportType: String, Sendable, CaseIterable { case float32, float16, bfloat16 }
    public enum Initialization: String, Sendable, CaseIterable { case kaiming, gaussian }

    public enum ModelInitialization: String, Sendable, CaseIterable { case pretrained, random }

    public var model = ""
    public var modelInit: ModelInitialization = .pretrained
    public var seed: Int = 0

    public var adapterType: AdapterKind = .lora
    public var rank = 8
    public var alpha: Double = 16
    public var dropout: Double = 0
    /// Module names, or ["all-linear"].
    public var targets = ["q_proj", "v_proj"]
    public var targetRegex: String?
    public var layers: [Int]?
    public var rsLoRA = false
    /// A LoRA on embed_tokens also adapts the head tied to it (PEFT's ensure_weight_tying).
    public var ensureWeightTying = false
    /// Modules trained whole beside a LoRA adapter and saved in it (PEFT's modules_to_save).
    public var modulesToSave: [String] = []
    public var initialization: Initialization = .kaiming
    public var virtualTokens = 16
    /// Width of the prefix reparameterisation MLP; 0 trains the prefix table directly.
    public var projectionHidden = 0

    public var trainData = ""
    public var validationData: String?
    public var dataFormat: DataFormat = .auto
    public var sequenceLength = 256
    public var packing = true
    public var shuffle = true

    public var learningRate: Double = 1e-3
    public var betas: [Double] = [0.9, 0.999]
    public var epsilon: Double = 1e-8
    public var weightDecay: Double = 0
    public var schedule: Schedule = .cosine
    public var warmupSteps = 0
    public var minimumLearningRate: Double = 0
    public var maxGradNorm: Double = 1

    public var batchSize = 8
    public var gradientAccumulation = 1
    public var activationCheckpointing = false
    public var steps: Int?
    public var epochs: Double?

    public var evalEvery = 0
    public var evalBatches: Int?

    public var checkpointEvery = 0
    public var checkpointKeep = 2

    public var logEvery = 10
    public var progress: Progress = .auto

    public var outputDirectory = ""
    public var exportMerged = false
    public var exportType: ExportType = .float32

    public init() {}
}
