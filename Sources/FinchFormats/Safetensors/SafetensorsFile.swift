import Foundation

/// One tensor's record in a safetensors header.
public struct SafetensorsEntry: Sendable, Equatable {
    public let name: String
    public let dtype: SafetensorsDType
    public let shape: [Int]
    /// Byte range within the data section (after the 8-byte length and the header).
    public let dataRange: Range<Int>

    public var elementCount: Int { shape.reduce(1, *) }
}

/// A safetensors file, memory-mapped and validated as the reference implementation validates it:
/// an 8-byte little-endian header length, a header of at most 100 MB of UTF-8 JSON, tensor byte ranges
/// sorted, contiguous from 0 with no holes or overlaps, each exactly shape × dtype size long, and the
/// file ending where the last tensor ends.
public final class SafetensorsFile: @unchecked Sendable {
    public static let maximumHeaderBytes = 100_000_000

    public let path: String
    public let metadata: [String: String]
    /// Entries in file order.
    public let entries: [SafetensorsEntry]
    private let index: [String: Int]
    private let file: MappedFile
    private let dataStart: Int

    public init(path: String) throws {
        let file = try MappedFile(path: path)
        self.file = file
        self.path = path
        let bytes = file.bytes
        guard bytes.count >= 8 else {
            throw FormatError(file: path, "truncated: \(bytes.count) bytes, too short for the 8-byte header length")
        }
        // Compared as UInt64 first: a length of 2^63 or more has no Int.
        let storedLength = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
        guard storedLength <= UInt64(Self.maximumHeaderBytes) else {
            throw FormatError(file: path, "header length \(storedLength) exceeds the 100 MB limit")
        }
        let headerLength = Int(storedLength)
        guard 8 + headerLength <= bytes.count else {
            throw FormatError(file: path, "truncated: header length \(headerLength) runs past the end of the \(bytes.count)-byte file")
        }
        let headerBytes = UnsafeRawBufferPointer(rebasing: bytes[8..<(8 + headerLength)])
        guard let headerText = String(validating: headerBytes, as: UTF8.self) else {
            throw FormatError(file: path, "header is not valid UTF-8")
        }
        guard headerText.first == "{" else {
            throw FormatError(file: path, "header does not start with '{'")
        }
        let json: JSONValue
        do {
            json = try JSONValue.parse(Data(headerText.utf8), file: path)
        } catch {
            throw FormatError(file: path, "header is not valid JSON")
        }
        guard let object = json.object else {
            throw FormatError(file: path, "header is not a JSON object")
        }
        var metadata: [String: String] = [:]
        var entries: [SafetensorsEntry] = []
        for (name, value) in object {
            if name == "__metadata__" {
                guard let m = value.object, m.values.allSatisfy({ $0.string != nil }) else {
                    throw FormatError(file: path, "__metadata__ must map strings to strings")
                }
                metadata = m.mapValues { $0.string! }
                continue
            }
            entries.append(try Self.entry(name, value, path: path))
        }
        entries.sort { ($0.dataRange.lowerBound, $0.dataRange.upperBound) < ($1.dataRange.lowerBound, $1.dataRange.upperBound) }
        var end = 0
        for e in entries {
            guard e.dataRange.lowerBound == end else {
                let problem = e.dataRange.lowerBound < end ? "overlaps the tensor before it" : "leaves a hole before it"
                throw FormatError(file: path, "tensor '\(e.name)' starts at byte \(e.dataRange.lowerBound) and \(problem) (expected \(end))")
            }
            end = e.dataRange.upperBound
        }
        let dataStart = 8 + headerLength
        guard end == bytes.count - dataStart else {
            if end > bytes.count - dataStart {
                let last = end.addingReportingOverflow(dataStart)
                let byte = last.overflow ? "past 2^63" : "at byte \(last.partialValue)"
                throw FormatError(file: path, "truncated: tensors end \(byte) but the file has \(bytes.count) bytes")
            }
            throw FormatError(file: path, "\(bytes.count - dataStart - end) unexpected bytes after the last tensor")
        }
        self.metadata = metadata
        self.entries = entries
        self.dataStart = dataStart
        self.index = Dictionary(uniqueKeysWithValues: entries.enumerated().map { ($1.name, $0) })
    }

    private static func entry(_ name: String, _ value: JSONValue, path: String) throws -> SafetensorsEntry {
        guard let fields = value.object else {
            throw FormatError(file: path, "tensor '\(name)': expected an object with dtype, shape and data_offsets")
        }
        guard let dtypeName = fields["dtype"]?.string else {
            throw FormatError(file: path, "tensor '\(name)': missing dtype")
        }
        guard let dtype = SafetensorsDType(rawValue: dtypeName) else {
            throw FormatError(file: path, "tensor '\(name)': unknown dtype '\(dtypeName)'")
        }
        guard let shape = integers(fields["shape"]), shape.allSatisfy({ $0 >= 0 }) else {
            throw FormatError(file: path, "tensor '\(name)': shape must be a list of non-negative integers")
        }
        guard let offsets = integers(fields["data_offsets"]), offsets.count == 2, offsets[0] >= 0, offsets[0] <= offsets[1] else {
            throw FormatError(file: path,
                              "tensor '\(name)': data_offsets must be two integers [begin, end] with begin ≤ end")
        }
        var elements = 1
        for d in shape {
            let (product, overflow) = elements.multipliedReportingOverflow(by: d)
            guard !overflow else { throw FormatError(file: path, "tensor '\(name)': shape \(shape) overflows") }
            elements = product
        }
        let (expected, tooLarge) = elements.multipliedReportingOverflow(by: dtype.byteSize)
        guard !tooLarge else { throw FormatError(file: path, "tensor '\(name)': shape \(shape) overflows") }
        guard offsets[1] - offsets[0] == expected else {
            throw FormatError(
                file: path,
                "tensor '\(name)': \(dtypeName) \(shape) needs \(expected) bytes but data_offsets \(offsets) hold \(offsets[1] - offsets[0])")
        }
        return SafetensorsEntry(name: name, dtype: dtype, shape: shape, dataRange: offsets[0]..<offsets[1])
    }

    private static func integers(_ value: JSONValue?) -> [Int]? {
        guard let list = value?.array else { return nil }
        let out = list.compactMap(\.int)
        return out.count == list.count ? out : nil
    }

    public var names: [String] { entries.map(\.name) }

    public func entry(named name: String) -> SafetensorsEntry? {
        index[name].map { entries[$0] }
    }

    /// The raw bytes of a tensor, straight from the map.
    public func rawBytes(_ entry: SafetensorsEntry) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: file.bytes[(dataStart + entry.dataRange.lowerBound)..<(dataStart + entry.dataRange.upperBound)])
    }

    /// Converts tensor `name` to float32 into `destination` (exactly its element count).
    /// - Throws: when the tensor is missing, its dtype is not F32/F16/BF16, or the destination size differs.
    public func readFloats(_ name: String, into destination: UnsafeMutableBufferPointer<Float>) throws {
        guard let e = entry(named: name) else { throw FormatError(file: path, "no tensor named '\(name)'") }
        guard e.dtype.isLoadable else {
            throw FormatError(file: path,
                              "tensor '\(name)' has dtype \(e.dtype.rawValue); Finch reads F32, F16 and BF16")
        }
        guard destination.count == e.elementCount else {
            throw FormatError(file: path,
                              "tensor '\(name)' has \(e.elementCount) elements, expected \(destination.count)")
        }
        DTypeConversion.toFloat32(rawBytes(e), dtype: e.dtype, into: destination)
    }

    /// As `readFloats`, for weights: a NaN or an infinity in one makes every loss and every generated token
    /// meaningless, so the tensor is refused by name.
    public func readFiniteFloats(_ name: String, into destination: UnsafeMutableBufferPointer<Float>) throws {
        try readFloats(name, into: destination)
        guard destination.allSatisfy(\.isFinite) else {
            throw FormatError(file: path, "tensor '\(name)' holds NaN or infinite values")
        }
    }

    /// Tensor `name` as float32 values.
    public func floats(_ name: String) throws -> [Float] {
        guard let e = entry(named: name) else { throw FormatError(file: path, "no tensor named '\(name)'") }
        var out = [Float](repeating: 0, count: e.elementCount)
        try out.withUnsafeMutableBufferPointer { try readFloats(name, into: $0) }
        return out
    }
}

/// float32 ⇄ float16 / bfloat16, little-endian as safetensors stores them.
public enum DTypeConversion {
    public static func toFloat32(_ source: UnsafeRawBufferPointer, dtype: SafetensorsDType,
                                 into out: UnsafeMutableBufferPointer<Float>) {
        switch dtype {
        case .f32:
            for i in 0..<out.count { out[i] = Float(bitPattern: UInt32(littleEndian: source.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))) }
        case .f16:
            for i in 0..<out.count {
                out[i] = Float(Float16(bitPattern: UInt16(littleEndian: source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))))
            }
        case .bf16:
            for i in 0..<out.count {
                out[i] = Float(bitPattern: UInt32(UInt16(littleEndian: source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) << 16)
            }
        default:
            preconditionFailure("internal: \(dtype) is not a float type Finch converts")
        }
    }

    /// float32 → bfloat16 with round-to-nearest-even, as PyTorch rounds; NaN stays NaN.
    public static func bfloat16Bits(_ value: Float) -> UInt16 {
        if value.isNaN { return 0x7FC0 }
        let bits = value.bitPattern
        let rounding = 0x7FFF + ((bits >> 16) & 1)
        return UInt16((bits &+ rounding) >> 16)
    }
}
