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
    /// Refuses to allocate `count` float32 values that could not fit in this machine's memory (a mistyped
    /// rank or size would otherwise stop the process in the allocator); nil counts overflowed `Int`.
    /// Training holds each value four times (itself, its gradient and AdamW's two moments), so the bound is a
    /// quarter of memory's worth of float32 values.
    static func checkFitsInMemory(_ count: Int?, what: String, setting: Setting) throws {
        let memory = ModelSize.physicalMemoryBytes
        guard let count, count <= memory / 16 else {
            let values = count.map {
                let bytes = ModelSize.gigabytes($0.multipliedReportingOverflow(by: 16).partialValue)
                return "\($0) values to train (\(bytes) with their gradients and AdamW's moments)"
            } ?? "more values than can be counted"
            throw AdapterError("\(what) would hold \(values), more than this machine's \(ModelSize.gigabytes(memory)) "
                               + "of memory", setting: setting)
        }
    }
}
