import Testing
import FinchFormats
import FinchNN
@testable import FinchTensor
@testable import FinchModels

/// The key/value cache grows into spare room for one sequence and hands out views; a batch concatenates.
@Suite("key/value cache")
struct KeyValueCacheTests {
    static func random(_ shape: [Int], seed: UInt64) -> Tensor {
        var generator = RandomGenerator(seed: seed)
        return Tensor.randomNormal(shape, standardDeviation: 1, generator: &generator)
    }

    /// Every append returns exactly the keys and values so far, past the buffer's first 256 positions too,
    /// and what an earlier append returned keeps its values after later ones (and after the buffer moves).
    @Test(arguments: [1, 2])
    func appendsReturnEverythingSoFarAndEarlierResultsStay(batch: Int) throws {
        let cache = LayerCache()
        var allKeys: [Tensor] = [], allValues: [Tensor] = [], returned: [(Tensor, [Float])] = []
        for (i, t) in ([5] + Array(repeating: 1, count: 260) + [40]).enumerated() {
            let k = Self.random([batch, t, 2, 4], seed: UInt64(2 * i)), v = Self.random([batch, t, 2, 3], seed: UInt64(2 * i + 1))
            allKeys.append(k)
            allValues.append(v)
            let (keys, values) = try cache.append(key: k, value: v)
            let expectedKeys = try Tensor.concatenate(allKeys, axis: 1), expectedValues = try Tensor.concatenate(allValues, axis: 1)
            #expect(keys.shape == expectedKeys.shape && keys.scalars == expectedKeys.scalars, "append \(i)")
            #expect(values.shape == expectedValues.shape && values.scalars == expectedValues.scalars, "append \(i)")
            if i % 50 == 0 { returned.append((keys, keys.scalars)) }
        }
        #expect(cache.length == 305)
        for (keys, scalars) in returned { #expect(keys.scalars == scalars) }
    }

    @Test func mismatchedShapesAreNamed() throws {
        let cache = LayerCache()
        #expect(throws: TensorError.shapeMismatch(op: "key/value cache (keys vs values, need [B, T, H, D])",
                                                  lhs: [1, 2, 2, 4], rhs: [1, 3, 2, 4])) {
            try cache.append(key: Tensor.zeros([1, 2, 2, 4]), value: Tensor.zeros([1, 3, 2, 4]))
        }
        _ = try cache.append(key: Tensor.zeros([1, 2, 2, 4]), value: Tensor.zeros([1, 2, 2, 4]))
        #expect(throws: TensorError.shapeMismatch(op: "key/value cache (cached vs new keys)", lhs: [1, 2, 2, 4],
                                                  rhs: [1, 1, 3, 4])) {
            try cache.append(key: Tensor.zeros([1, 1, 3, 4]), value: Tensor.zeros([1, 1, 3, 4]))
        }
        // No new positions: what is there, unchanged.
        let (keys, _) = try cache.append(key: Tensor.zeros([1, 0, 2, 4]), value: Tensor.zeros([1, 0, 2, 4]))
        #expect(keys.shape == [1, 2, 2, 4] && cache.length == 2)
    }

    /// A view's memory belongs to its base: nothing may write over it in place, however unique the view.
    @Test func aViewIsNeverWrittenOverInPlace() throws {
        let base = Self.random([8, 4], seed: 9)
        var view = try base.leadingView([2, 4])
        #expect(view.scalars == Array(base.scalars.prefix(8)))
        #expect(!TensorStorage.isExclusive(&view.storage))
        let fresh = view.reusedOrFresh(shape: [2, 4])
        #expect(fresh.storage.pointer != base.storage.pointer)
        #expect(throws: TensorError.self) { try base.leadingView([3, 4, 3]) }
    }

    /// Greedy generation past 256 positions (the buffer grows once) with the cache equals it without.
    @Test func generationPastTheFirstBufferMatchesTheUncachedPath() throws {
        let config = LlamaConfig(vocabularySize: 64, hiddenSize: 32, intermediateSize: 48, layerCount: 2, headCount: 4,
                                 keyValueHeadCount: 2, maxPositionEmbeddings: 320)
        let model = try LlamaForCausalLM(config)
        HuggingFaceFolder.initializeRandomly(model, seed: 5, standardDeviation: 0.3)
        var options = GenerationOptions(maxTokens: 260)
        let cached = try Generation.generate(model: model, prompt: [1, 2, 3], options: options)
        options.useCache = false
        let uncached = try Generation.generate(model: model, prompt: [1, 2, 3], options: options)
        #expect(cached.count == 260 && cached == uncached)
    }
}
