import Foundation
import FinchTensor

/// How one optimizer step's micro-batches are shared among the processes of a run and their results put together,
/// so that the step gives the same bits on any number of them: micro-batch j (of training.grad_accum) runs on rank
/// j mod N, each micro-batch's gradient is computed on its own, and every rank adds all of them up in the order
/// j = 0, 1, 2, … — on one process as each is made, across processes after gathering them all. Evaluation batches are
/// shared and summed the same way. Rank 0 alone writes (checkpoints, metrics, the adapter).
public struct DataParallel: Sendable {
    public let rank: Int
    public let size: Int
    let communicator: MPICommunicator?

    /// One process, no MPI.
    public static let single = DataParallel(rank: 0, size: 1, communicator: nil)

    public init(communicator: MPICommunicator) {
        self.init(rank: communicator.rank, size: communicator.size, communicator: communicator)
    }

    init(rank: Int, size: Int, communicator: MPICommunicator?) {
        self.rank = rank
        self.size = size
        self.communicator = communicator
    }

    /// Whether this process writes the run directory.
    public var isLeader: Bool { rank == 0 }
    public var isDistributed: Bool { communicator != nil }

    /// Whether item `index` (a micro-batch of a step, a validation batch) runs here.
    public func owns(_ index: Int) -> Bool { index % size == rank }

    /// Every item's result, in item order, from each rank's results for the items it owns (`local[index]`, each of
    /// `width` values). Items that no rank ran are nil.
    public func gather(_ local: [Int: [Float]], count: Int, width: Int) throws -> [[Float]?] {
        guard let communicator else { return (0..<count).map { local[$0] } }
        // Each rank sends the same number of slots: its items in order, then empty ones; a slot's first value says
        // whether it holds an item.
        let slots = (count + size - 1) / size
        var send = [Float](repeating: 0, count: slots * (width + 1))
        for s in 0..<slots {
            let index = s * size + rank
            guard index < count, let values = local[index] else { continue }
            guard values.count == width else {
                throw DistributedError(message: "item \(index) has \(values.count) values to share, not \(width)")
            }
            send[s * (width + 1)] = 1
            send.replaceSubrange(s * (width + 1) + 1..<(s + 1) * (width + 1), with: values)
        }
        let all = try communicator.allGather(send)
        return (0..<count).map { index in
            let r = index % size, s = index / size, start = (r * slots + s) * (width + 1)
            return all[start] == 1 ? Array(all[start + 1..<start + 1 + width]) : nil
        }
    }

    /// The seed of the dropout generator at `path` for micro-batch `microBatch` of step `step`: a function of these
    /// alone, so a micro-batch draws the same masks on whichever rank runs it (and in a resumed run).
    static func dropoutState(seed: Int, step: Int, microBatch: Int, path: String) -> [UInt64] {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325  // FNV-1a over the path: the same in every process
        for byte in path.utf8 { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3 }
        return PrivacyStreams.generator(seed: seed, step: step,
                                        stream: UInt64(truncatingIfNeeded: microBatch) &* 0x94D0_49BB_1331_11EB ^ hash).state
    }
}
