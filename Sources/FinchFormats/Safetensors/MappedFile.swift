#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// A read-only memory map of a whole file; unmapped when released.
public final class MappedFile: @unchecked Sendable {
    public let path: String
    public let count: Int
    public let bytes: UnsafeRawBufferPointer

    public init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw FormatError(file: path, "cannot open: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw FormatError(file: path, "cannot stat: \(String(cString: strerror(errno)))") }
        guard (info.st_mode & S_IFMT) == S_IFREG else { throw FormatError(file: path, "is not a regular file") }
        count = Int(info.st_size)
        if count == 0 {
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            return
        }
        let address = mmap(nil, count, PROT_READ, MAP_PRIVATE, fd, 0)
        guard let address, address != MAP_FAILED else {
            throw FormatError(file: path, "cannot map into memory: \(String(cString: strerror(errno)))")
        }
        bytes = UnsafeRawBufferPointer(start: address, count: count)
    }

    /// Gives back the pages read so far (they count in the process's resident memory while mapped); any byte
    /// read again comes back from the file.
    public func releaseResidentPages() {
        if let base = bytes.baseAddress { madvise(UnsafeMutableRawPointer(mutating: base), count, MADV_DONTNEED) }
    }

    deinit {
        if let base = bytes.baseAddress { munmap(UnsafeMutableRawPointer(mutating: base), count) }
    }
}
