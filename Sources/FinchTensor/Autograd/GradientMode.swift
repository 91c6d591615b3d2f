/// Whether ops record backward steps. Evaluation and generation run inside `withoutGradients`.
public enum GradientMode {
    @TaskLocal static var isEnabled = true

    /// Runs `body` with recording off: no op inside records a node, however its inputs are marked.
    public static func withoutGradients<T>(_ body: () throws -> T) rethrows -> T {
        try $isEnabled.withValue(false, operation: body)
    }

    public static var isRecording: Bool { isEnabled }
}
