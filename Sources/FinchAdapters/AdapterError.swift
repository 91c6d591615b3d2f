/// An adapter that does not fit the model or cannot be read, naming the file, key or module.
public struct AdapterError: Error, CustomStringConvertible, Equatable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
