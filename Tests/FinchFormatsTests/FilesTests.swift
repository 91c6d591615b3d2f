import Foundation
import Testing
import TestSupport
@testable import FinchFormats

@Suite("file writes that fail")
struct FilesTests {
    /// A full disk (Linux's /dev/full answers every write with ENOSPC) is named with the file and the reason.
    @Test func aFullDiskNamesTheFile() throws {
        let file = try AppendingFile("/dev/full")
        #expect { try file.append(Data("step 1\n".utf8)) } throws: { "\($0)" == "/dev/full: cannot write: No space left on device" }
    }

    /// An atomic write that fails leaves the file it would replace as it was, and no temporary beside it.
    @Test func aFailedAtomicWriteLeavesTheOldFile() throws {
        let dir = try Fixtures.scratchDirectory()
        let path = "\(dir)/kept.json"
        try AtomicFile.write(Data("old".utf8), to: path)
        try FileManager.default.createDirectory(atPath: "\(dir)/kept.json.tmp-\(ProcessInfo.processInfo.processIdentifier)",
                                                withIntermediateDirectories: true)  // the temporary cannot be created
        #expect(throws: FormatError.self) { try AtomicFile.write(Data("new".utf8), to: path) }
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "old")
    }
}
