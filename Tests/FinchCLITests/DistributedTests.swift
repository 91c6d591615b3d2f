import Foundation
import Testing
import TestSupport

enum OpenMPI {
    static let mpirun: String? = ["/usr/bin/mpirun", "/usr/local/bin/mpirun"].first { FileManager.default.isExecutableFile(atPath: $0) }
}

/// `mpirun -np N finch train`: 2 ranks give the 1-rank run bit for bit (LoRA and full fine-tuning), a run resumes
/// on another number of ranks, and `kill -9` of one rank ends the others with an error, the last checkpoint
/// resumable. Needs Open MPI (.ci/run installs it and sets FINCH_REQUIRE_MPI=1, so CI always runs these).
// One mpirun at a time: concurrent Open MPI jobs on one machine were seen to end one of them early.
@Suite("mpirun", .serialized, .enabled(if: OpenMPI.mpirun != nil || ProcessInfo.processInfo.environment["FINCH_REQUIRE_MPI"] == "1",
                          "Open MPI is not installed (apt-get install openmpi-bin libopenmpi-dev; bash .ci/run does)"))
struct DistributedTests {
    static var mpirun: String? { OpenMPI.mpirun }

    /// A recipe over the llama fixture with 3 micro-batches a step (so that 2 ranks share them unevenly), dropout,
    /// and validation.
    static func workspace(_ name: String, adapter: String, steps: Int = 6) throws -> String {
        let dir = try Fixtures.scratchDirectory(name)
        let text = try String(contentsOfFile: Fixtures.path("llama-gqa", "eval.txt"), encoding: .utf8)
        try text.write(toFile: "\(dir)/train.txt", atomically: true, encoding: .utf8)
        let keys = adapter == "lora" ? "  rank: 4\n  dropout: 0.1\n  targets: [q_proj, v_proj, down_proj]\n" : ""
        let recipe = """
            model: \(Fixtures.path("llama-gqa", "base"))
            seed: 7
            adapter:
              type: \(adapter)
            \(keys)data:
              train: \(dir)/train.txt
              validation: \(dir)/train.txt
              seq_len: 24
            optimizer:
              lr: 0.005
              weight_decay: 0.01
            training:
              batch_size: 2
              grad_accum: 3
              steps: \(steps)
            eval:
              every: 3
              max_batches: 5
            checkpoint:
              every: 2
            logging:
              every: 1
              progress: plain
            """
        try recipe.write(toFile: "\(dir)/recipe.yaml", atomically: true, encoding: .utf8)
        return dir
    }

    /// mpirun with N ranks of the test's finch, one thread each.
    static func process(ranks: Int, _ arguments: [String]) throws -> (Process, Pipe, Pipe) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try #require(mpirun, "mpirun is not installed"))
        process.arguments = ["--oversubscribe", "-np", "\(ranks)", CommandLineTests.binary] + arguments
        var environment = ProcessInfo.processInfo.environment
        environment["FINCH_THREADS"] = "1"
        environment["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
        environment["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
        // Under AddressSanitizer (scripts/sanitize) memory errors are still caught in these processes, but not leaks
        // at exit: Open MPI keeps what its plugins allocated until the process ends, and those plugins are
        // unloaded by then, so their frames cannot even be named in a suppression.
        if environment["FINCH_SANITIZER"] == "address" {
            environment["ASAN_OPTIONS"] = (environment["ASAN_OPTIONS"].map { $0 + ":" } ?? "") + "detect_leaks=0"
        }
        process.environment = environment
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        return (process, out, err)
    }

    static func run(ranks: Int, _ arguments: [String]) throws -> CommandLineTests.Run {
        let (process, out, err) = try Self.process(ranks: ranks, arguments)
        let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return CommandLineTests.Run(status: process.terminationStatus, stdout: String(decoding: o, as: UTF8.self),
                                    stderr: String(decoding: e, as: UTF8.self))
    }

    /// What a finished run leaves that must not depend on the ranks: the trained tensors and every logged number.
    static func result(_ run: String, adapter: String) throws -> (weights: Data, metrics: [String]) {
        let weights = adapter == "lora" ? "\(run)/adapter/adapter_model.safetensors"
            : "\(run)/checkpoints/\(try #require(try FileManager.default.contentsOfDirectory(atPath: "\(run)/checkpoints").max()))/trainable.safetensors"
        let metrics = try String(contentsOfFile: "\(run)/metrics.jsonl", encoding: .utf8).split(separator: "\n").map {
            // Everything but the speed.
            String($0).replacingOccurrences(of: #""tokens_per_second":[0-9.]+,?"#, with: "", options: .regularExpression)
        }
        return (try Data(contentsOf: URL(fileURLWithPath: weights)), metrics)
    }

    @Test(arguments: ["lora", "none"])
    func twoRanksGiveTheOneRankRun(_ adapter: String) throws {
        let dir = try Self.workspace("mpi-\(adapter)", adapter: adapter)
        for ranks in [1, 2] {
            let run = try Self.run(ranks: ranks, ["train", "\(dir)/recipe.yaml", "output.dir=\(dir)/np\(ranks)"])
            #expect(run.status == 0, "\(ranks) ranks: \(run.stderr)")
        }
        let one = try Self.result("\(dir)/np1", adapter: adapter), two = try Self.result("\(dir)/np2", adapter: adapter)
        #expect(one.weights == two.weights, "\(adapter): the trained tensors differ between 1 and 2 ranks")
        #expect(one.metrics == two.metrics && one.metrics.count == 6 + 2, "\(one.metrics) vs \(two.metrics)")
        // Rank 0 alone wrote the run: one log, and each line once.
        #expect(Set(two.metrics).count == two.metrics.count)
    }

    /// A run checkpointed at step 4 on one number of ranks and resumed on the other ends as the straight run.
    @Test func aRunResumesOnAnotherNumberOfRanks() throws {
        let dir = try Self.workspace("mpi-resume", adapter: "lora")
        let straight = try Self.run(ranks: 2, ["train", "\(dir)/recipe.yaml", "output.dir=\(dir)/straight"])
        #expect(straight.status == 0, "\(straight.stderr)")
        let expected = try Self.result("\(dir)/straight", adapter: "lora")
        let fm = FileManager.default
        for (first, then) in [(2, 1), (1, 2)] {
            let run = "\(dir)/from\(first)"
            let started = try Self.run(ranks: first, ["train", "\(dir)/recipe.yaml", "output.dir=\(run)"])
            #expect(started.status == 0, "\(started.stderr)")
            // Back to step 4: the last checkpoint and the final adapter removed, as if the run had stopped there.
            try fm.removeItem(atPath: "\(run)/checkpoints/step-00000006")
            try fm.removeItem(atPath: "\(run)/adapter")
            let resumed = try Self.run(ranks: then, ["train", "--resume", run])
            #expect(resumed.status == 0 && resumed.stdout.contains("resuming at step 4 of 6"), "\(resumed.stderr)")
            let result = try Self.result(run, adapter: "lora")
            #expect(result.weights == expected.weights, "\(first) ranks, then \(then): the adapter differs from the straight run")
            #expect(result.metrics == expected.metrics)
        }
    }

    /// kill -9 of rank 1: the job ends within a bounded time, rank 0 says why and where the checkpoint is, and
    /// the run resumes from it to the straight run's end.
    @Test func killingOneRankEndsTheOthersAndTheRunResumes() throws {
        let dir = try Self.workspace("mpi-kill", adapter: "lora", steps: 40)
        let (process, _, err) = try Self.process(ranks: 2, ["train", "\(dir)/recipe.yaml", "output.dir=\(dir)/killed"])
        let complete = "\(dir)/killed/checkpoints/step-00000004/COMPLETE"
        var deadline = Date().addingTimeInterval(120)
        while !FileManager.default.fileExists(atPath: complete) && process.isRunning && Date() < deadline { usleep(20_000) }
        #expect(FileManager.default.fileExists(atPath: complete), "no checkpoint at step 4")
        let victim = try #require(Self.rankProcess(1, parent: process.processIdentifier), "rank 1's process not found")
        kill(victim, SIGKILL)
        let killed = Date()
        deadline = killed.addingTimeInterval(30)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        #expect(!process.isRunning, "mpirun still running 30 s after rank 1 was killed")
        if process.isRunning { process.terminate() }
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus != 0)
        #expect(stderr.contains("rank 0: stopped because another process of this mpirun ended; the last complete checkpoint in \(dir)/killed/checkpoints resumes it"), "\(stderr)")

        let resumed = try Self.run(ranks: 2, ["train", "--resume", "\(dir)/killed"])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        let straight = try CommandLineTests.finch(["train", "\(dir)/recipe.yaml", "output.dir=\(dir)/straight"],
                                                  environment: ["FINCH_THREADS": "1"])
        #expect(straight.status == 0, "\(straight.stderr)")
        #expect(try Self.result("\(dir)/killed", adapter: "lora").weights == Self.result("\(dir)/straight", adapter: "lora").weights)
    }

    /// What a multi-process run cannot do is refused, naming the key, before anything is written.
    @Test func privacyIsRefusedUnderMpirun() throws {
        let dir = try Self.workspace("mpi-privacy", adapter: "lora")
        let run = try Self.run(ranks: 2, ["train", "\(dir)/recipe.yaml", "privacy.noise_multiplier=1", "output.dir=\(dir)/run"])
        #expect(run.status != 0)
        // Each rank finds it; the first to abort ends the job, so at least one says it.
        #expect(run.stderr.contains(" of 2: \(dir)/recipe.yaml: privacy: DP-SGD runs in one process; start it without mpirun"), "\(run.stderr)")
        #expect(!FileManager.default.fileExists(atPath: "\(dir)/run"))
    }

    /// The finch process of rank `rank` under the mpirun `parent` (Open MPI sets OMPI_COMM_WORLD_RANK for each).
    static func rankProcess(_ rank: Int, parent: Int32) -> Int32? {
        let pids = ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { Int32($0) }
        return pids.first { pid in
            guard let environment = FileManager.default.contents(atPath: "/proc/\(pid)/environ"),
                  let command = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return false }
            let variables = environment.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            return String(decoding: command, as: UTF8.self).hasPrefix(CommandLineTests.binary)
                && variables.contains("OMPI_COMM_WORLD_RANK=\(rank)")
                && variables.contains { $0.hasPrefix("OMPI_MCA_orte_hnp_uri=") || $0.hasPrefix("OMPI_COMM_WORLD_SIZE=") }
                && Self.descends(pid, from: parent)
        }
    }

    /// Whether `pid`'s chain of parents reaches `ancestor`.
    static func descends(_ pid: Int32, from ancestor: Int32) -> Bool {
        var current = pid
        for _ in 0..<16 {
            guard let stat = try? String(contentsOfFile: "/proc/\(current)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { return false }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 1, let parent = Int32(fields[1]) else { return false }
            if parent == ancestor { return true }
            if parent <= 1 { return false }
            current = parent
        }
        return false
    }
}
