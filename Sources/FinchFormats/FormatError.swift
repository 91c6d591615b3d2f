/// A file Finch cannot read as what it claims to be, naming the file and what was expected.
public struct FormatError: Error, CustomStringConvertible, Equatable {
    public let file: String
    public let message: String

    public init(file: String, _ message: String) {
        self.file = file
        self.message = message
    }

    public var description: String { "\(file): \(message)" }
}
