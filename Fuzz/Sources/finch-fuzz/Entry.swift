import Foundation
import FinchFormats
import FinchTraining

/// A per-process folder for the files a target reads, and the fixtures the targets use.
final class Scratch {
    let root: String
    let fixtures: String
    private(set) lazy var fixtureTokenizers: [Tokenizer] = ["llama-gqa", "gpt2"].map { family in
        guard let tokenizer = try? Tokenizer(path: fixture("\(family)/base/tokenizer.json")) else {
            preconditionFailure("the fixture tokenizer of \(family) does not load (FINCH_FUZZ_FIXTURES=\(fixtures))")
        }
        return tokenizer
    }
    private(set) lazy var fixtureConfig: ModelConfig = {
        guard let config = try? ModelConfig.load(path: fixture("llama-gqa/base/config.json")) else {
            preconditionFailure("the fixture config does not load (FINCH_FUZZ_FIXTURES=\(fixtures))")
        }
        return config
    }()
    /// Thirty sequences of eight tokens, for the batch loader.
    private(set) lazy var smallData: TrainingData = {
        let path = write(Data(String(repeating: "to be or not to be, that is the question. ", count: 40).utf8),
                         to: "small.txt")
        guard let data = try? TrainingData.load(path: path, format: .text, tokenizer: fixtureTokenizers[0],
                                                sequenceLength: 8,
                                                packing: true, endOfText: 2) else { preconditionFailure("the small data does not load") }
        return data
    }()

    init() {
        root = NSTemporaryDirectory() + "finch-fuzz-\(getpid())"
        fixtures = ProcessInfo.processInfo.environment["FINCH_FUZZ_FIXTURES"] ?? "Tests/Fixtures"
        try? FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
    }

    func fixture(_ relative: String) -> String { (fixtures as NSString).appendingPathComponent(relative) }

    func folder(_ name: String) -> String {
        let path = (root as NSString).appendingPathComponent(name)
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// Writes `bytes` to `name` under the scratch folder and returns its path.
    func write(_ bytes: Data, to name: String) -> String {
        let path = (root as NSString).appendingPathComponent(name)
        guard FileManager.default.createFile(atPath: path,
                                             contents: bytes) else { preconditionFailure("cannot write \(path)") }
        return path
    }

    func copy(_ source: String, to name: String) {
        let path = (root as NSString).appendingPathComponent(name)
        guard !FileManager.default.fileExists(atPath: path) else { return }
        guard let bytes = FileManager.default.contents(atPath: source) else { preconditionFailure("cannot read \(source)") }
        _ = write(bytes, to: name)
    }
}

/// The target named by FINCH_FUZZ_TARGET, fixed for the process.
let target: FuzzTarget = {
    let name = ProcessInfo.processInfo.environment["FINCH_FUZZ_TARGET"] ?? ""
    guard let target = FuzzTarget(rawValue: name) else {
        let names = FuzzTarget.allCases.map(\.rawValue).joined(separator: ", ")
        FileHandle.standardError.write(Data("finch-fuzz: set FINCH_FUZZ_TARGET to one of: \(names)\n".utf8))
        exit(2)
    }
    return target
}()
nonisolated(unsafe) let scratch = Scratch()

/// libFuzzer's entry point: one input.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    target.run(Data(bytes: data, count: size), in: scratch)
    return 0
}
