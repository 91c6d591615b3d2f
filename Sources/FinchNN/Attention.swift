import FinchTensor

/// Keys and values every query may attend to ahead of the real tokens (prefix tuning provides them).
public protocol AttentionPrefix: AnyObject {
    /// Number of virtual positions.
    var length: Int { get }
    /// For every layer, in order: keys and values [B, P, Hkv, D] for a batch of `batch`. A model asks once per
    /// forward pass, before its first layer.
    func keysAndValues(batch: Int) throws -> [(key: Tensor, value: Tensor)]
}

/// The keys and values one attention layer has seen, for generating one token at a time.
///
/// A single sequence (batch 1) grows into spare room, 256 positions at a time, and each step reads views of
/// the positions filled so far: a new token copies only its own keys and values. (Copying the whole cache
/// into a fresh buffer for every token would cost more than the products on small models: each new size is new
/// pages from the kernel.) A batch of several sequences is concatenated, as its rows are not contiguous.
public final class LayerCache {
    /// [B, capacity, Hkv, D] for batch 1 (the first `length` positions filled), else [B, length, Hkv, D].
    private var keys: Tensor?
    private var values: Tensor?
    public private(set) var length = 0

    /// Positions added to a single sequence's buffers when they are full.
    static let growth = 256

    public init() {}

    /// Appends new keys/values [B, T, Hkv, D]; returns everything seen so far.
    public func append(key k: Tensor, value v: Tensor) throws -> (Tensor, Tensor) {
        guard k.rank == 4, v.rank == 4, k.shape.prefix(2) == v.shape.prefix(2) else {
            throw TensorError.shapeMismatch(op: "key/value cache (keys vs values, need [B, T, H, D])", lhs: k.shape,
                                            rhs: v.shape)
        }
        if let keys, let values, keys.shape.dropFirst(2) != k.shape.dropFirst(2) || values.shape.dropFirst(2) != v.shape.dropFirst(2) || keys.shape[0] != k.shape[0] {
            throw TensorError.shapeMismatch(op: "key/value cache (cached vs new keys)",
                                            lhs: [keys.shape[0], length] + keys.shape.dropFirst(2), rhs: k.shape)
        }
        let (b, t) = (k.shape[0], k.shape[1])
        guard b == 1 else {
            let allK = try keys.map { try Tensor.concatenate([$0, k], axis: 1) } ?? k
            let allV = try values.map { try Tensor.concatenate([$0, v], axis: 1) } ?? v
            keys = allK.detached()
            values = allV.detached()
            length += t
            return (allK, allV)
        }
        let filled = length
        keys = grown(keys, toHold: filled + t, like: k)
        values = grown(values, toHold: filled + t, like: v)
        let kRow = k.shape[2] * k.shape[3], vRow = v.shape[2] * v.shape[3]
        (keys!.storage.pointer + filled * kRow).update(from: k.storage.pointer, count: k.count)
        (values!.storage.pointer + filled * vRow).update(from: v.storage.pointer, count: v.count)
        length = filled + t
        return (try keys!.leadingView([1, length] + Array(k.shape.dropFirst(2))),
                try values!.leadingView([1, length] + Array(v.shape.dropFirst(2))))
    }

    /// Keeps only the batch rows `rows` (in that order), so sequences that have finished stop costing work.
    public func keepRows(_ rows: [Int]) throws {
        guard let keys, let values else { return }
        guard keys.shape[0] > 1 || rows == [0] else {
            throw TensorError.invalidArgument(op: "key/value cache", message: "a single sequence's cache keeps its one row")
        }
        guard keys.shape[0] > 1 else { return }
        func kept(_ t: Tensor) throws -> Tensor {
            let rest = Array(t.shape.dropFirst())
            return try t.reshaped([t.shape[0], rest.reduce(1, *)])
                .gatherRows(rows.map(Int32.init), indexShape: [rows.count]).reshaped([rows.count] + rest)
        }
        self.keys = try kept(keys)
        self.values = try kept(values)
    }

    /// `buffer` when it has room for `positions`, else a larger one holding its filled positions.
    private func grown(_ buffer: Tensor?, toHold positions: Int, like new: Tensor) -> Tensor {
        if let buffer, buffer.shape[1] >= positions { return buffer }
        let capacity = max(1, (positions + Self.growth - 1) / Self.growth) * Self.growth
        let larger = Tensor.zeros([1, capacity] + Array(new.shape.dropFirst(2)))
        if let buffer { larger.storage.pointer.update(from: buffer.storage.pointer, count: length * new.shape[2] * new.shape[3]) }
        return larger
    }
}

/// A cache per layer.
public final class KVCache {
    public let layers: [LayerCache]
    public init(layerCount: Int) { layers = (0..<layerCount).map { _ in LayerCache() } }
    /// Real positions seen so far.
    public var length: Int { layers.first?.length ?? 0 }

    /// Keeps only the batch rows `rows` (in that order) in every layer.
    public func keepRows(_ rows: [Int]) throws { for layer in layers { try layer.keepRows(rows) } }
}

/// Head reshapes shared by the attention variants. Attention works sequence-major ([B, T, H, D]), so
/// both are views, not copies.
public enum Heads {
    /// [B, T, H·D] → [B, T, H, D]
    public static func split(_ x: Tensor, heads: Int) throws -> Tensor {
        let (b, t, c) = (x.shape[0], x.shape[1], x.shape[2])
        return try x.reshaped([b, t, heads, c / heads])
    }

    /// [B, T, H, D] → [B, T, H·D]
    public static func merge(_ x: Tensor) throws -> Tensor {
        let (b, t, h, d) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        return try x.reshaped([b, t, h * d])
    }
}

/// LLaMA-style self-attention: separate q/k/v/o projections, rotary positions, grouped-query heads,
/// an optional prefix and an optional cache.
public final class Attention: Module {
    @Child public var qProj: any LinearLayer
    @Child public var kProj: any LinearLayer
    @Child public var vProj: any LinearLayer
    @Child public var oProj: any LinearLayer
    public let headCount: Int
    public let keyValueHeadCount: Int
    public let headDimension: Int
    let rotary: RotaryTable?
    /// Keys a query sees, counting itself, when attention slides; nil when it sees every earlier key.
    let window: Int?

    /// `bias` for the q, k and v projections; `outputBias` (the same unless given) for o. With a `window`, a
    /// query sees only the last `window` keys up to itself (a sliding window, as Mistral's).
    public init(dimensions: Int, headCount: Int, keyValueHeadCount: Int, headDimension: Int, bias: Bool,
                outputBias: Bool? = nil, rotary: RotaryTable?, window: Int? = nil) {
        self.window = window
        qProj = Linear(inputDimensions: dimensions, outputDimensions: headCount * headDimension, bias: bias)
        kProj = Linear(inputDimensions: dimensions, outputDimensions: keyValueHeadCount * headDimension, bias: bias)
        vProj = Linear(inputDimensions: dimensions, outputDimensions: keyValueHeadCount * headDimension, bias: bias)
        oProj = Linear(inputDimensions: headCount * headDimension, outputDimensions: dimensions, bias: outputBias ?? bias)
        self.headCount = headCount
        self.keyValueHeadCount = keyValueHeadCount
        self.headDimension = headDimension
        self.rotary = rotary
    }

    /// x [B, T, C] → [B, T, C]. Row t has position `positionOffset + t`. With `recordStarts` (B·T values: the key
    /// index where each position's record starts, in a packed sequence or after a prompt's left padding, cached keys
    /// counted), a position attends only within its record and its rotary position counts from the record's start.
    public func callAsFunction(_ x: Tensor, positionOffset: Int, cache: LayerCache?,
                               prefix: (key: Tensor, value: Tensor)?, recordStarts: [Int32]? = nil) throws -> Tensor {
        let firstKeys = SlidingWindow.firstKeys(window, batch: x.shape[0], length: x.shape[1], cached: cache?.length ?? 0,
                                                recordStarts: recordStarts)
        var q = try Heads.split(qProj(x), heads: headCount)          // [B, T, Hq, D]
        var k = try Heads.split(kProj(x), heads: keyValueHeadCount)  // [B, T, Hkv, D]
        let v = try Heads.split(vProj(x), heads: keyValueHeadCount)
        if let rotary, let recordStarts {
            let t = x.shape[1]
            let positions = recordStarts.indices.map { Int32(positionOffset + $0 % t) - recordStarts[$0] }
            q = try q.rotaryEmbedding(rotary, positions: positions)
            k = try k.rotaryEmbedding(rotary, positions: positions)
        } else if let rotary {
            q = try q.rotaryEmbedding(rotary, offset: positionOffset, sequenceAxis: 1)
            k = try k.rotaryEmbedding(rotary, offset: positionOffset, sequenceAxis: 1)
        }
        let (keys, values) = try cache?.append(key: k, value: v) ?? (k, v)
        let out = try Tensor.scaledDotProductAttention(query: q, key: keys, value: values, prefix: prefix, causal: true,
                                                       firstKeys: firstKeys)
        return try oProj(Heads.merge(out))
    }
}

/// Sliding-window attention as a first visible key per query: query i (key index `cached + i`, cached keys counted)
/// sees keys from `cached + i − window + 1` on, and never before its record's start.
public enum SlidingWindow {
    /// The first key each of B·T queries may see (`Tensor.scaledDotProductAttention`'s `firstKeys`), or
    /// `recordStarts` unchanged when there is no window.
    public static func firstKeys(_ window: Int?, batch: Int, length: Int, cached: Int, recordStarts: [Int32]?) -> [Int32]? {
        guard let window else { return recordStarts }
        return (0..<(batch * length)).map { n in max(recordStarts?[n] ?? 0, Int32(max(0, cached + n % length - window + 1))) }
    }
}
