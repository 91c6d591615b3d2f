import FinchModels

/// An adapter that does not fit the model or cannot be read, naming the file, key or module.
public struct AdapterError: Error, CustomStringConvertible, Equatable {
    /// The adapter setting an error is about, so a recipe can name its key.
    public enum Setting: Sendable, Equatable {
        case targets, modulesToSave
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
    static func checkFitsInMemory(_ count: Int?, what: String) throws {
        let memory = ModelSize.physicalMemoryBytes
        guard let count, count <= memory / 4 else {
            let values = count.map { "\($0) values (\(ModelSize.gigabytes($0.multipliedReportingOverflow(by: 4).partialValue)))" } ?? "more values than can be counted"
            throw AdapterError("\(what) would hold \(values), more than this machine's \(ModelSize.gigabytes(memory)) of memory")
        }
    }
}
