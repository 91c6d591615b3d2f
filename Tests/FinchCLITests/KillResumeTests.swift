import Foundation
import Testing
import TestSupport

/// `kill -9` of a real `finch train` at arbitrary moments (checkpoint writes included), then
/// `finch train --resume`, must end exactly where an uninterrupted run ends.
@Suite("kill -9 and resume")
struct KillResumeTests {
    /// Two recipes (straight, killed) for the same run, over the base held as `quantize` says.
    static func workspace(quantize: String = "none") throws -> String {
        let dir = try Fixtures.scratchDirectory("kill")
        let text = try String(contentsOfFile: Fixtures.path("llama-gqa", "eval.txt"), encoding: .utf8)
        try text.write(toFile: "\(dir)/train.txt", atomically: true, encoding: .utf8)
        for (name, out) in [("straight", "straight"), ("killed", "killed")] {
            let recipe = """
                model: \(Fixtures.path("llama-gqa", "base"))
                seed: 3
                quantize: \(quantize)
                adapter:
                  rank: 4
                  dropout: 0.05
                  targets: [all-linear]
                data:
                  train: \(dir)/train.txt
                  seq_len: 32
                optimizer:
                  lr: 0.01
                training:
                  batch_size: 4
                  steps: 30
                checkpoint:
                  every: 1
                  keep: 2
                logging:
                  every: 1
                  progress: plain
                output:
                  dir: \(dir)/\(out)
                """
            try recipe.write(toFile: "\(dir)/\(name).yaml", atomically: true, encoding: .utf8)
        }
        return dir
    }

    static func start(_ arguments: [String]) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: CommandLineTests.binary)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        return process
    }

    static func completeSteps(_ run: String) -> [Int] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "\(run)/checkpoints")) ?? []
        return names.filter { $0.hasPrefix("step-") && FileManager.default.fileExists(atPath: "\(run)/checkpoints/\($0)/COMPLETE") }
            .compactMap { Int($0.dropFirst(5)) }
    }

    /// Over a float base, and over one quantised to Q8_0 at load.
    @Test(arguments: ["none", "q8_0"])
    func killedAndResumedRunsEqualAStraightRun(_ quantize: String) throws {
        let dir = try Self.workspace(quantize: quantize)
        let straight = try CommandLineTests.finch(["train", "\(dir)/straight.yaml"])
        #expect(straight.status == 0, "\(straight.stderr)")

        var process = try Self.start(["train", "\(dir)/killed.yaml"])
        var kills = 0
        for delayMicroseconds: UInt32 in [0, 1_500, 4_000, 9_000] {
            // Wait for a checkpoint newer than any seen so far, then kill after a varying delay.
            let seen = Self.completeSteps("\(dir)/killed").max() ?? 0
            let deadline = Date().addingTimeInterval(60)
            while (Self.completeSteps("\(dir)/killed").max() ?? 0) <= seen && process.isRunning && Date() < deadline {
                usleep(500)
            }
            usleep(delayMicroseconds)
            if process.isRunning {
                kill(process.processIdentifier, SIGKILL)
                kills += 1
            }
            process.waitUntilExit()
            process = try Self.start(["train", "--resume", "\(dir)/killed"])
        }
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        #expect(kills >= 2, "the run finished before it could be killed; make it longer")

        let a = try Data(contentsOf: URL(fileURLWithPath: "\(dir)/straight/adapter/adapter_model.safetensors"))
        let b = try Data(contentsOf: URL(fileURLWithPath: "\(dir)/killed/adapter/adapter_model.safetensors"))
        #expect(a == b, "the adapter after \(kills) kills differs from the straight run's")
        func losses(_ run: String) throws -> [Substring] {
            try String(contentsOfFile: "\(run)/metrics.jsonl", encoding: .utf8).split(separator: "\n").filter { $0.contains("\"loss\"") }
                .map { line in line.split(separator: ",").filter { $0.contains("\"loss\"") || $0.contains("\"step\"") }.joined(separator: ",")[...] }
        }
        let la = try losses("\(dir)/straight"), lb = try losses("\(dir)/killed")
        #expect(la.count == 30)
        #expect(la == lb)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: "\(dir)/killed/checkpoints").filter { $0.hasPrefix(".partial") }
        #expect(leftovers.isEmpty)
    }
}
