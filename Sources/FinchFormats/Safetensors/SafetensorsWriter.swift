import Foundation

/// Writes safetensors files that the Python `safetensors` library reads: the 8-byte length, a JSON header
/// (with `__metadata__` when given) padded with spaces to a multiple of 8 bytes, then the tensors in
/// header order. The file is written beside its destination and renamed into place, so a failure never
/// leaves half a file where a good one was. Tensors are converted and written a slice at a time, so writing
/// takes no memory beyond the values themselves (none at all for items that read them from where they are).
public enum SafetensorsWriter {
    public struct Item {
        public let name: String
        public let shape: [Int]
        public let dtype: SafetensorsDType
        /// How many values the item holds.
        public let count: Int
        /// Copies values `offset ..< offset + out.count` into `out`.
        let read: (_ offset: Int, _ out: UnsafeMutableBufferPointer<Float>) -> Void

        public init(name: String, shape: [Int], values: [Float], dtype: SafetensorsDType = .f32) {
            self.init(name: name, shape: shape, count: values.count, dtype: dtype) { offset, out in
                values.withUnsafeBufferPointer { v in
                    _ = out.initialize(from: UnsafeBufferPointer(rebasing: v[offset..<(offset + out.count)]))
                }
            }
        }

        /// An item whose values stay where they are (a tensor's storage) until the writer reads them; `read`
        /// must stay valid until `write` returns.
        public init(name: String, shape: [Int], count: Int, dtype: SafetensorsDType = .f32,
                    read: @escaping (_ offset: Int, _ out: UnsafeMutableBufferPointer<Float>) -> Void) {
            self.name = name
            self.shape = shape
            self.count = count
            self.dtype = dtype
            self.read = read
        }

        /// All the values, copied out.
        public var values: [Float] {
            [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
                read(0, buffer)
                initialized = count
            }
        }
    }

    /// Values converted and written at a time.
    static let sliceValues = 1 << 16

    public static func write(_ items: [Item], metadata: [String: String]? = nil, to path: String) throws {
        var names = Set<String>()
        for item in items {
            guard item.dtype.isLoadable else {
                throw FormatError(file: path,
                                  "tensor '\(item.name)': Finch writes F32, F16 or BF16, not \(item.dtype.rawValue)")
            }
            guard item.shape.reduce(1, *) == item.count else {
                throw FormatError(file: path, "tensor '\(item.name)': shape \(item.shape) does not hold \(item.count) values")
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
            let size = item.count * item.dtype.byteSize
            let shape = item.shape.map(String.init).joined(separator: ",")
            fields.append("\(JSONValue.quoted(item.name)):{\"dtype\":\"\(item.dtype.rawValue)\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(offset + size)]}")
            offset += size
        }
        header += fields.joined(separator: ",") + "}"
        var headerBytes = Array(header.utf8)
        while headerBytes.count % 8 != 0 { headerBytes.append(0x20) }

        try AtomicFile.write(to: path) { file in
            var start = Data()
            withUnsafeBytes(of: UInt64(headerBytes.count).littleEndian) { start.append(contentsOf: $0) }
            start.append(contentsOf: headerBytes)
            try file.append(start)
            let values = UnsafeMutableBufferPointer<Float>.allocate(capacity: sliceValues)
            defer { values.deallocate() }
            var bytes = Data(count: sliceValues * 4)
            for item in ordered {
                for offset in stride(from: 0, to: item.count, by: sliceValues) {
                    let n = min(sliceValues, item.count - offset)
                    let slice = UnsafeMutableBufferPointer(rebasing: values[0..<n])
                    item.read(offset, slice)
                    let size = n * item.dtype.byteSize
                    bytes.withUnsafeMutableBytes { raw in
                        switch item.dtype {
                        case .f16:
                            for i in 0..<n { raw.storeBytes(of: Float16(slice[i]).bitPattern.littleEndian, toByteOffset: 2 * i, as: UInt16.self) }
                        case .bf16:
                            for i in 0..<n { raw.storeBytes(of: DTypeConversion.bfloat16Bits(slice[i]).littleEndian, toByteOffset: 2 * i, as: UInt16.self) }
                        default:  // f32: the only other type `isLoadable` lets through
                            for i in 0..<n { raw.storeBytes(of: slice[i].bitPattern.littleEndian, toByteOffset: 4 * i, as: UInt32.self) }
                        }
                    }
                    try file.append(bytes.prefix(size))
                }
            }
        }
    }
}
