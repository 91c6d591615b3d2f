import Foundation

/// Writes GGUF version 3 files llama.cpp and gguf-py read: the header, the metadata, the tensor table, then each
/// tensor's bytes at the next multiple of the alignment (`general.alignment` when the metadata has it, else 32). The file is written beside its destination and renamed
/// into place, so a failure never leaves half a file where a good one was.
public enum GGUFWriter {
    public struct Tensor: Sendable {
        public let name: String
        /// Row-major shape (outermost first); the file stores it reversed, as ggml counts dimensions.
        public let shape: [Int]
        public let type: GGUFTensorType
        /// Whole blocks of `type` (see `GGUFQuantization.quantize`).
        public let bytes: [UInt8]

        public init(name: String, shape: [Int], type: GGUFTensorType, bytes: [UInt8]) {
            self.name = name
            self.shape = shape
            self.type = type
            self.bytes = bytes
        }
    }

    public static func write(metadata: [(key: String, value: GGUFValue)], tensors: [Tensor], to path: String) throws {
        var alignment = 32
        if let entry = metadata.first(where: { $0.key == "general.alignment" }) {
            guard case .uint32(let a) = entry.value, a >= 8, a & (a - 1) == 0 else {
                throw FormatError(file: path, "general.alignment must be a power of two of at least 8 (a uint32), got \(entry.value)")
            }
            alignment = Int(a)
        }
        var keys = Set<String>(), names = Set<String>()
        for (key, _) in metadata where !keys.insert(key).inserted { throw FormatError(file: path, "metadata key '\(key)' is repeated") }
        for t in tensors {
            guard names.insert(t.name).inserted else { throw FormatError(file: path, "tensor name '\(t.name)' is repeated") }
            let count = t.shape.reduce(1, *)
            let (values, bytes) = t.type.block
            // ggml keeps every row in whole blocks.
            guard !t.shape.isEmpty, t.shape.count <= GGUFFile.maximumDimensions, t.shape.last! % values == 0,
                  t.bytes.count == count / values * bytes else {
                throw FormatError(file: path, "tensor '\(t.name)': \(t.bytes.count) bytes are not shape \(t.shape) in \(t.type.name)")
            }
        }
        var out = [UInt8]()
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func string(_ s: String) { u64(UInt64(s.utf8.count)); out.append(contentsOf: s.utf8) }
        func pad() { while out.count % alignment != 0 { out.append(0) } }
        func value(_ v: GGUFValue) throws {
            switch v {
            case .uint8(let x): out.append(x)
            case .int8(let x): out.append(UInt8(bitPattern: x))
            case .uint16(let x): withUnsafeBytes(of: x.littleEndian) { out.append(contentsOf: $0) }
            case .int16(let x): withUnsafeBytes(of: x.littleEndian) { out.append(contentsOf: $0) }
            case .uint32(let x): u32(x)
            case .int32(let x): u32(UInt32(bitPattern: x))
            case .uint64(let x): u64(x)
            case .int64(let x): u64(UInt64(bitPattern: x))
            case .float32(let x): u32(x.bitPattern)
            case .float64(let x): u64(x.bitPattern)
            case .bool(let x): out.append(x ? 1 : 0)
            case .string(let s): string(s)
            case .array(let type, let items):
                u32(type.rawValue)
                u64(UInt64(items.count))
                for item in items {
                    guard item.valueType == type else { throw FormatError(file: path, "an array of \(type) holds a \(item.valueType) value") }
                    try value(item)
                }
            }
        }
        u32(GGUFFile.magic)
        u32(3)
        u64(UInt64(tensors.count))
        u64(UInt64(metadata.count))
        for (key, v) in metadata {
            string(key)
            u32(v.valueType.rawValue)
            try value(v)
        }
        var offset = 0
        for t in tensors {
            string(t.name)
            u32(UInt32(t.shape.count))
            for d in t.shape.reversed() { u64(UInt64(d)) }
            u32(t.type.rawValue)
            u64(UInt64(offset))
            offset += (t.bytes.count + alignment - 1) / alignment * alignment
        }
        pad()
        out.reserveCapacity(out.count + offset)
        for t in tensors {
            out.append(contentsOf: t.bytes)
            pad()
        }
        try AtomicFile.write(Data(out), to: path)
    }
}

extension GGUFValue {
    /// The type tag this value is written with.
    public var valueType: GGUFValueType {
        switch self {
        case .uint8: return .uint8
        case .int8: return .int8
        case .uint16: return .uint16
        case .int16: return .int16
        case .uint32: return .uint32
        case .int32: return .int32
        case .uint64: return .uint64
        case .int64: return .int64
        case .float32: return .float32
        case .float64: return .float64
        case .bool: return .bool
        case .string: return .string
        case .array: return .array
        }
    }
}
