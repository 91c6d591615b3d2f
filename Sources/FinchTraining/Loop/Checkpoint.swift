import Foundation
import FinchAdapters
import FinchFormats
import FinchTensor

/// What a checkpoint holds besides tensors.
public struct CheckpointState: Codable, Equatable, Sendable {
    /// Optimizer steps completed.
    public var step: Int
    public var cursor: DataCursor
    /// LoRA dropout generator states by module path.
    public var generators: [String: [UInt64]]
    public var recipeHash: String
    public var learningRate: Double
    /// `TrainingData.fingerprint` of the training data (nil in checkpoints written before it was kept).
    public var dataFingerprint: String? = nil
    /// A private run's accountant: the (q, σ, steps) it has counted (nil for a run without privacy).
    public var privacy: RDPAccountant? = nil
}

extension CheckpointState {
    /// Decodes state.json and checks what a resumed run indexes with: a step within the run, a data position
    /// that is not negative, generator states that can seed a generator.
    public static func read(_ data: Data, file: String, totalSteps: Int) throws -> CheckpointState {
        let state: CheckpointState
        do {
            state = try JSONDecoder().decode(CheckpointState.self, from: data)
        } catch {
            throw RecipeError(file: file, "cannot be read as a Finch checkpoint state")
        }
        guard state.step >= 0 else { throw RecipeError(file: file, "step must be 0 or more, got \(state.step)") }
        guard state.step <= totalSteps else {
            throw RecipeError(file: file, "step \(state.step) is past the recipe's last step \(totalSteps) (training.steps or training.epochs); nothing is left to train")
        }
        // A position past the data's end is the next epoch's start (resumed on smaller data, as allowed).
        guard state.cursor.epoch >= 0, state.cursor.position >= 0 else {
            throw RecipeError(file: file, "cursor (epoch \(state.cursor.epoch), position \(state.cursor.position)) must not be negative")
        }
        guard state.learningRate.isFinite else { throw RecipeError(file: file, "learningRate must be a finite number") }
        for (path, words) in state.generators.sorted(by: { $0.key < $1.key }) where words.count != 4 || words.allSatisfy({ $0 == 0 }) {
            throw RecipeError(file: file, "generator state of '\(path)' must be 4 words, not all zero")
        }
        return state
    }
}

/// `checkpoints/step-NNNNNNNN/` in a run directory: trainable tensors, optimizer moments, state, the
/// resolved recipe and (for adapters) the adapter in PEFT format. Written into a temporary directory,
/// flushed, `COMPLETE` written last, then renamed into place; only then are old checkpoints removed.
public enum Checkpoint {
    public static let completeMarker = "COMPLETE"

    public static func directoryName(step: Int) -> String { String(format: "step-%08d", step) }

    static func write(session: TrainingSession, state: CheckpointState, runDirectory: String) throws -> String {
        let fm = FileManager.default
        let parent = (runDirectory as NSString).appendingPathComponent("checkpoints")
        try Folder.create(parent)
        let final = (parent as NSString).appendingPathComponent(directoryName(step: state.step))
        let temporary = (parent as NSString).appendingPathComponent(".partial-" + directoryName(step: state.step))
        if fm.fileExists(atPath: temporary) { try fm.removeItem(atPath: temporary) }
        try Folder.create(temporary)
        do {
            try writeContents(session: session, state: state, into: temporary)
        } catch {
            // A half-written checkpoint (a full disk) is removed; the complete ones before it stay as they were.
            try? fm.removeItem(atPath: temporary)
            throw error
        }
        if fm.fileExists(atPath: final) { try fm.removeItem(atPath: final) }
        guard rename(temporary, final) == 0 else {
            throw RecipeError(file: final, "cannot move the checkpoint into place: \(String(cString: strerror(errno)))")
        }
        syncDirectory(parent)
        try prune(parent: parent, keep: session.recipe.checkpointKeep)
        return final
    }

    /// Everything but the move into place, `COMPLETE` last.
    private static func writeContents(session: TrainingSession, state: CheckpointState, into temporary: String) throws {
        try SafetensorsWriter.write(session.trainable.map { .init(name: $0.name, tensor: $0.tensor) },
                                    metadata: ["format": "finch"], to: "\(temporary)/trainable.safetensors")
        var moments: [SafetensorsWriter.Item] = []
        for (name, t) in session.trainable {
            guard let m = session.optimizer.moments[name] else { continue }
            guard m.first.shape == t.shape, m.second.shape == t.shape else {
                throw RecipeError(file: temporary, "the optimizer's moments for '\(name)' have shape \(m.first.shape), not the parameter's \(t.shape)")
            }
            moments.append(.init(name: "exp_avg." + name, tensor: m.first))
            moments.append(.init(name: "exp_avg_sq." + name, tensor: m.second))
        }
        try SafetensorsWriter.write(moments,
                                    metadata: ["format": "finch", "optimizer": "AdamW",
                                               "step": "\(session.optimizer.step)"],
                                    to: "\(temporary)/optimizer.safetensors")
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try AtomicFile.write(try encoder.encode(state), to: "\(temporary)/state.json")
        try AtomicFile.write(Data(session.loaded.resolvedYAML.utf8), to: "\(temporary)/recipe.yaml")
        if let adapter = session.adapter {
            try PEFTFormat.save(adapter, model: session.model, to: "\(temporary)/adapter",
                                baseModel: session.recipe.model)
        }
        try AtomicFile.write(Data("step \(state.step)\n".utf8), to: "\(temporary)/\(completeMarker)")
        syncDirectory(temporary)
    }

    /// Complete checkpoints, oldest first, as (step, path).
    public static func complete(runDirectory: String) -> [(step: Int, path: String)] {
        let parent = (runDirectory as NSString).appendingPathComponent("checkpoints")
        let names = (try? FileManager.default.contentsOfDirectory(atPath: parent)) ?? []
        return names.compactMap { name -> (Int, String)? in
            guard name.hasPrefix("step-"), let step = Int(name.dropFirst(5)) else { return nil }
            let path = (parent as NSString).appendingPathComponent(name)
            guard FileManager.default.fileExists(atPath: (path as NSString).appendingPathComponent(completeMarker)) else { return nil }
            return (step, path)
        }.sorted { $0.0 < $1.0 }
    }

    static func prune(parent: String, keep: Int) throws {
        let all = complete(runDirectory: (parent as NSString).deletingLastPathComponent)
        for old in all.dropLast(keep) { try FileManager.default.removeItem(atPath: old.path) }
    }

    /// Removes leftovers of interrupted writes.
    static func removePartial(runDirectory: String) {
        let parent = (runDirectory as NSString).appendingPathComponent("checkpoints")
        for name in (try? FileManager.default.contentsOfDirectory(atPath: parent)) ?? [] {
            let path = (parent as NSString).appendingPathComponent(name)
            let incomplete = name.hasPrefix("step-") && !FileManager.default.fileExists(atPath: (path as NSString).appendingPathComponent(completeMarker))
            if name.hasPrefix(".partial-") || incomplete { try? FileManager.default.removeItem(atPath: path) }
        }
    }

    /// Puts a checkpoint's tensors, moments and generator states back into `session`.
    static func restore(_ path: String, into session: TrainingSession) throws -> CheckpointState {
        guard let stateData = FileManager.default.contents(atPath: "\(path)/state.json") else {
            throw RecipeError(file: "\(path)/state.json",
                              "missing or unreadable (was the run directory changed while this ran?)")
        }
        let state = try CheckpointState.read(stateData, file: "\(path)/state.json", totalSteps: session.totalSteps)
        let weights = try SafetensorsFile(path: "\(path)/trainable.safetensors")
        let optimizer = try SafetensorsFile(path: "\(path)/optimizer.safetensors")
        var saved: [String: (first: [Float], second: [Float])] = [:]
        for (name, tensor) in session.trainable {
            guard let entry = weights.entry(named: name), entry.shape == tensor.shape else {
                throw RecipeError(file: weights.path,
                                  "tensor '\(name)' is missing or has another shape than \(tensor.shape)")
            }
            try weights.readFiniteFloats(name, into: tensor.storage.buffer)
            // Shapes, not only counts: a transposed moment has the right number of values in the wrong places.
            for key in ["exp_avg." + name, "exp_avg_sq." + name] {
                guard let entry = optimizer.entry(named: key), entry.shape == tensor.shape else {
                    throw RecipeError(file: optimizer.path,
                                      "tensor '\(key)' is missing or has another shape than \(tensor.shape)")
                }
            }
            saved[name] = (try optimizer.floats("exp_avg." + name), try optimizer.floats("exp_avg_sq." + name))
        }
        try session.optimizer.restore(step: state.step, moments: saved)
        try session.adapter?.restoreRandomStates(state.generators)
        return state
    }

    static func syncDirectory(_ path: String) {
        let fd = open(path, O_RDONLY)
        if fd >= 0 {
            fsync(fd)
            close(fd)
        }
    }
}
