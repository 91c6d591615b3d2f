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
