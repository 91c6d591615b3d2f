import Foundation

/// Writes a file through a temporary sibling, flushed, then renamed over the destination.
public enum AtomicFile {
    public static func write(_ data: Data, to path: String) throws {
        let temporary = path + ".tmp-\(ProcessInfo.processInfo.processIdentifier)"
        guard FileManager.default.createFile(atPath: temporary, contents: nil) else {
            throw FormatError(file: path, "cannot create \(temporary)")
        }
        do {
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: temporary))
            try handle.write(contentsOf: data)
            try handle.synchronize()
            try handle.close()
            if rename(temporary, path) != 0 {
                throw FormatError(file: path, "cannot rename \(temporary) into place: \(String(cString: strerror(errno)))")
            }
        } catch let error as FormatError {
            try? FileManager.default.removeItem(atPath: temporary)
            throw error
        } catch {
            try? FileManager.default.removeItem(atPath: temporary)
            throw FormatError(file: path, "cannot write: \(error.localizedDescription)")
        }
    }
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
