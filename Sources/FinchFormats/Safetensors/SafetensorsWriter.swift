import Foundation

/// Writes safetensors files that the Python `safetensors` library reads: the 8-byte length, a JSON header
/// (with `__metadata__` when given) padded with spaces to a multiple of 8 bytes, then the tensors in
/// header order. The file is written beside its destination and renamed into place, so a failure never
/// leaves half a file where a good one was.
public enum SafetensorsWriter {
    public struct Item: Sendable {
        public let name: String
        public let shape: [Int]
        public let values: [Float]
        public let dtype: SafetensorsDType

        public init(name: String, shape: [Int], values: [Float], dtype: SafetensorsDType = .f32) {
            self.name = name
            self.shape = shape
            self.values = values
            self.dtype = dtype
        }
    }

    public static func write(_ items: [Item], metadata: [String: String]? = nil, to path: String) throws {
        var names = Set<String>()
        for item in items {
            guard item.dtype.isLoadable else {
                throw FormatError(file: path,
                                  "tensor '\(item.name)': Finch writes F32, F16 or BF16, not \(item.dtype.rawValue)")
            }
            guard item.shape.reduce(1, *) == item.values.count else {
                throw FormatError(file: path, "tensor '\(item.name)': shape \(item.shape) does not hold \(item.values.count) values")
            }
            guard item.name != "__metadata__", names.insert(item.name).inserted else {
                throw FormatError(file: path, "tensor name '\(item.name)' is reserved or repeated")
            }
        }
        let ordered = items.sorted { $0.name < $1.name }
        var header = "{"
        var fields: [String] = []
        if let metadata {
            let pairs = metadata.keys.sorted().map { "\(JSONValue.quoted($0)):\(JSONValue.quoted(metadata[$0]!))" }
            fields.append("\"__metadata__\":{\(pairs.joined(separator: ","))}")
        }
        var offset = 0
        for item in ordered {
            let size = item.values.count * item.dtype.byteSize
            let shape = item.shape.map(String.init).joined(separator: ",")
            fields.append("\(JSONValue.quoted(item.name)):{\"dtype\":\"\(item.dtype.rawValue)\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(offset + size)]}")
            offset += size
        }
        header += fields.joined(separator: ",") + "}"
        var headerBytes = Array(header.utf8)
        while headerBytes.count % 8 != 0 { headerBytes.append(0x20) }

        var data = Data(capacity: 8 + headerBytes.count + offset)
        withUnsafeBytes(of: UInt64(headerBytes.count).littleEndian) { data.append(contentsOf: $0) }
        data.append(contentsOf: headerBytes)
        for item in ordered {
            switch item.dtype {
            case .f32:
                item.values.withUnsafeBufferPointer { buffer in
                    var le = [UInt32](repeating: 0, count: buffer.count)
                    for i in 0..<buffer.count { le[i] = buffer[i].bitPattern.littleEndian }
                    le.withUnsafeBytes { data.append(contentsOf: $0) }
                }
            case .f16:
                var bits = item.values.map { Float16($0).bitPattern.littleEndian }
                bits.withUnsafeMutableBytes { data.append(contentsOf: $0) }
            case .bf16:
                var bits = item.values.map { DTypeConversion.bfloat16Bits($0).littleEndian }
                bits.withUnsafeMutableBytes { data.append(contentsOf: $0) }
            default:
                break
            }
        }
        try AtomicFile.write(data, to: path)
    }
}
