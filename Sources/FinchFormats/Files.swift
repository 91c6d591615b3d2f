import Foundation

/// Writes a file through a temporary sibling, flushed, then renamed over the destination. A failure (a full disk,
/// a file-size limit) names the file and the system's reason, and leaves neither the temporary nor a torn file.
public enum AtomicFile {
    public static func write(_ data: Data, to path: String) throws {
        try write(to: path) { try $0.append(data) }
    }

    /// Writes what `body` appends to a temporary beside `path`, flushes it to disk and renames it into place; on
    /// any error the temporary is removed and `path` is left as it was.
    public static func write(to path: String, _ body: (AppendingFile) throws -> Void) throws {
        let temporary = path + ".tmp-\(ProcessInfo.processInfo.processIdentifier)"
        let file: AppendingFile
        do {
            file = try AppendingFile(temporary, truncating: true)
        } catch let error as FormatError {
            throw FormatError(file: path, "cannot create \(temporary) (\(error.message))")
        }
        do {
            try body(file)
            try file.synchronize()
            file.close()
            if rename(temporary, path) != 0 {
                throw FormatError(file: path,
                                  "cannot rename \(temporary) into place: \(String(cString: strerror(errno)))")
            }
        } catch {
            file.close()
            unlink(temporary)
            // The reason is the temporary's, but the file the user knows is the destination.
            if let error = error as? FormatError, error.file == temporary { throw FormatError(file: path, error.message) }
            throw error
        }
    }
}

/// A file written at its end through POSIX calls, so a failure says which file and why ("No space left on
/// device"), where Foundation's FileHandle on Linux reports an NSCocoaErrorDomain code without the file.
public final class AppendingFile {
    public let path: String
    private var descriptor: Int32

    /// Opens `path` for appending, creating it; `truncating` empties it first.
    public init(_ path: String, truncating: Bool = false) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (truncating ? O_TRUNC : 0), 0o644)
        guard fd >= 0 else { throw FormatError(file: path, "cannot open for writing: \(String(cString: strerror(errno)))") }
        self.path = path
        descriptor = fd
    }

    public func append(_ data: Data) throws {
        try data.withUnsafeBytes { (bytes: UnsafeRawBufferPointer) in
            var done = 0
            while done < bytes.count {
                let n = Foundation.write(descriptor, bytes.baseAddress! + done, bytes.count - done)
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else {
                    throw FormatError(file: path,
                                      "cannot write: \(n < 0 ? String(cString: strerror(errno)) : "no bytes written")")
                }
                done += n
            }
        }
    }

    public func synchronize() throws {
        guard fsync(descriptor) == 0 else { throw FormatError(file: path, "cannot flush to disk: \(String(cString: strerror(errno)))") }
    }

    public func close() {
        if descriptor >= 0 { _ = Foundation.close(descriptor) }
        descriptor = -1
    }

    deinit { close() }
}

/// Creates a folder (and the folders above it) for Finch to write into, with a one-line error naming the path and
/// the system's reason when it cannot (Foundation's own message on Linux is an NSCocoaErrorDomain dump).
public enum Folder {
    public static func create(_ path: String) throws {
        var isFolder: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isFolder) {
            guard isFolder.boolValue else { throw FormatError(file: path, "is a file, not a folder") }
            return
        }
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        } catch {
            // Ask the system for its reason (a file above it, no permission, no such parent).
            if mkdir(path, 0o755) != 0 {
                throw FormatError(file: path, "cannot create the folder: \(String(cString: strerror(errno)))")
            }
        }
    }
}

/// An exclusive lock on a file (`flock`), held while this object lives: one process at a time may own what the
/// file guards. The kernel lets go when the process ends, even by `kill -9`, so a stale lock cannot outlive
/// its holder; the file itself stays (removing it would race with a process about to lock it) and holds the
/// holder's process id for the message another process gets.
public final class FileLock {
    public let path: String
    private let descriptor: Int32

    /// Takes the lock or throws at once, naming `what` the file guards and the process that holds it.
    public init(_ path: String, guarding what: String) throws {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw FormatError(file: path, "cannot open the lock file: \(String(cString: strerror(errno)))")
        }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let reason = errno
            var bytes = [UInt8](repeating: 0, count: 32)
            let count = read(fd, &bytes, bytes.count)
            close(fd)
            guard reason == EWOULDBLOCK else {
                throw FormatError(file: path, "cannot lock: \(String(cString: strerror(reason)))")
            }
            let holder = count > 0 ? String(decoding: bytes[..<count], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) : ""
            throw FormatError(file: what, "is in use by another process\(holder.isEmpty ? "" : " (pid \(holder))"); wait for it to end or stop it first")
        }
        let pid = Array("\(getpid())\n".utf8)
        if ftruncate(fd, 0) == 0 { _ = pid.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) } }
        self.path = path
        descriptor = fd
    }

    deinit { close(descriptor) }
}
