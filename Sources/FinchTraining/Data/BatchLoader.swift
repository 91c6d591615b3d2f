import FinchTensor

/// Where the loader is: the epoch and the position in that epoch's order. Saved in checkpoints.
public struct DataCursor: Equatable, Sendable, Codable {
    public var epoch: Int
    public var position: Int

    public init(epoch: Int, position: Int) {
        self.epoch = epoch
        self.position = position
    }
}

/// Batches of sequences in a seeded order that depends only on (seed, epoch), so a cursor is enough to
/// continue exactly where a run stopped.
public struct BatchLoader: Sendable {
    public let data: TrainingData
    public let batchSize: Int
    public let shuffle: Bool
    public let seed: UInt64
    public private(set) var cursor: DataCursor
    private var order: [Int]

    public init(data: TrainingData, batchSize: Int, shuffle: Bool, seed: UInt64,
                cursor: DataCursor = DataCursor(epoch: 0, position: 0)) {
        self.data = data
        self.batchSize = batchSize
        self.shuffle = shuffle
        self.seed = seed
        self.cursor = cursor
        order = Self.order(count: data.sequences.count, epoch: cursor.epoch, shuffle: shuffle, seed: seed)
    }

    /// The permutation of one epoch (Fisher–Yates with Finch's generator).
    public static func order(count: Int, epoch: Int, shuffle: Bool, seed: UInt64) -> [Int] {
        var indices = Array(0..<count)
        guard shuffle, count > 1 else { return indices }
        var generator = RandomGenerator(seed: seed &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(epoch))
        for i in stride(from: count - 1, to: 0, by: -1) {
            let j = Int(generator.next() % UInt64(i + 1))
            indices.swapAt(i, j)
        }
        return indices
    }

    /// The next `batchSize` sequences, running into the next epoch when this one ends.
    public mutating func next() -> [TokenSequence] {
        var batch: [TokenSequence] = []
        while batch.count < batchSize {
            if cursor.position >= order.count {
                cursor = DataCursor(epoch: cursor.epoch + 1, position: 0)
                order = Self.order(count: data.sequences.count, epoch: cursor.epoch, shuffle: shuffle, seed: seed)
            }
            batch.append(data.sequences[order[cursor.position]])
            cursor.position += 1
        }
        return batch
    }
}
