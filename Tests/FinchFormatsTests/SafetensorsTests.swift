import Foundation
import Testing
import TestSupport
@testable import FinchFormats

@Suite("safetensors reader and writer")
struct SafetensorsTests {
    /// A file from a hand-written header and data section.
    static func file(header: String, data: [UInt8], in dir: String, name: String = "t.safetensors") -> String {
        file(headerBytes: Array(header.utf8), data: data, in: dir, name: name)
    }

    static func file(headerBytes: [UInt8], data: [UInt8], in dir: String, name: String = "t.safetensors") -> String {
        var bytes = withUnsafeBytes(of: UInt64(headerBytes.count).littleEndian) { Array($0) }
        bytes += headerBytes + data
        let path = "\(dir)/\(name)"
        FileManager.default.createFile(atPath: path, contents: Data(bytes))
        return path
    }

    static func expectRefused(_ path: String, _ fragment: String, sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            _ = try SafetensorsFile(path: path)
            Issue.record("accepted a bad file (expected '\(fragment)')", sourceLocation: sourceLocation)
        } catch let error as FormatError {
            #expect(error.file == path, sourceLocation: sourceLocation)
            #expect(error.message.contains(fragment), "\(error)", sourceLocation: sourceLocation)
        } catch {
            Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
        }
    }

    @Test func readsTheFixtureModels() throws {
        let f = try SafetensorsFile(path: Fixtures.path("llama-gqa", "base/model.safetensors"))
        #expect(f.metadata == ["format": "pt"])
        #expect(f.entry(named: "model.layers.0.self_attn.k_proj.weight")?.shape == [32, 64])
        #expect(f.entry(named: "model.layers.0.self_attn.k_proj.weight")?.dtype == .f32)
        #expect(f.entries.count == 21)
    }

    @Test func writesAndReadsBackEveryFloatType() throws {
        let dir = try Fixtures.scratchDirectory()
        let values: [Float] = [0, 1, -2.5, 3.140625, 65504, 1e-3, -0.0, 7]
        let path = "\(dir)/out.safetensors"
        try SafetensorsWriter.write([
            .init(name: "a.weight", shape: [2, 4], values: values),
            .init(name: "b", shape: [8], values: values, dtype: .f16),
            .init(name: "c", shape: [4, 2], values: values, dtype: .bf16),
            .init(name: "empty", shape: [0, 3], values: []),
        ], metadata: ["format": "pt", "note": "quote \" and \\ kept"], to: path)
        let f = try SafetensorsFile(path: path)
        #expect(f.metadata["note"] == "quote \" and \\ kept")
        #expect(try f.floats("a.weight") == values)
        #expect(try f.floats("b") == values.map { Float(Float16($0)) })
        #expect(try f.floats("c") == [0, 1, -2.5, 3.140625, 65536, 0.00099945068359375, -0.0, 7])
        #expect(f.entry(named: "empty")?.shape == [0, 3])
        // The header is padded to a multiple of 8 bytes, as the Python library writes it.
        let header = try Data(contentsOf: URL(fileURLWithPath: path)).prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        #expect(header % 8 == 0)
    }

    @Test func refusesMalformedFilesByName() throws {
        let dir = try Fixtures.scratchDirectory()
        let eight = [UInt8](repeating: 0, count: 8)
        // Truncated: fewer than 8 bytes.
        let tiny = "\(dir)/tiny.safetensors"
        FileManager.default.createFile(atPath: tiny, contents: Data([1, 2, 3]))
        Self.expectRefused(tiny, "truncated")
        // Header length pointing past the end of the file.
        let past = "\(dir)/past.safetensors"
        FileManager.default.createFile(atPath: past, contents: Data(withUnsafeBytes(of: UInt64(4096).littleEndian) { Array($0) } + [0x7B, 0x7D]))
        Self.expectRefused(past, "runs past the end")
        // Header over 100 MB.
        let huge = "\(dir)/huge.safetensors"
        FileManager.default.createFile(atPath: huge, contents: Data(withUnsafeBytes(of: UInt64(200_000_000).littleEndian) { Array($0) }))
        Self.expectRefused(huge, "100 MB")
        // Tensor data cut short.
        Self.expectRefused(Self.file(header: #"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, data: eight,
                                     in: dir),
                           "truncated: tensors end at byte")
        // Overlapping offsets.
        Self.expectRefused(Self.file(header: #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                                     data: eight + eight, in: dir), "overlaps")
        // A hole between tensors.
        Self.expectRefused(Self.file(header: #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#,
                                     data: eight + [0, 0, 0, 0], in: dir), "hole")
        // Byte length not equal to shape × dtype size.
        Self.expectRefused(Self.file(header: #"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, data: eight,
                                     in: dir), "needs 12 bytes")
        // Extra bytes after the last tensor.
        Self.expectRefused(Self.file(header: #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, data: eight,
                                     in: dir), "unexpected bytes")
        // Unknown dtype, bad JSON, non-UTF-8 header, bad metadata.
        Self.expectRefused(Self.file(header: #"{"a":{"dtype":"F42","shape":[1],"data_offsets":[0,4]}}"#,
                                     data: [0, 0, 0, 0], in: dir), "unknown dtype 'F42'")
        Self.expectRefused(Self.file(header: #"{"a":"#, data: [], in: dir), "not valid JSON")
        Self.expectRefused(Self.file(headerBytes: [0x7B, 0xFF, 0x7D], data: [], in: dir), "not valid UTF-8")
        Self.expectRefused(Self.file(header: #"{"__metadata__":{"a":1}}"#, data: [], in: dir), "__metadata__")
    }

    /// Sizes past what an Int holds are refused by name, not trapped on: a header length of 2^63 or more (byte 7
    /// set), a shape whose byte size overflows, and offsets whose end overflows past the data section's start.
    @Test func refusesSizesPastSixtyFourBits() throws {
        let dir = try Fixtures.scratchDirectory()
        for (name, length) in [("top", UInt64(1) << 63), ("max", UInt64.max)] {
            let path = "\(dir)/\(name).safetensors"
            FileManager.default.createFile(atPath: path, contents: Data(withUnsafeBytes(of: length.littleEndian) { Array($0) } + [0x7B, 0x7D]))
            Self.expectRefused(path, "header length \(length) exceeds the 100 MB limit")
        }
        Self.expectRefused(Self.file(header: #"{"a":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}}"#, data: [], in: dir),
                           "tensor 'a': shape [4611686018427387904] overflows")
        Self.expectRefused(Self.file(header: #"{"a":{"dtype":"U8","shape":[9223372036854775807],"data_offsets":[0,9223372036854775807]}}"#, data: [], in: dir),
                           "truncated: tensors end past 2^63")
    }

    /// Weights holding NaN or infinity are refused by tensor name when read as weights.
    @Test func nonFiniteWeightsAreRefusedByName() throws {
        let dir = try Fixtures.scratchDirectory()
        try SafetensorsWriter.write([.init(name: "w", shape: [3], values: [1, .infinity, 2]),
                                     .init(name: "n", shape: [1], values: [.nan])],
                                    to: "\(dir)/w.safetensors")
        let file = try SafetensorsFile(path: "\(dir)/w.safetensors")
        #expect(try file.floats("w")[1] == .infinity)  // read as data, the value is what the file holds
        var out = [Float](repeating: 0, count: 3)
        #expect { try out.withUnsafeMutableBufferPointer { try file.readFiniteFloats("w", into: $0) } } throws: {
            "\($0)" == "\(dir)/w.safetensors: tensor 'w' holds NaN or infinite values"
        }
    }

    @Test func refusesDtypesFinchDoesNotComputeInByName() throws {
        let dir = try Fixtures.scratchDirectory()
        let path = Self.file(header: #"{"ids":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}"#,
                             data: [UInt8](repeating: 0, count: 8), in: dir)
        let f = try SafetensorsFile(path: path)
        #expect(throws: FormatError(file: path, "tensor 'ids' has dtype I64; Finch reads F32, F16 and BF16")) { try f.floats("ids") }
        #expect(throws: FormatError(file: path, "no tensor named 'missing'")) { try f.floats("missing") }
    }

    @Test func shardedCheckpointsLoadThroughTheirIndex() throws {
        let dir = try Fixtures.scratchDirectory()
        try SafetensorsWriter.write([.init(name: "a", shape: [2], values: [1, 2])],
                                    to: "\(dir)/model-00001-of-00002.safetensors")
        try SafetensorsWriter.write([.init(name: "b", shape: [1], values: [3])],
                                    to: "\(dir)/model-00002-of-00002.safetensors")
        let index = #"{"metadata":{"total_size":12},"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}}"#
        FileManager.default.createFile(atPath: "\(dir)/model.safetensors.index.json", contents: Data(index.utf8))
        let checkpoint = try SafetensorsCheckpoint(folder: dir)
        #expect(checkpoint.names == ["a", "b"])
        var b: [Float] = [0]
        try b.withUnsafeMutableBufferPointer { try checkpoint.readFloats("b", into: $0) }
        #expect(b == [3])
        #expect(throws: FormatError.self) {
            var x: [Float] = [0]
            try x.withUnsafeMutableBufferPointer { try checkpoint.readFloats("c", into: $0) }
        }
    }
}
