/// What went wrong in a tensor operation, naming the op and the shapes or values involved.
public enum TensorError: Error, CustomStringConvertible, Equatable {
    /// Two operands whose shapes cannot be combined by `op`.
    case shapeMismatch(op: String, lhs: [Int], rhs: [Int])
    /// An argument `op` cannot accept, with what was expected.
    case invalidArgument(op: String, message: String)
    /// Misuse of the autograd tape (a backward through a freed graph, a non-scalar root without a seed).
    case gradient(String)

    public var description: String {
        switch self {
        case let .shapeMismatch(op, lhs, rhs):
            return "\(op): shapes \(lhs) and \(rhs) do not match"
        case let .invalidArgument(op, message):
            return "\(op): \(message)"
        case let .gradient(message):
            return "backward: \(message)"
        }
    }
}
