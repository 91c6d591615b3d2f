/// One tensor of a GGUF file: its name, its dimensions in GGUF order (`dimensions[0]` varies fastest, so a
/// row-major `shape` is them reversed), its storage type and where its bytes are.
public struct GGUFTensorInfo: Sendable, Equatable {
    public let name: String
    public let dimensions: [Int]
    public let type: GGUFTensorType
    /// Byte range within the file.
    public let dataRange: Range<Int>

    /// Row-major shape (outermost first), as Hugging Face and Finch hold it.
    public var shape: [Int] { dimensions.reversed() }
    public var elementCount: Int { dimensions.reduce(1, *) }
}

/// A GGUF file (versions 2 and 3, little-endian), memory-mapped and checked before anything is read from it:
/// every length and count against the bytes that remain, every tensor inside the file, aligned, sized by its
/// type and not overlapping another; unknown value and tensor types are refused by number.
public final class GGUFFile: @unchecked Sendable {
    public static let magic: UInt32 = 0x4655_4747  // "GGUF"
    /// Arrays nested deeper than this are refused (the format allows nesting; real files use one level).
    public static let maximumNesting = 8
    /// ggml's largest number of dimensions.
    public static let maximumDimensions = 4

    public let path: String
    public let version: Int
    public let alignment: Int
    /// Metadata in file order.
    public let metadata: [(key: String, value: GGUFValue)]
    public let tensors: [GGUFTensorInfo]
    /// Where tensor data starts (offsets in the file are relative to it).
    public let dataOffset: Int
    private let file: MappedFile
    private let keyIndex: [String: Int]
    private let tensorIndex: [String: Int]

    public convenience init(path: String) throws {
        try self.init(mapped: try MappedFile(path: path))
    }

    /// Gives back the memory of the tensor bytes read so far (after a model has copied them out); reading them
    /// again maps them back from the file.
    public func releaseResidentPages() { file.releaseResidentPages() }

    init(mapped: MappedFile) throws {
        file = mapped
        path = mapped.path
        var reader = Reader(bytes: mapped.bytes, path: mapped.path)
        let magic = try reader.read(UInt32.self, "the magic number")
        guard magic == Self.magic else {
            throw FormatError(file: path, "not a GGUF file (it does not start with the bytes \"GGUF\")")
        }
        let rawVersion = try reader.read(UInt32.self, "the version")
        guard rawVersion == 2 || rawVersion == 3 else {
            if rawVersion.byteSwapped == 2 || rawVersion.byteSwapped == 3 {
                throw FormatError(file: path, "is a big-endian GGUF file; Finch reads little-endian ones")
            }
            throw FormatError(file: path, "GGUF version \(rawVersion) is not supported (Finch reads versions 2 and 3)")
        }
        version = Int(rawVersion)
        let tensorCount = try reader.count(minimumEach: 8 + 4 + 8 + 4 + 8, "the tensor count")
        let keyCount = try reader.count(minimumEach: 8 + 4 + 1, "the metadata count")
        var metadata: [(key: String, value: GGUFValue)] = []
        var keyIndex: [String: Int] = [:]
        for _ in 0..<keyCount {
            let key = try reader.string("a metadata key")
            guard keyIndex[key] == nil else { throw FormatError(file: path, "metadata key '\(key)' is given twice") }
            let type = try reader.valueType("metadata '\(key)'")
            let value = try reader.value(type, depth: 0, "metadata '\(key)'")
            keyIndex[key] = metadata.count
            metadata.append((key, value))
        }
        var alignment = 32
        if let index = keyIndex["general.alignment"] {
            guard case .uint32(let a) = metadata[index].value, a > 0, a & (a - 1) == 0 else {
                throw FormatError(file: path, "general.alignment must be a power of two (a uint32), got \(metadata[index].value)")
            }
            alignment = Int(a)
        }
        var infos: [(name: String, dimensions: [Int], type: GGUFTensorType, offset: Int)] = []
        var tensorIndex: [String: Int] = [:]
        for _ in 0..<tensorCount {
            let name = try reader.string("a tensor name")
            guard tensorIndex[name] == nil else { throw FormatError(file: path, "tensor '\(name)' is given twice") }
            let rank = try reader.read(UInt32.self, "tensor '\(name)'s number of dimensions")
            guard rank >= 1, rank <= Self.maximumDimensions else {
                throw FormatError(file: path, "tensor '\(name)' has \(rank) dimensions (GGUF allows 1 to \(Self.maximumDimensions))")
            }
            var dimensions: [Int] = []
            for _ in 0..<rank {
                let d = try reader.read(UInt64.self, "tensor '\(name)'s dimensions")
                guard let dimension = Int(exactly: d), dimension >= 0 else {
                    throw FormatError(file: path, "tensor '\(name)' has a dimension of \(d), more than can be counted")
                }
                dimensions.append(dimension)
            }
            let rawType = try reader.read(UInt32.self, "tensor '\(name)'s type")
            guard let type = GGUFTensorType(rawValue: rawType) else {
                throw FormatError(file: path, "tensor '\(name)' has type \(rawType), which is not a ggml type Finch knows")
            }
            let rawOffset = try reader.read(UInt64.self, "tensor '\(name)'s offset")
            guard let offset = Int(exactly: rawOffset) else {
                throw FormatError(file: path, "tensor '\(name)' starts at offset \(rawOffset), more than can be counted")
            }
            guard offset % alignment == 0 else {
                throw FormatError(file: path, "tensor '\(name)' starts at offset \(rawOffset), not a multiple of the alignment \(alignment)")
            }
            tensorIndex[name] = infos.count
            infos.append((name, dimensions, type, offset))
        }
        let (padded, overflow) = reader.position.addingReportingOverflow((alignment - reader.position % alignment) % alignment)
        guard !overflow, padded <= mapped.count || infos.isEmpty else {
            throw FormatError(file: path, "truncated: the tensor data would start at byte \(padded) but the file has \(mapped.count) bytes")
        }
        dataOffset = padded
        var tensors: [GGUFTensorInfo] = []
        for info in infos {
            tensors.append(try Self.locate(info, dataOffset: padded, fileSize: mapped.count, path: path))
        }
        // No two tensors may share bytes.
        let ordered = tensors.filter { !$0.dataRange.isEmpty }.sorted { $0.dataRange.lowerBound < $1.dataRange.lowerBound }
        for (a, b) in zip(ordered, ordered.dropFirst()) where a.dataRange.upperBound > b.dataRange.lowerBound {
            throw FormatError(file: path, "tensors '\(a.name)' and '\(b.name)' overlap in the file")
        }
        self.alignment = alignment
        self.metadata = metadata
        self.keyIndex = keyIndex
        self.tensors = tensors
        self.tensorIndex = tensorIndex
    }

    /// A tensor's byte range, checked: whole blocks in each row, a size that can be counted, inside the file.
    static func locate(_ info: (name: String, dimensions: [Int], type: GGUFTensorType, offset: Int), dataOffset: Int,
                       fileSize: Int, path: String) throws -> GGUFTensorInfo {
        let (blockValues, blockBytes) = info.type.block
        guard let first = info.dimensions.first, first % blockValues == 0 else {
            throw FormatError(file: path, "tensor '\(info.name)' has rows of \(info.dimensions.first ?? 0) values, not a whole number of \(info.type.name) blocks of \(blockValues)")
        }
        var count = 1
        for d in info.dimensions {
            let (product, overflow) = count.multipliedReportingOverflow(by: d)
            guard !overflow else {
                throw FormatError(file: path, "tensor '\(info.name)' has dimensions \(info.dimensions) whose product cannot be counted")
            }
            count = product
        }
        let (bytes, o1) = (count / blockValues).multipliedReportingOverflow(by: blockBytes)
        let (start, o2) = dataOffset.addingReportingOverflow(info.offset)
        let (end, o3) = start.addingReportingOverflow(bytes)
        guard !o1, !o2, !o3, end <= fileSize else {
            throw FormatError(file: path, "truncated: tensor '\(info.name)' (\(info.type.name) \(info.dimensions)) ends past the file's \(fileSize) bytes")
        }
        return GGUFTensorInfo(name: info.name, dimensions: info.dimensions, type: info.type, dataRange: start..<end)
    }

    /// The value of a metadata key, or nil.
    public subscript(key: String) -> GGUFValue? { keyIndex[key].map { metadata[$0].value } }

    public func tensor(named name: String) -> GGUFTensorInfo? { tensorIndex[name].map { tensors[$0] } }

    /// The stored bytes of a tensor, as they are in the file.
    public func rawBytes(_ tensor: GGUFTensorInfo) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: file.bytes[tensor.dataRange])
    }

    /// A tensor's values as float32, dequantised as ggml does.
    /// - Throws: when the tensor's type cannot be turned into floats yet, or `destination` has another size.
    public func readFloats(_ tensor: GGUFTensorInfo, into destination: UnsafeMutableBufferPointer<Float>) throws {
        guard destination.count == tensor.elementCount else {
            throw FormatError(file: path, "tensor '\(tensor.name)' has \(tensor.elementCount) values, not \(destination.count)")
        }
        try GGUFDequantization.dequantize(rawBytes(tensor), type: tensor.type, into: destination, what: "\(path): tensor '\(tensor.name)'")
    }

    public func floats(_ tensor: GGUFTensorInfo) throws -> [Float] {
        var values = [Float](repeating: 0, count: tensor.elementCount)
        try values.withUnsafeMutableBufferPointer { try readFloats(tensor, into: $0) }
        return values
    }
}

/// Reads little-endian values from the front of a buffer, refusing to read past its end.
struct Reader {
    let bytes: UnsafeRawBufferPointer
    let path: String
    var position = 0

    var remaining: Int { bytes.count - position }

    mutating func read<T: FixedWidthInteger>(_: T.Type, _ what: String) throws -> T {
        let size = MemoryLayout<T>.size
        guard remaining >= size else {
            throw FormatError(file: path, "truncated: the file ends at byte \(bytes.count) inside \(what)")
        }
        let value = bytes.loadUnaligned(fromByteOffset: position, as: T.self)
        position += size
        return T(littleEndian: value)
    }

    /// A 64-bit count of items of at least `minimumEach` bytes, which the rest of the file must be able to hold.
    mutating func count(minimumEach: Int, _ what: String) throws -> Int {
        let raw = try read(UInt64.self, what)
        guard let count = Int(exactly: raw), count <= remaining / max(minimumEach, 1) else {
            throw FormatError(file: path, "\(what) is \(raw), more than the \(remaining) bytes left in the file could hold")
        }
        return count
    }

    mutating func string(_ what: String) throws -> String {
        let length = try count(minimumEach: 1, "the length of \(what)")
        let text = UnsafeRawBufferPointer(rebasing: bytes[position..<(position + length)])
        position += length
        guard let string = String(validating: text, as: UTF8.self) else {
            throw FormatError(file: path, "\(what) is not UTF-8 text")
        }
        return string
    }

    mutating func valueType(_ what: String) throws -> GGUFValueType {
        let raw = try read(UInt32.self, "the type of \(what)")
        guard let type = GGUFValueType(rawValue: raw) else {
            throw FormatError(file: path, "\(what) has value type \(raw), which GGUF does not define (0 to 12)")
        }
        return type
    }

    mutating func value(_ type: GGUFValueType, depth: Int, _ what: String) throws -> GGUFValue {
        switch type {
        case .uint8: return .uint8(try read(UInt8.self, what))
        case .int8: return .int8(try read(Int8.self, what))
        case .uint16: return .uint16(try read(UInt16.self, what))
        case .int16: return .int16(try read(Int16.self, what))
        case .uint32: return .uint32(try read(UInt32.self, what))
        case .int32: return .int32(try read(Int32.self, what))
        case .uint64: return .uint64(try read(UInt64.self, what))
        case .int64: return .int64(try read(Int64.self, what))
        case .float32: return .float32(Float(bitPattern: try read(UInt32.self, what)))
        case .float64: return .float64(Double(bitPattern: try read(UInt64.self, what)))
        case .bool:
            let byte = try read(UInt8.self, what)
            guard byte <= 1 else { throw FormatError(file: path, "\(what) is a bool of value \(byte) (0 or 1 expected)") }
            return .bool(byte == 1)
        case .string: return .string(try string(what))
        case .array:
            guard depth < GGUFFile.maximumNesting else {
                throw FormatError(file: path, "\(what) nests arrays more than \(GGUFFile.maximumNesting) deep")
            }
            let elementType = try valueType("the elements of \(what)")
            let count = try self.count(minimumEach: elementType.minimumSize, "the length of \(what)")
            var items: [GGUFValue] = []
            items.reserveCapacity(count)
            for _ in 0..<count { items.append(try value(elementType, depth: depth + 1, what)) }
            return .array(elementType, items)
        }
    }
}
