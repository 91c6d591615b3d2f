import Foundation
import Testing
import TestSupport
import FinchAdapters
import FinchFormats
import FinchModels
import FinchNN
import FinchTensor
@testable import FinchTraining

/// The distillation loss against the same formula written in PyTorch (Tests/Fixtures/distill), and in a recipe.
@Suite("distillation")
struct DistillationTests {
    struct Reference: Decodable {
        let temperature: Float
        let alpha: Float
        let tokens: [Int32]
        let targets: [Int32]
        let batch: Int
        let length: Int
        let loss: Double
        let loss_alpha_0: Double
        let loss_alpha_1: Double
    }

    static func reference() throws -> Reference {
        try JSONDecoder().decode(Reference.self, from: Data(contentsOf: URL(fileURLWithPath: Fixtures.path("distill", "reference.json"))))
    }

    /// Student (llama-gqa with PEFT's LoRA) and teacher (mistral), as the fixture has them.
    static func models() throws -> (student: any CausalLanguageModel, lora: Adapter, teacher: any CausalLanguageModel) {
        let student = try HuggingFaceFolder.load(Fixtures.path("llama-gqa", "base")).model
        let lora = try PEFTFormat.load(Fixtures.path("llama-gqa", "lora"), into: student)
        let teacher = try HuggingFaceFolder.load(Fixtures.path("mistral", "base")).model
        return (student, lora, teacher)
    }

    @Test func lossAndGradientsMatchTheFormulaInPyTorch() throws {
        let r = try Self.reference()
        let (student, lora, teacher) = try Self.models()
        for (alpha, expected) in [(Float(0), r.loss_alpha_0), (1, r.loss_alpha_1)] {
            let t = try teacher.distillationTeacher(r.tokens, batch: r.batch, length: r.length, temperature: r.temperature, alpha: alpha)
            let loss = try GradientMode.withoutGradients {
                try student.loss(r.tokens, batch: r.batch, length: r.length, targets: r.targets, prefix: nil, teacher: t).item()
            }
            #expect(abs(Double(loss) - expected) <= 1e-5, "alpha \(alpha): \(loss) vs \(expected)")
        }
        let t = try teacher.distillationTeacher(r.tokens, batch: r.batch, length: r.length, temperature: r.temperature, alpha: r.alpha)
        let loss = try student.loss(r.tokens, batch: r.batch, length: r.length, targets: r.targets, prefix: nil, teacher: t)
        let value = Double(try loss.item())
        #expect(abs(value - r.loss) <= 1e-5, "\(value) vs \(r.loss)")
        try loss.backward()
        let expected = try SafetensorsFile(path: Fixtures.path("distill", "reference.safetensors"))
        var checked = 0
        for (key, tensor) in lora.trainableParameters {
            let want = try expected.floats("grad." + key)
            let got = try #require(tensor.grad, "no gradient for \(key)").scalars
            let scale = want.map(abs).max() ?? 1
            let worst = zip(got, want).map { abs($0 - $1) }.max() ?? .infinity
            #expect(worst <= 1e-5 * scale, "\(key): worst \(worst), largest entry \(scale)")
            checked += 1
        }
        #expect(checked == expected.names.count && checked > 0)
    }

    /// The teacher's head held quantised (its token table in Q8_0 blocks) gives the float head's loss for the
    /// same blocks, and a teacher with another vocabulary is refused by name.
    @Test func aQuantisedTeacherHeadAndAMismatchedOne() throws {
        let r = try Self.reference()
        let (student, _, _) = try Self.models()
        let dir = try Fixtures.scratchDirectory()
        let plain = try PretrainedModel.load(Fixtures.path("gguf", "mistral.gguf"))
        _ = try GGUFExport.write(model: plain.model, base: try #require(plain.ggufFile), to: "\(dir)/q8_0.gguf", type: .q8_0)
        var losses: [Float] = []
        for mode in [BaseQuantization.none, .keep] {
            let teacher = try PretrainedModel.load("\(dir)/q8_0.gguf", quantization: mode).model
            let t = try teacher.distillationTeacher(r.tokens, batch: r.batch, length: r.length, temperature: 2, alpha: 0.5)
            losses.append(try GradientMode.withoutGradients {
                try student.loss(r.tokens, batch: r.batch, length: r.length, targets: r.targets, prefix: nil, teacher: t).item()
            })
        }
        #expect(abs(losses[0] - losses[1]) <= 1e-4 * abs(losses[0]), "\(losses)")
        let hidden = Tensor.zeros([r.tokens.count, 8])
        let small = try DistillationTeacher(hidden: hidden, weight: Tensor.zeros([10, 8]), temperature: 1, alpha: 0.5)
        #expect { try student.loss(r.tokens, batch: r.batch, length: r.length, targets: r.targets, prefix: nil, teacher: small) } throws: {
            "\($0)".contains("the teacher's vocabulary has 10 entries, the student's 768")
        }
    }

    static func recipe(_ dir: String, adapter: String = "lora", extra: String) -> String {
        TrainingSupport.recipe(dir, adapter: adapter, steps: 8, extra: extra)
    }

    /// Prefix tuning, DoRA and full fine-tuning distil too: each run trains, and its losses are not the plain run's.
    @Test(arguments: ["prefix", "dora", "none"])
    func everyAdapterKindDistils(_ adapter: String) throws {
        let dir = try TrainingSupport.workspace("distill-\(adapter)")
        for (name, distill) in [("plain", ""), ("taught", "distill:\n  teacher: \(Fixtures.path("mistral", "base"))\n  temperature: 2\n")] {
            let path = try TrainingSupport.write(Self.recipe(dir, adapter: adapter, extra: "\(distill)output:\n  dir: \(dir)/\(name)\n"),
                                                 to: "\(dir)/\(name).yaml")
            try Trainer.start(try RecipeLoader.load(path: path)).run(stopAfter: 3)
        }
        let plain = try TrainingSupport.losses("\(dir)/plain"), taught = try TrainingSupport.losses("\(dir)/taught")
        #expect(plain.count == 3 && taught.count == 3 && plain != taught, "\(adapter): \(plain) vs \(taught)")
    }

    /// In a recipe: alpha 0 is the plain run bit for bit; with a teacher the run trains differently and resumes
    /// exactly; a teacher with another tokenizer is refused naming the key.
    @Test func aRecipeDistilsResumesExactlyAndAlphaZeroIsThePlainRun() throws {
        let dir = try TrainingSupport.workspace("distill")
        let teacher = Fixtures.path("mistral", "base")
        func run(_ name: String, _ distill: String, stopAfter: Int? = nil) throws {
            let path = try TrainingSupport.write(Self.recipe(dir, extra: "\(distill)output:\n  dir: \(dir)/\(name)\n"), to: "\(dir)/\(name).yaml")
            try Trainer.start(try RecipeLoader.load(path: path)).run(stopAfter: stopAfter)
        }
        try run("plain", "")
        try run("alpha0", "distill:\n  teacher: \(teacher)\n  alpha: 0\n")
        let adapterFile = "adapter/adapter_model.safetensors"
        #expect(try TrainingSupport.bytes("\(dir)/plain/\(adapterFile)") == TrainingSupport.bytes("\(dir)/alpha0/\(adapterFile)"))
        #expect(try TrainingSupport.losses("\(dir)/plain") == TrainingSupport.losses("\(dir)/alpha0"))
        let distill = "distill:\n  teacher: \(teacher)\n  temperature: 2\n  alpha: 0.5\n"
        try run("straight", distill)
        try run("paused", distill, stopAfter: 3)
        try Trainer.resume(runDirectory: "\(dir)/paused").run()
        #expect(try TrainingSupport.bytes("\(dir)/straight/\(adapterFile)") == TrainingSupport.bytes("\(dir)/paused/\(adapterFile)"))
        let straight = try TrainingSupport.losses("\(dir)/straight")
        #expect(straight == (try TrainingSupport.losses("\(dir)/paused")) && straight.count == 8)
        #expect(straight != (try TrainingSupport.losses("\(dir)/plain")))

        let other = try TrainingSupport.write(Self.recipe(dir, extra: "distill:\n  teacher: \(Fixtures.path("gpt2", "base"))\noutput:\n  dir: \(dir)/other\n"), to: "\(dir)/other.yaml")
        #expect { try Trainer.start(try RecipeLoader.load(path: other)) } throws: {
            let text = "\($0)"
            return text.contains("distill.teacher:") && text.contains("teacher and student must share")
        }
    }
}
