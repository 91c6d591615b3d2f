import FinchFormats
import FinchTensor

extension SafetensorsWriter.Item {
    /// `tensor`'s values, read from its storage while the file is written (no copy is made first).
    public init(name: String, tensor: Tensor, dtype: SafetensorsDType = .f32) {
        let source = tensor.detached()
        self.init(name: name, shape: source.shape, count: source.count, dtype: dtype) { offset, out in
            _ = out.initialize(from: UnsafeBufferPointer(rebasing: source.storage.buffer[offset..<(offset + out.count)]))
        }
    }
}
