import Foundation
#if canImport(Glibc)
import Glibc
#endif

public struct DistributedError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// The processes of one `mpirun`: Open MPI's library loaded at run time (`dlopen`), so that Finch builds and runs
/// without it, and only a process that mpirun started needs it. Open MPI's handles are the addresses of its
/// predefined objects (`ompi_mpi_comm_world`, `ompi_mpi_byte`), which is its ABI and not MPICH's: other MPIs are
/// not supported.
public final class MPICommunicator: @unchecked Sendable {
    public let rank: Int
    public let size: Int

    private typealias Handle = OpaquePointer
    private let world: Handle
    private let byte: Handle
    private let allgatherFunction: @convention(c) (UnsafeRawPointer?, Int32, Handle?, UnsafeMutableRawPointer?, Int32, Handle?, Handle?) -> Int32
    private let abortFunction: @convention(c) (Handle?, Int32) -> Int32
    private let finalizeFunction: @convention(c) () -> Int32

    /// Whether this process was started by Open MPI's mpirun (it sets OMPI_COMM_WORLD_SIZE for each rank).
    public static var isLaunchedByMPI: Bool { ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_SIZE"] != nil }

    /// The library names tried, newest ABI first.
    static let libraries = ["libmpi.so.40", "libmpi.so"]

    /// Loads Open MPI and joins the job (MPI_Init). Fails with a one-line error when the library is missing.
    public init() throws {
        // Open MPI's components are plugins that look up libmpi's symbols: it must be loaded RTLD_GLOBAL.
        guard let library = Self.libraries.lazy.compactMap({ dlopen($0, RTLD_NOW | RTLD_GLOBAL) }).first else {
            throw DistributedError(message: "this finch was started by mpirun, but Open MPI's library (\(Self.libraries.joined(separator: " or "))) cannot be loaded: install libopenmpi-dev (Debian: apt-get install libopenmpi-dev openmpi-bin)")
        }
        func symbol(_ name: String) throws -> UnsafeMutableRawPointer {
            guard let s = dlsym(library, name) else {
                throw DistributedError(message: "Open MPI's library has no '\(name)': an MPI other than Open MPI (Finch uses Open MPI's ABI)")
            }
            return s
        }
        typealias Query = @convention(c) (Handle?, UnsafeMutablePointer<Int32>) -> Int32
        let initialize = unsafeBitCast(try symbol("MPI_Init"), to: (@convention(c) (UnsafeMutableRawPointer?, UnsafeMutableRawPointer?) -> Int32).self)
        let commRank = unsafeBitCast(try symbol("MPI_Comm_rank"), to: Query.self)
        let commSize = unsafeBitCast(try symbol("MPI_Comm_size"), to: Query.self)
        allgatherFunction = unsafeBitCast(try symbol("MPI_Allgather"), to: type(of: allgatherFunction))
        abortFunction = unsafeBitCast(try symbol("MPI_Abort"), to: type(of: abortFunction))
        finalizeFunction = unsafeBitCast(try symbol("MPI_Finalize"), to: type(of: finalizeFunction))
        world = Handle(try symbol("ompi_mpi_comm_world"))
        byte = Handle(try symbol("ompi_mpi_byte"))
        guard initialize(nil, nil) == 0 else { throw DistributedError(message: "MPI_Init failed") }
        var r: Int32 = 0, s: Int32 = 0
        _ = commRank(world, &r)
        _ = commSize(world, &s)
        rank = Int(r)
        size = Int(s)
    }

    /// Every rank's `values` (the same count on each), in rank order. Open MPI's errors are fatal to the job by
    /// default, so a rank that died ends this call everywhere.
    public func allGather(_ values: [Float]) throws -> [Float] {
        let bytes = values.count * MemoryLayout<Float>.size
        guard bytes <= Int(Int32.max) else {
            throw DistributedError(message: "one rank's share of a step is \(bytes) bytes, more than one MPI message of 2 GB holds")
        }
        var result = [Float](repeating: 0, count: values.count * size)
        let status = values.withUnsafeBytes { send in
            result.withUnsafeMutableBytes { receive in
                allgatherFunction(send.baseAddress, Int32(bytes), byte, receive.baseAddress, Int32(bytes), byte, world)
            }
        }
        guard status == 0 else { throw DistributedError(message: "MPI_Allgather failed with code \(status)") }
        return result
    }

    /// Ends every rank of the job (after this rank hit an error the others cannot see).
    public func abort(code: Int32) -> Never {
        _ = abortFunction(world, code)
        exit(code)
    }

    public func finalize() { _ = finalizeFunction() }
}
