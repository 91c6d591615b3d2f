import Foundation
import Testing
import FinchFormats
import TestSupport
import FinchModels
import FinchNN
@testable import FinchTraining

/// How records become training windows: packing keeps a prompt and its completion in one window.
@Suite("packing")
struct PackingTests {
    /// A record of `n` tokens numbered from `first`, with its first `prompt` tokens not targets.
    static func record(_ first: Int32, _ n: Int, prompt: Int = 1) -> TokenSequence {
        TokenSequence(tokens: (0..<n).map { first + Int32($0) }, targetMask: (0..<n).map { $0 >= prompt })
    }

    @Test func wholeRecordsFillWindowsInOrder() {
        let records = [Self.record(10, 3), Self.record(20, 4), Self.record(30, 2)]
        let windows = TrainingData.packWhole(records, length: 6, pad: -1)
        #expect(windows.map(\.tokens) == [[10, 11, 12, -1, -1, -1], [20, 21, 22, 23, 30, 31]])
        #expect(windows[0].targetMask == [false, true, true, false, false, false])
        #expect(windows[1].targetMask == [false, true, true, true, false, true])
        #expect(windows.map(\.recordStarts) == [[0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 4, 4]])
    }

    @Test func onlyARecordLongerThanAWindowIsCut() {
        let records = [Self.record(100, 14, prompt: 2), Self.record(20, 3)]
        let windows = TrainingData.packWhole(records, length: 6, pad: -1)
        #expect(windows.map(\.tokens) == [
            [100, 101, 102, 103, 104, 105], [106, 107, 108, 109, 110, 111], [112, 113, 20, 21, 22, -1],
        ])
        #expect(windows[0].targetMask == [false, false, true, true, true, true])
        #expect(windows[2].targetMask == [true, true, false, true, true, false])
        // The long record's pieces each start their window; the short one after the last piece starts at 2.
        #expect(windows.map(\.recordStarts) == [[0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], [0, 0, 2, 2, 2, 2]])
    }

    /// The streaming packer (plain text) would cut the second record across the window edge; packWhole does not.
    @Test func completionFileKeepsEveryPromptWithItsCompletion() throws {
        let dir = try Fixtures.scratchDirectory()
        let lines = (0..<9).map { i in
            "{\"prompt\": \"Command: call friend \(i) now\\nJSON:\", \"completion\": \" {\\\"intent\\\":\\\"call\\\",\\\"n\\\":\(i)}\"}"
        }
        let path = "\(dir)/commands.jsonl"
        try lines.joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
        let tokenizer = try Tokenizer(path: Fixtures.path("llama-gqa", "base/tokenizer.json"))
        let eos: Int32 = 2
        let data = try TrainingData.load(path: path, format: .auto, tokenizer: tokenizer, sequenceLength: 64,
                                         packing: true, endOfText: eos)
        #expect(data.format == .completion)
        let recordLength = tokenizer.encode("Command: call friend 0 now\nJSON:", addSpecialTokens: true).count
            + tokenizer.encode(" {\"intent\":\"call\",\"n\":0}", addSpecialTokens: false).count + 1
        #expect(recordLength < 64)
        var targets = 0
        for window in data.sequences {
            #expect(window.tokens.count == 64)
            // Every window starts a record: its first token is not a target, and each run of targets ends in EOS.
            #expect(window.targetMask.first == false)
            for j in 0..<63 where window.targetMask[j] && !window.targetMask[j + 1] {
                #expect(window.tokens[j] == eos)
            }
            targets += window.targetMask.filter { $0 }.count
        }
        let completion = tokenizer.encode(" {\"intent\":\"call\",\"n\":0}", addSpecialTokens: false).count + 1
        #expect(targets == 9 * completion)
        #expect(data.sequences.count == (9 + 64 / recordLength - 1) / (64 / recordLength))
    }
}

/// Data files that would train on nothing are refused, naming the file (and line).
@Suite("data that trains on nothing")
struct EmptyTrainingDataTests {
    @Test func anEmptyJSONLinesFileIsRefused() throws {
        let dir = try Fixtures.scratchDirectory()
        try "\n\n".write(toFile: "\(dir)/empty.jsonl", atomically: true, encoding: .utf8)
        let tokenizer = try Tokenizer(path: Fixtures.path("llama-gqa", "base/tokenizer.json"))
        #expect { try TrainingData.load(path: "\(dir)/empty.jsonl", format: .auto, tokenizer: tokenizer, sequenceLength: 16,
                                        packing: true, endOfText: 2) } throws: { "\($0)" == "\(dir)/empty.jsonl: holds no records (a JSON-lines file with only blank lines)" }
    }

    /// A record whose prompt fills a window would keep no target: cut to one window (no packing) it trains on
    /// nothing, and cut across windows (packing) its prompt windows train on nothing (loss 0, gradient 0) while its
    /// completion is learned without its prompt. Refused either way, naming the line.
    @Test(arguments: [false, true])
    func aPromptThatFillsTheWindowIsRefused(packing: Bool) throws {
        let dir = try Fixtures.scratchDirectory()
        let path = "\(dir)/long.jsonl"
        let long = String(repeating: "to be or not ", count: 10)
        try ["{\"prompt\": \"short\", \"completion\": \" yes\"}", "{\"prompt\": \"\(long)\", \"completion\": \" no\"}"]
            .joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
        let tokenizer = try Tokenizer(path: Fixtures.path("llama-gqa", "base/tokenizer.json"))
        let promptLength = tokenizer.encode(long, addSpecialTokens: true).count
        #expect(promptLength > 16)
        #expect { try TrainingData.load(path: path, format: .auto, tokenizer: tokenizer, sequenceLength: 16, packing: packing, endOfText: 2) }
            throws: { "\($0)" == "\(path):2: the prompt is \(promptLength) tokens, so with data.seq_len 16 no completion token fits in a window with its prompt; raise data.seq_len or shorten the prompt" }
        // A longer window keeps it whole.
        let whole = try TrainingData.load(path: path, format: .auto, tokenizer: tokenizer, sequenceLength: 64,
                                          packing: packing, endOfText: 2)
        #expect(whole.sequences.allSatisfy { $0.targetMask.contains(true) })
    }
}

/// Records packed into one window train as if each were alone: the same summed loss as one record per sequence.
@Suite("packed records attend only to themselves")
struct PackedRecordLossTests {
    @Test(arguments: Fixtures.families)
    func packedLossEqualsTheRecordsAlone(_ family: String) throws {
        let dir = try Fixtures.scratchDirectory()
        let path = "\(dir)/records.jsonl"
        let lines = (0..<7).map { i in
            "{\"prompt\": \"\(String(repeating: "to be or not ", count: 1 + i % 3))\(i)\", \"completion\": \" that is the question \(i)\"}"
        }
        try lines.joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
        let folder = try HuggingFaceFolder.load(Fixtures.path(family, "base"))
        let tokenizer = try #require(folder.tokenizer)
        func summedLoss(packing: Bool) throws -> (loss: Double, targets: Int, windows: Int) {
            let data = try TrainingData.load(path: path, format: .auto, tokenizer: tokenizer, sequenceLength: 64,
                                             packing: packing, endOfText: 2)
            var total = 0.0, count = 0
            for s in data.sequences {
                let targets = Losses.nextTokenTargets(s.tokens, batch: 1, length: 64, mask: s.targetMask)
                let n = targets.filter { $0 != Losses.ignoreIndex }.count
                let loss = try folder.model.loss(s.tokens, batch: 1, length: 64, targets: targets, prefix: nil,
                                                 recordStarts: s.recordStarts)
                total += Double(try loss.item()) * Double(n)
                count += n
            }
            return (total, count, data.sequences.count)
        }
        let packed = try summedLoss(packing: true), alone = try summedLoss(packing: false)
        #expect(packed.windows < alone.windows, "the records should share windows")
        #expect(packed.targets == alone.targets)
        #expect(abs(packed.loss - alone.loss) <= 1e-5 * abs(alone.loss),
                "\(family): packed \(packed.loss), alone \(alone.loss)")
    }
}

/// A batch runs only as far as its last target: the loss of short unpacked records is the loss over the whole
/// padded window, computed over fewer positions.
@Suite("batches stop at their last target")
struct TrimmedBatchTests {
    @Test(arguments: [false, true])
    func theTrimmedLossIsTheWholeWindowsLoss(_ packing: Bool) throws {
        let dir = try TrainingSupport.workspace()
        let lines = (0..<6).map { i in "{\"prompt\": \"to be \(i)\", \"completion\": \" or not \(String(repeating: "to be ", count: i % 3))\"}" }
        try lines.joined(separator: "\n").write(toFile: "\(dir)/short.jsonl", atomically: true, encoding: .utf8)
        let recipe = try TrainingSupport.write("model: \(dir)/base\ndata:\n  train: \(dir)/short.jsonl\n  seq_len: 64\n  packing: \(packing)\ntraining:\n  batch_size: \(packing ? 1 : 6)\n",
                                               to: "\(dir)/r.yaml")
        let session = try TrainingSession(try RecipeLoader.load(path: recipe))
        let batch = Array(session.trainData.sequences.prefix(packing ? 1 : 6))
        let (loss, targets, positions) = try session.loss(batch)
        let last = batch.map { $0.targetMask.lastIndex(of: true)! }.max()!
        #expect(positions == batch.count * (last + 1) && last + 1 < 64, "the batch should stop at its last target")
        // The same batch over the whole window, as the model sees it without trimming.
        let tokens = batch.flatMap(\.tokens), mask = batch.flatMap(\.targetMask)
        let all = Losses.nextTokenTargets(tokens, batch: batch.count, length: 64, mask: mask)
        let starts = packing ? batch.flatMap { $0.recordStarts! } : nil
        let whole = try session.model.loss(tokens, batch: batch.count, length: 64, targets: all, prefix: nil,
                                           recordStarts: starts)
        #expect(targets == all.filter { $0 != Losses.ignoreIndex }.count)
        #expect(abs(try loss.item() - whole.item()) <= 1e-5 * abs(try whole.item()))
    }
}
