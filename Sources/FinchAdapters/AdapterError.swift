import FinchModels

/// An adapter that does not fit the model or cannot be read, naming the file, key or module.
public struct AdapterError: Error, CustomStringConvertible, Equatable {
    /// The adapter setting an error is about, so a recipe can name its key.
    public enum Setting: Sendable, Equatable {
        case rank, targets, layers, modulesToSave, virtualTokens, projectionHidden
    }

    public let message: String
    public let setting: Setting?
    public init(_ message: String, setting: Setting? = nil) {
        self.message = message
        self.setting = setting
    }
    public var description: String { message }
}

extension AdapterError {
    /// The most adapter values this machine can train: each is held four times (itself, its gradient and AdamW's
    /// two moments), 16 bytes in all.
    static var trainableValueLimit: Int { ModelSize.physicalMemoryBytes / 16 }

    /// Refuses to allocate `count` float32 values that could not be trained in this machine's memory (a mistyped
    /// rank or size would otherwise stop the process in the allocator); nil counts overflowed `Int`.
    static func checkFitsInMemory(_ count: Int?, what: String, setting: Setting) throws {
        let memory = ModelSize.physicalMemoryBytes
        guard let count, count <= trainableValueLimit else {
            let values = count.map {
                let bytes = ModelSize.gigabytes($0.multipliedReportingOverflow(by: 16).partialValue)
                return "\($0) values to train (\(bytes) with their gradients and AdamW's moments)"
            } ?? "more values than can be counted"
            throw AdapterError("\(what) would hold \(values), more than this machine's \(ModelSize.gigabytes(memory)) "
                               + "of memory", setting: setting)
        }
    }
}
