import FinchTensor

/// Keys and values every query may attend to ahead of the real tokens (prefix tuning provides them).
public protocol AttentionPrefix: AnyObject {
    /// Number of virtual positions.
    var length: Int { get }
    /// For one layer: keys and values [B, P, Hkv, D] for a batch of `batch`.
    func keysAndValues(layer: Int, batch: Int) throws -> (key: Tensor, value: Tensor)
}

/// The keys and values one attention layer has seen, for generating one token at a time.
public final class LayerCache {
    public private(set) var key: Tensor?
    public private(set) var value: Tensor?

    public init() {}

    /// Positions stored so far.
    public var length: Int { key?.shape[1] ?? 0 }

    /// Appends new keys/values [B, T, Hkv, D]; returns everything seen so far.
    public func append(key k: Tensor, value v: Tensor) throws -> (Tensor, Tensor) {
        let allK = try key.map { try Tensor.concatenate([$0, k], axis: 1) } ?? k
        let allV = try value.map { try Tensor.concatenate([$0, v], axis: 1) } ?? v
        key = allK.detached()
        value = allV.detached()
        return (allK, allV)
    }
}

/// A cache per layer.
public final class KVCache {
    public let layers: [LayerCache]
    public init(layerCount: Int) { layers = (0..<layerCount).map { _ in LayerCache() } }
    /// Real positions seen so far.
    public var length: Int { layers.first?.length ?? 0 }
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

    public init(dimensions: Int, headCount: Int, keyValueHeadCount: Int, headDimension: Int, bias: Bool, rotary: RotaryTable?) {
        qProj = Linear(inputDimensions: dimensions, outputDimensions: headCount * headDimension, bias: bias)
        kProj = Linear(inputDimensions: dimensions, outputDimensions: keyValueHeadCount * headDimension, bias: bias)
        vProj = Linear(inputDimensions: dimensions, outputDimensions: keyValueHeadCount * headDimension, bias: bias)
        oProj = Linear(inputDimensions: headCount * headDimension, outputDimensions: dimensions, bias: bias)
        self.headCount = headCount
        self.keyValueHeadCount = keyValueHeadCount
        self.headDimension = headDimension
        self.rotary = rotary
    }

    /// x [B, T, C] → [B, T, C]. Row t has position `positionOffset + t`. With `recordStarts` (B·T values: where
    /// each position's record starts in a packed sequence), a position attends only within its record; rotary
    /// positions need no reset for that, as attention scores depend on positions' differences alone.
    public func callAsFunction(_ x: Tensor, positionOffset: Int, cache: LayerCache?,
                               prefix: (key: Tensor, value: Tensor)?, recordStarts: [Int32]? = nil) throws -> Tensor {
        var q = try Heads.split(qProj(x), heads: headCount)          // [B, T, Hq, D]
        var k = try Heads.split(kProj(x), heads: keyValueHeadCount)  // [B, T, Hkv, D]
        let v = try Heads.split(vProj(x), heads: keyValueHeadCount)
        if let rotary {
            q = try q.rotaryEmbedding(rotary, offset: positionOffset, sequenceAxis: 1)
            k = try k.rotaryEmbedding(rotary, offset: positionOffset, sequenceAxis: 1)
        }
        let (keys, values) = try cache?.append(key: k, value: v) ?? (k, v)
        let out = try Tensor.scaledDotProductAttention(query: q, key: keys, value: values, prefix: prefix, causal: true,
                                                       firstKeys: recordStarts)
        return try oProj(Heads.merge(out))
    }
}
