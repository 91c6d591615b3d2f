import FinchFormats
import FinchModels
import FinchAdapters

/// A training recipe: every setting of a run, typed, with the defaults documented in `RecipeSchema`.
/// Recipes state only what differs from the defaults.
public struct Recipe: Equatable, Sendable {
    public enum DataFormat: String, Sendable, CaseIterable { case auto, text, jsonl, completion, chat }
    public enum Schedule: String, Sendable, CaseIterable { case constant, linear, cosine }
    public enum Progress: String, Sendable, CaseIterable { case auto, bar, plain }

    public enum LossScale: String, Sendable, CaseIterable { case linear, log }
    public enum ExportType: String, Sendable, CaseIterable { case float32, float16, bfloat16 }

    public enum ModelInitialization: String, Sendable, CaseIterable { case pretrained, random }

    public var model = ""
    public var modelInit: ModelInitialization = .pretrained
    public var quantize: BaseQuantization = .none
    public var seed: Int = 0

    /// The adapter and its settings (LoRA's `adapter.rank` lives in its `LoRAConfiguration`, and so on).
    public var adapter: AdapterSpec = .lora(LoRAConfiguration())

    public var trainData = ""
    public var validationData: String?
    public var dataFormat: DataFormat = .auto
    /// Chat data: which assistant replies train.
    public var chatLoss: ChatFormat.Loss = .assistant
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

    /// Distillation from a frozen teacher (nil: none): alpha · T² · KL(teacher_T ‖ student_T) + (1 − alpha) · CE.
    public var distillTeacher: String?
    /// A PEFT adapter applied to the teacher before it teaches.
    public var distillTeacherAdapter: String?
    public var distillTemperature: Double = 1
    public var distillAlpha: Double = 0.5

    /// DP-SGD (on when a noise multiplier or a target ε is given): each example's gradient clipped to
    /// `privacyMaxGradNorm`, Gaussian noise of σ · that norm on the sum, Poisson-sampled batches.
    public var privacyNoiseMultiplier: Double?
    public var privacyTargetEpsilon: Double?
    public var privacyMaxGradNorm: Double = 1
    /// δ of the (ε, δ) guarantee (nil: 1 / the number of training examples).
    public var privacyDelta: Double?
    public var privacyEnabled: Bool { privacyNoiseMultiplier != nil || privacyTargetEpsilon != nil }

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
    public var lossScale: LossScale = .linear

    public var outputDirectory = ""
    public var exportMerged = false
    public var exportType: ExportType = .float32

    public init() {}
}
